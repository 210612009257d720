"""Shared fixtures. Tests on the real datasets read their folder from $GPO_DATA_DIR (or the
../shared/data beside a checkout) and skip, saying why, when it is absent; .ci/run sets it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_root() -> Path | None:
    value = os.environ.get("GPO_DATA_DIR")
    if value:
        return Path(value)
    return _DEFAULT if _DEFAULT.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None or not root.is_dir():
        pytest.skip("real survey data not found: set GPO_DATA_DIR to the folder holding "
                    "opinionqa/ and globalopinionqa/ (CI sets it to ../shared/data)")
    return root


@pytest.fixture(scope="session")
def opinionqa(data_root):
    from gpo.data import load_opinionqa
    return load_opinionqa(data_root / "opinionqa")


@pytest.fixture(scope="session")
def globalopinionqa(data_root):
    from gpo.data import load_globalopinionqa
    return load_globalopinionqa(data_root / "globalopinionqa")
