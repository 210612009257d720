"""Survey data: the core type, loaders, synthetic generators, the dataset registry and the
group splits."""

from __future__ import annotations

import os
from pathlib import Path

from gpo.data.globalopinionqa import load_globalopinionqa
from gpo.data.opinionqa import load_opinionqa
from gpo.data.survey import Group, Question, Survey, SurveyBuilder, SurveyDataError
from gpo.data.synthetic import SyntheticSurvey, make_synthetic_survey

DATA_DIR_ENV = "GPO_DATA_DIR"

__all__ = ["DATA_DIR_ENV", "Group", "Question", "Survey", "SurveyBuilder", "SurveyDataError",
           "SyntheticSurvey", "data_dir", "load_dataset", "load_globalopinionqa",
           "load_opinionqa", "make_synthetic_survey"]


def data_dir(flag: str | Path | None = None) -> Path | None:
    """The data folder: an explicit flag, else $GPO_DATA_DIR, else None."""
    value = flag if flag is not None else os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def load_dataset(path: str | Path, name: str | None = None) -> Survey:
    """Load 'opinionqa' or 'globalopinionqa' from `path` (the dataset folder or its parent).

    Without `name`, the layout decides: human_resp/ means OpinionQA, a .csv GlobalOpinionQA.
    """
    path = Path(path)
    if name is None:
        if any(path.glob("**/American_Trends_Panel_W*")):
            name = "opinionqa"
        elif path.suffix == ".csv" or any(path.glob("*.csv")) or any(
                path.glob("globalopinionqa/*.csv")):
            name = "globalopinionqa"
        else:
            raise FileNotFoundError(f"{path}: neither an OpinionQA nor a GlobalOpinionQA folder")
    if name == "opinionqa":
        return load_opinionqa(path)
    if name == "globalopinionqa":
        if path.is_dir() and (path / "globalopinionqa").is_dir():
            path = path / "globalopinionqa"
        return load_globalopinionqa(path)
    raise ValueError(f"unknown dataset {name!r}; use 'opinionqa' or 'globalopinionqa'")
