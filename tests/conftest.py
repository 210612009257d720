"""Shared fixtures. Tests on the real datasets read their folder from $GPO_DATA_DIR (or the
../shared/data beside a checkout) and skip, saying why, when it is absent; .ci/run sets it.

One tiny trained run per head is made once a session (`trained_run`) and shared by the API,
CLI, head and head-protocol tests; a test that damages a run copies it first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before JAX is imported: the workers and the subprocesses tests start compile the same
# programs (the shared runs' steps, the paper's config), so they share XLA's persistent
# compilation cache; it saves about a fifth of the suite's time, cold.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(tempfile.gettempdir()) / f"gpo-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# What `gpo train` and `gpo eval --llm-baselines` cache goes to a folder of the test session's,
# never to the user's ~/.cache/gpo.
os.environ["GPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpo-tests-cache-")

import pytest  # noqa: E402

from tests.helpers import tiny_config, tiny_embeddings, tiny_survey  # noqa: E402

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Steps of each head's shared run: enough to move off its initial weights and keep a best
# checkpoint by validation, few enough to cost seconds.
RUN_STEPS = {"gpo": 20, "reference": 20, "ppd": 10, "pal": 20}


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


@pytest.fixture(scope="session")
def tiny():
    """(survey, embeddings) of the tiny synthetic survey."""
    return tiny_survey(), tiny_embeddings()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """trained_run(head) -> (run folder, TrainResult) of the head's tiny run, trained once a
    session. Treat the folder as read-only; copy it (`copied_run`) to damage it."""
    from gpo.training import train
    runs = {}

    def get(head: str = "gpo"):
        if head not in runs:
            run_dir = tmp_path_factory.mktemp(f"run_{head}") / "run"
            result = train(tiny_config(RUN_STEPS[head], head=head), tiny_survey(),
                           tiny_embeddings(), run_dir, progress=False)
            runs[head] = (run_dir, result)
        return runs[head]
    return get


@pytest.fixture
def copied_run(trained_run, tmp_path):
    """copied_run(head) -> a private copy of the head's shared run folder."""
    def copy(head: str = "gpo") -> Path:
        target = tmp_path / f"copy_{head}"
        shutil.copytree(trained_run(head)[0], target)
        return target
    return copy


# The slowest modules first: xdist hands tests out in collection order, and a long test
# handed out last keeps one worker busy while the other idles.
SLOW_MODULES_FIRST = ("test_experiments.py", "test_train.py", "test_embed.py",
                      "test_packing.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order
