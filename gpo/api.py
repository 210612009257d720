"""The Python API: load a trained run, adapt to a group from a few answers, predict.

    model = gpo.load("runs/opinionqa")
    group = model.adapt([("SAFECRIME_W26", [0.3, 0.5, 0.15, 0.05]), ...])
    pred = group.predict(["WORRYB_W26", ("Do you like tea?", ["Yes", "No"])])

A question is a survey key of the training data, a `(text, options)` pair (embedded with the
run's embedder), or an `(options x E)` array of precomputed option embeddings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from gpo.checkpoint import EMBEDDINGS_FILE, Checkpoints
from gpo.config import RunConfig
from gpo.data.episodes import padded_size
from gpo.embed import Embedder, make_embedder
from gpo.train import EmbeddingTable, build_model

_CONTEXT_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class Prediction:
    question: str                # key or text
    options: tuple[str, ...]
    probs: np.ndarray            # sums to 1 over options
    std: np.ndarray              # the model's predictive std per option

    def as_dict(self) -> dict:
        return {"question": self.question, "options": list(self.options),
                "probs": self.probs.tolist(), "std": self.std.tolist()}


@dataclasses.dataclass(frozen=True)
class _Resolved:
    name: str
    options: tuple[str, ...]
    embeddings_NxE: np.ndarray


class GroupPreferenceModel:
    """A trained head with its config, embedding statistics and embedder."""

    def __init__(self, config: RunConfig, model, table: EmbeddingTable, run_dir: Path,
                 survey_keys: dict[str, tuple[tuple[str, ...], np.ndarray]] | None = None,
                 checkpoint_step: int | None = None,
                 checkpoint_validation: float | None = None):
        self.config = config
        self.run_dir = run_dir
        self.checkpoint_step = checkpoint_step              # the step whose weights these are
        self.checkpoint_validation = checkpoint_validation  # its validation alignment, if any
        self.module = model        # the trained head (a Flax NNX module)
        self.table = table         # embedding standardisation fitted at training time
        self._graphdef, self._state = nnx.split(model)
        # Compiled once per model with the graph closed over: passing it as a static argument
        # would hash the whole module graph on every call (milliseconds per predict).
        graphdef = self._graphdef
        self._encode = jax.jit(lambda state, x, y, mask, question: nnx.merge(
            graphdef, state).encode_context(x, y, mask, question))
        self._predict = jax.jit(lambda state, context, x, question, mask: nnx.merge(
            graphdef, state).predict(context, x, question, mask))
        self._survey_keys = survey_keys or {}
        self._embedder: Embedder | None = None

    @property
    def question_keys(self) -> list[str]:
        """Keys of the training survey's questions, usable in adapt() and predict()."""
        return list(self._survey_keys)

    def options(self, key: str) -> tuple[str, ...]:
        """The answer options of a training-survey question, in order."""
        if key not in self._survey_keys:
            raise KeyError(f"unknown question key {key!r}")
        return self._survey_keys[key][0]

    @property
    def embedding_dim(self) -> int:
        return self.config.model.embedding_dim

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embed)
        return self._embedder

    def adapt(self, context: Sequence) -> AdaptedGroup:
        """Encode a group's context answers once: [(question, distribution), ...]."""
        if not context:
            raise ValueError("adapt() needs at least one (question, distribution) pair")
        for i, item in enumerate(context):
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise ValueError(f"context item {i}: expected (question, distribution), got "
                                 f"{type(item).__name__}")
        resolved = self._resolve([q for q, _ in context], where="context")  # one embed call
        distributions = [_check_distribution(d, len(r.options), f"context item {i} ({r.name!r})")
                         for i, (r, (_, d)) in enumerate(zip(resolved, context))]
        x_NxE = self.table.standardize(np.concatenate([r.embeddings_NxE for r in resolved]))
        y_N = np.concatenate(distributions).astype(np.float32)
        n = len(y_N)
        # Every target attends to every context slot, padding included: pad context finely.
        C = padded_size(n, _CONTEXT_MULTIPLE)
        x = np.zeros((1, C, self.embedding_dim), np.float32)
        y = np.zeros((1, C), np.float32)
        question = np.full((1, C), -1, np.int32)
        x[0, :n], y[0, :n] = x_NxE, y_N
        question[0, :n] = np.repeat(np.arange(len(resolved)), [len(r.options) for r in resolved])
        state = self._encode(self._state, x, y, question >= 0, question)
        return AdaptedGroup(self, state)

    def _resolve(self, questions: Sequence, where: str) -> list[_Resolved]:
        out, to_embed = [], []
        for i, q in enumerate(questions):
            label = f"{where} item {i}"
            if isinstance(q, str):
                if q not in self._survey_keys:
                    raise ValueError(f"{label}: unknown question key {q!r}; give (text, "
                                     "options) or option embeddings for new questions")
                options, emb = self._survey_keys[q]
                out.append(_Resolved(q, options, emb))
            elif isinstance(q, np.ndarray | jax.Array):
                emb = np.asarray(q, np.float32)
                if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
                    raise ValueError(f"{label}: option embeddings have shape {emb.shape}, "
                                     f"expected (options, {self.embedding_dim})")
                out.append(_Resolved(f"question {i}", tuple(f"option {j}" for j in range(
                    len(emb))), emb))
            elif isinstance(q, tuple | list) and len(q) == 2 and isinstance(q[0], str):
                text, options = q[0], tuple(str(o) for o in q[1])
                if len(options) < 2:
                    raise ValueError(f"{label}: {text[:60]!r} needs at least 2 options")
                out.append(_Resolved(text, options, np.zeros(0)))
                to_embed.append((len(out) - 1, text, options))
            else:
                raise ValueError(f"{label}: a question is a key, (text, options) or an "
                                 f"(options x {self.embedding_dim}) array, got {q!r:.80}")
        if to_embed:
            vectors = self.embedder.embed_questions([(t, o) for _, t, o in to_embed])
            for (index, text, options), v in zip(to_embed, vectors):
                if v.shape[1] != self.embedding_dim:
                    raise ValueError(f"embedder gives width {v.shape[1]}, the model expects "
                                     f"{self.embedding_dim}")
                out[index] = _Resolved(text, options, v)
        return out


class AdaptedGroup:
    """A group's encoded context; predictions reuse it without recomputing context attention."""

    def __init__(self, model: GroupPreferenceModel, context_state):
        self.model = model
        self.context = context_state

    @property
    def group_embedding(self) -> np.ndarray | None:
        """The group's embedding z `[M, D]` for heads that compute one (PPD), else None."""
        z = getattr(self.context, "z_BxMxD", None)
        return None if z is None else np.asarray(z[0])

    @property
    def mixture_weights(self) -> np.ndarray | None:
        """The group's weights over the K prototypes for PAL, else None."""
        w = getattr(self.context, "mixture_BxK", None)
        return None if w is None else np.asarray(w[0])

    def interpolate(self, other: AdaptedGroup, t: float) -> AdaptedGroup:
        """A group between this one (t = 0) and `other` (t = 1) in the head's group space:
        PPD's embedding z, PAL's mixture weights. GPO keeps a set of context tokens, not a
        point in a group space, so it has no interpolation."""
        head = self.model.module
        if not hasattr(head, "interpolate_groups"):
            raise ValueError(f"head {self.model.config.head!r} has no group space to "
                             "interpolate in (PPD and PAL do)")
        if other.model is not self.model:
            raise ValueError("both groups must be adapted by the same model")
        if not 0 <= t <= 1:
            raise ValueError(f"t must be in [0, 1], got {t}")
        return AdaptedGroup(self.model, head.interpolate_groups(self.context, other.context, t))

    def predict(self, questions: Sequence) -> list[Prediction]:
        if not questions:
            return []
        resolved = self.model._resolve(list(questions), where="predict")
        m = self.model
        x_NxE = m.table.standardize(np.concatenate([r.embeddings_NxE for r in resolved]))
        question_N = np.repeat(np.arange(len(resolved)), [len(r.options) for r in resolved])
        n = len(question_N)
        T = padded_size(n)
        x = np.zeros((1, T, m.embedding_dim), np.float32)
        q = np.full((1, T), -1, np.int32)
        x[0, :n], q[0, :n] = x_NxE, question_N
        prob, std = jax.device_get(m._predict(m._state, self.context, x, q, q >= 0))
        out, start = [], 0
        for r in resolved:
            end = start + len(r.options)
            out.append(Prediction(r.name, r.options, prob[0, start:end], std[0, start:end]))
            start = end
        return out


def _check_distribution(values, n_options: int, where: str) -> np.ndarray:
    arr = np.asarray(values, np.float64)
    if arr.shape != (n_options,):
        raise ValueError(f"{where}: {arr.size} probabilities for {n_options} options")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{where}: probabilities must be finite and non-negative, got "
                         f"{arr.tolist()}")
    if arr.sum() <= 0:
        raise ValueError(f"{where}: probabilities sum to 0; nothing to normalise")
    return arr / arr.sum()


def load(run_dir: str | Path) -> GroupPreferenceModel:
    """A trained run: config.json, the best checkpoint, the embedder spec."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir}: no config.json; is this a gpo run directory?")
    config = RunConfig.load(run_dir / "config.json")
    graphdef, abstract = build_model(config, seed=0)
    restored = Checkpoints(run_dir / "checkpoints").restore_model(abstract)
    if restored is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint under checkpoints/")
    state, meta = restored
    model = nnx.merge(graphdef, state)
    table = EmbeddingTable(np.zeros((0, config.model.embedding_dim), np.float32),
                           np.asarray(meta["embedding_mean"], np.float32),
                           np.asarray(meta["embedding_scale"], np.float32))
    survey_keys = {}
    if (run_dir / EMBEDDINGS_FILE).exists():
        saved = np.load(run_dir / EMBEDDINGS_FILE)
        options = json.loads(str(saved["options"]))
        for key, opts, emb in zip(saved["keys"], options, saved["embeddings"]):
            survey_keys[str(key)] = (tuple(opts), emb[: len(opts)])
    return GroupPreferenceModel(config, model, table, run_dir, survey_keys,
                                meta.get("step"), meta.get("validation"))


__all__ = ["AdaptedGroup", "GroupPreferenceModel", "Prediction", "load"]
