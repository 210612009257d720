"""The datasets a run config can name: each one's loader, the folder it reads under the data
root, and the alignment metric it is scored with. Importing this module loads no model code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpo.data.survey import Survey

DataConfig = Any  # a gpo.config.DataConfig (which imports this module: named, not imported)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    metric: str                  # 'wasserstein' (ordinal scales), 'js' or 'accuracy'
    folder: str | None           # its folder under the data root; None: generated data
    holds: str                   # what the folder holds, for messages
    load: Callable[[DataConfig, Path | None], Survey]


def _opinionqa(config: DataConfig, folder: Path | None) -> Survey:
    from gpo.data.opinionqa import load_opinionqa
    return load_opinionqa(folder).complete_questions()


def _opinionqa_gpo(config: DataConfig, folder: Path | None) -> Survey:
    from gpo.data.opinionqa import load_opinionqa_gpo
    return load_opinionqa_gpo(folder)


def _globalopinionqa(config: DataConfig, folder: Path | None) -> Survey:
    from gpo.data.globalopinionqa import load_globalopinionqa
    return load_globalopinionqa(folder).drop_sparse(config.min_group_answers)


def _persona(config: DataConfig, folder: Path | None) -> Survey:
    from gpo.data.persona import make_persona_preferences
    return make_persona_preferences(folder, seed=config.synthetic_seed,
                                    n_types=config.persona_types,
                                    n_users=config.synthetic_groups,
                                    n_pairs=config.synthetic_questions).survey


def _synthetic(config: DataConfig, folder: Path | None) -> Survey:
    from gpo.data.synthetic import make_synthetic_survey
    return make_synthetic_survey(seed=config.synthetic_seed, n_groups=config.synthetic_groups,
                                 n_questions=config.synthetic_questions).survey


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("opinionqa", "wasserstein", "opinionqa", "see data_cards/opinionqa.md",
            _opinionqa),
    Dataset("opinionqa-gpo", "wasserstein", "opinionqa",
            "GPO's protocol: its 17 groups present, the contentious questions they all answered "
            "(see data_cards/opinionqa.md)", _opinionqa_gpo),
    Dataset("globalopinionqa", "js", "globalopinionqa", "see data_cards/globalopinionqa.md",
            _globalopinionqa),
    Dataset("persona", "accuracy", "anthropic_persona",
            "the anthropic_persona folder or its parent", _persona),
    Dataset("synthetic", "wasserstein", None, "nothing: it is generated", _synthetic),
)}


def dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name]
