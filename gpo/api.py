"""The Python API: load a trained run, adapt to a group from a few answers, predict.

    model = gpo.load("runs/opinionqa")
    group = model.adapt([("SAFECRIME_W26", [0.3, 0.5, 0.15, 0.05]), ...])
    pred = group.predict(["WORRYB_W26", ("Do you like tea?", ["Yes", "No"])])

A question is a survey key of the training data, a `(text, options)` pair (embedded with the
run's embedder), or an `(options x E)` array of precomputed option embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from gpo.config import RunConfig
from gpo.embed import Embedder, make_embedder
from gpo.models import Head
from gpo.points import (
    EmbeddingStats,
    EpisodeBatch,
    References,
    build_option_table,
    gather_points,
    pack_points,
    padded_size,
)
from gpo.run_dir import RunDir

_CONTEXT_MULTIPLE = 16   # context points are padded to multiples of this (few compiled shapes)
_QUESTION_MULTIPLE = 8   # and a call's option table to multiples of this many questions


@dataclasses.dataclass(frozen=True)
class Prediction:
    question: str                # the question's text (or its key, or "question i")
    options: tuple[str, ...]
    probs: np.ndarray            # sums to 1 over options
    std: np.ndarray              # the model's predictive std per option
    key: str | None = None       # the survey key, when the question was given by key

    def as_dict(self) -> dict:
        return {"question": self.question, "key": self.key, "options": list(self.options),
                "probs": [round(float(p), 6) for p in self.probs],
                "std": [round(float(s), 6) for s in self.std]}

    def __str__(self) -> str:
        width = max(len(o) for o in self.options)
        lines = [self.question]
        lines += [f"  {o:<{width}}  {p:6.1%}" for o, p in zip(self.options, self.probs)]
        return "\n".join(lines)


class Predictions(list):
    """The predictions of one predict() call: a list of `Prediction`, printable, and
    convertible to one row per (question, option)."""

    def records(self) -> list[dict]:
        return [{"question": p.question, "key": p.key, "option": option,
                 "prob": round(float(prob), 6), "std": round(float(std), 6)}
                for p in self for option, prob, std in zip(p.options, p.probs, p.std)]

    def to_frame(self):
        """A pandas DataFrame of `records()` (pandas is optional: `pip install pandas`)."""
        try:
            import pandas
        except ImportError as err:
            raise ImportError("to_frame() needs pandas (pip install pandas); records() gives "
                              "the same rows as dicts") from err
        return pandas.DataFrame(self.records())

    def __str__(self) -> str:
        return "\n\n".join(str(p) for p in self)


@dataclasses.dataclass(frozen=True)
class _Resolved:
    """A question of an adapt() or predict() call, resolved against the run."""

    name: str                    # text, key or "question i"
    key: str | None
    options: tuple[str, ...]
    embeddings_NxE: np.ndarray   # raw (unstandardised) option embeddings
    ordinals: tuple[float, ...]  # the options' ordinal positions
    row: int | None              # the question's index in the run's references; None: new


class GroupPreferenceModel:
    """A trained head with its config, embedding statistics, reference answers and embedder."""

    def __init__(self, config: RunConfig, head: Head, stats: EmbeddingStats,
                 run: RunDir | None = None, checkpoint_step: int | None = None,
                 checkpoint_validation: float | None = None):
        self.config = config
        self.head_config = run.head_config if run is not None else head.config
        self.run = run
        self.run_dir = None if run is None else run.path
        self.checkpoint_step = checkpoint_step              # the step whose weights these are
        self.checkpoint_validation = checkpoint_validation  # its validation alignment, if any
        self.module = head         # the trained head (a Flax NNX module)
        self.stats = stats         # embedding standardisation fitted at training time
        self._graphdef, self._state = nnx.split(head)
        # Compiled once per model with the graph closed over: passing it as a static argument
        # would hash the whole module graph on every call (milliseconds per predict).
        graphdef = self._graphdef
        self._encode = jax.jit(lambda state, table, batch: nnx.merge(
            graphdef, state).encode_context(gather_points(table, batch, "context")))
        self._predict = jax.jit(lambda state, group, table, batch: nnx.merge(
            graphdef, state).predict(group, gather_points(table, batch, "target")))
        self._questions: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        self._texts: dict[str, str] = {}
        self._ordinals: dict[str, tuple[float, ...]] = {}
        self._row: dict[str, int] = {}
        self._references = References((), np.zeros((0, 0, 1), np.float32),
                                      np.zeros((0, 0), bool), np.zeros((0, 0), np.float32))
        if run is not None:
            self._questions = run.survey_questions()
            self._texts = run.question_texts()
            self._ordinals = run.question_ordinals()
            self._row = {key: q for q, key in enumerate(self._questions)}
            self._references = run.references()
        self._embedder: Embedder | None = None

    @property
    def question_keys(self) -> list[str]:
        """Keys of the training survey's questions, usable in adapt() and predict()."""
        return list(self._questions)

    def options(self, key: str) -> tuple[str, ...]:
        """The answer options of a training-survey question, in order."""
        if key not in self._questions:
            raise KeyError(f"unknown question key {key!r}")
        return self._questions[key][0]

    def text(self, key: str) -> str:
        """The text of a training-survey question."""
        if key not in self._questions:
            raise KeyError(f"unknown question key {key!r}")
        return self._texts.get(key, key)

    @property
    def embedding_dim(self) -> int:
        return self.head_config.embedding_dim

    @property
    def n_references(self) -> int:
        return len(self._references.labels)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embed)
        return self._embedder

    def adapt(self, context: Sequence, respondents: Sequence[float] | None = None
              ) -> AdaptedGroup:
        """Encode a group's context answers once: [(question, distribution), ...].

        respondents: optionally, how many people answered each context question (heads that
        weigh answers by their sampling noise use it; others ignore it)."""
        if not context:
            raise ValueError("adapt() needs at least one (question, distribution) pair")
        for i, item in enumerate(context):
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise ValueError(f"context item {i}: expected (question, distribution), got "
                                 f"{type(item).__name__}")
        counts = _check_respondents(respondents, len(context))
        resolved = self._resolve([q for q, _ in context], where="context")  # one embed call
        distributions = [_check_distribution(d, len(r.options), f"context item {i} ({r.name!r})")
                         for i, (r, (_, d)) in enumerate(zip(resolved, context))]
        table, batch = self._pack("context", resolved, distributions, counts, _CONTEXT_MULTIPLE)
        return AdaptedGroup(self, self._encode(self._state, table, batch))

    def _pack(self, part: str, resolved: list[_Resolved], distributions=None, counts=None,
              multiple: int | None = None):
        """One episode of points over an option table of just these questions, built and
        packed as training builds and packs them."""
        O = max([self._references.probs_SxQxO.shape[-1]] + [len(r.options) for r in resolved])
        table, _ = self._table_of(resolved, padded_size(len(resolved), _QUESTION_MULTIPLE), O)
        sizes = [len(r.options) for r in resolved]
        question = np.repeat(np.arange(len(resolved)), sizes)
        option = np.concatenate([np.arange(n) for n in sizes])
        n = sum(sizes)
        capacity = padded_size(n, multiple) if multiple else padded_size(n)
        probs = np.concatenate(distributions) if distributions else np.zeros(n)
        point_counts = np.repeat(counts, sizes) if counts is not None else np.zeros(n)
        points = pack_points(part, [question * O + option], [question], [probs],
                             [point_counts], capacity)
        empty = pack_points("unused", [np.zeros(0, int)], [np.zeros(0, int)], [np.zeros(0)],
                            [np.zeros(0)], 1)
        batch = EpisodeBatch(np.zeros(1, np.int32), np.ones((1, self.n_references), bool),
                             np.zeros(1, bool), context=points if part == "context" else empty,
                             target=points if part == "target" else empty)
        return table, batch

    def _table_of(self, resolved: list[_Resolved], n_questions: int, O: int):
        """(option table, option mask) of these questions, padded to `n_questions` of `O`
        options: built as training builds a survey's."""
        embeddings = np.zeros((n_questions, O, self.embedding_dim), np.float32)
        option_mask = np.zeros((n_questions, O), bool)
        ordinals = np.zeros((n_questions, O), np.float64)
        for q, r in enumerate(resolved):
            n = len(r.options)
            embeddings[q, :n], option_mask[q, :n] = r.embeddings_NxE, True
            ordinals[q] = max(r.ordinals)  # padding repeats the largest (zero-width gaps)
            ordinals[q, :n] = r.ordinals
        rows = [r.row for r in resolved] + [None] * (n_questions - len(resolved))
        table = build_option_table(embeddings, self.stats, option_mask, ordinals,
                                   self._references.take(rows, O))
        return table, option_mask

    def _resolve(self, questions: Sequence, where: str) -> list[_Resolved]:
        out, to_embed = [], []
        for i, q in enumerate(questions):
            label = f"{where} item {i}"
            if isinstance(q, str):
                if q not in self._questions:
                    raise ValueError(f"{label}: unknown question key {q!r}; give (text, "
                                     "options) or option embeddings for new questions")
                options, emb = self._questions[q]
                out.append(_Resolved(self._texts.get(q, q), q, options, emb, self._ordinals[q],
                                     self._row[q]))
            elif isinstance(q, np.ndarray | jax.Array):
                emb = np.asarray(q, np.float32)
                if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
                    raise ValueError(f"{label}: option embeddings have shape {emb.shape}, "
                                     f"expected (options, {self.embedding_dim})")
                if not np.isfinite(emb).all():
                    raise ValueError(f"{label}: option embeddings are not finite (option "
                                     f"{int(np.argwhere(~np.isfinite(emb))[0, 0])})")
                out.append(_new_question(f"question {i}", tuple(
                    f"option {j}" for j in range(len(emb))), emb))
            elif isinstance(q, tuple | list) and len(q) == 2 and isinstance(q[0], str):
                text, options = q[0], tuple(str(o) for o in q[1])
                if len(options) < 2:
                    raise ValueError(f"{label}: {text[:60]!r} needs at least 2 options")
                out.append(_new_question(text, options, np.zeros(0)))
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
                if not np.isfinite(v).all():
                    raise ValueError(f"{where} item {index}: the embedder gave non-finite "
                                     f"embeddings for {text[:60]!r}")
                out[index] = _new_question(text, options, v)
        return out


def _new_question(name: str, options: tuple[str, ...], embeddings: np.ndarray) -> _Resolved:
    """A question no reference group answered (new to the run); its options count as an
    evenly spaced scale, in the order given."""
    return _Resolved(name, None, options, embeddings,
                     tuple(float(i) for i in range(len(options))), None)


class AdaptedGroup:
    """A group's encoded context; predictions reuse it without recomputing context attention."""

    def __init__(self, model: GroupPreferenceModel, context_state):
        self.model = model
        self.context = context_state

    @property
    def features(self) -> dict[str, np.ndarray]:
        """The head's named, interpretable parts of this group's state (may be empty)."""
        described = self.model.module.describe_group(self.context)
        return {name: np.asarray(value[0]) for name, value in described.items()}

    @property
    def group_embedding(self) -> np.ndarray | None:
        """The group's embedding z `[M, D]` for heads that compute one (PPD), else None."""
        return self.features.get("group_embedding")

    @property
    def mixture_weights(self) -> np.ndarray | None:
        """The group's weights over the K prototypes for PAL, else None."""
        return self.features.get("mixture_weights")

    def interpolate(self, other: AdaptedGroup, t: float) -> AdaptedGroup:
        """A group between this one (t = 0) and `other` (t = 1) in the head's group space:
        PPD's embedding z, PAL's mixture weights. GPO keeps a set of context tokens, not a
        point in a group space, so it has no interpolation."""
        head = self.model.module
        if not head.has_group_space:
            raise ValueError(f"head {self.model.config.head!r} has no group space to "
                             "interpolate in (PPD and PAL do)")
        if other.model is not self.model:
            raise ValueError("both groups must be adapted by the same model")
        if not 0 <= t <= 1:
            raise ValueError(f"t must be in [0, 1], got {t}")
        return AdaptedGroup(self.model, head.interpolate_groups(self.context, other.context, t))

    def predict(self, questions: Sequence) -> Predictions:
        """Predicted distributions of the questions (survey keys, (text, options) pairs or
        option-embedding arrays), in order."""
        if not questions:
            return Predictions()
        m = self.model
        resolved = m._resolve(list(questions), where="predict")
        table, batch = m._pack("target", resolved)
        prob, std = jax.device_get(m._predict(m._state, self.context, table, batch))
        out, start = Predictions(), 0
        for r in resolved:
            end = start + len(r.options)
            out.append(Prediction(r.name, r.options, prob[0, start:end], std[0, start:end],
                                  r.key))
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


def _check_respondents(values, n_items: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, np.float64)
    if arr.shape != (n_items,):
        raise ValueError(f"respondents: {arr.size} counts for {n_items} context items")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"respondents must be finite and positive, got {arr.tolist()}")
    return arr


def load(run_dir: str | Path) -> GroupPreferenceModel:
    """A trained run: its config, best checkpoint, embedding statistics, the training survey's
    questions and reference answers. Needs no data folder."""
    run = RunDir(run_dir).require()
    head, meta = run.restore_head()
    return GroupPreferenceModel(run.config, head, run.stats(), run, meta.get("step"),
                                meta.get("validation"))


__all__ = ["AdaptedGroup", "GroupPreferenceModel", "Prediction", "Predictions", "load"]
