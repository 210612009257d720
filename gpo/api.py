"""The Python API: load a trained run, choose which questions to ask a group, adapt to its
answers, predict the rest.

    model = gpo.load("runs/opinionqa")
    print(model.suggest_questions(5))            # what to ask a new group first
    group = model.adapt([("WORLDDANGER_W26", [0.2, 0.6, 0.2]), ...])
    pred = group.predict(["WORRYG_W26", ("Do you like tea?", ["Yes", "No"])])
    pred[0].interval(0.9)                        # calibrated 90% intervals per option

A question is a survey key of the training data, a `(text, options)` pair (embedded with the
run's embedder), or an `(options x E)` array of precomputed option embeddings
(`gpo.questions`).
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
from gpo.intervals import Bands, Calibration, group_factor, left_out, squared_score
from gpo.models import Head
from gpo.points import (
    EmbeddingStats,
    EpisodeBatch,
    References,
    gather_points,
    pack_points,
    padded_size,
)
from gpo.predictions import LabelledWeights, Prediction, Predictions
from gpo.question_selection import (
    CRITERIA,
    UNITS,
    QuestionSelector,
    Suggestion,
    Suggestions,
    default_criterion,
)
from gpo.questions import (
    QuestionCatalogue,
    ResolvedQuestion,
    check_distribution,
    check_respondents,
)
from gpo.run_dir import RunDir

_CONTEXT_MULTIPLE = 16   # context points are padded to multiples of this (few compiled shapes)
_QUESTION_MULTIPLE = 8   # and a call's option table to multiples of this many questions
# predict() runs its targets in chunks of at most this many options: time and memory grow
# linearly with the number of targets, and every full chunk reuses one compiled shape
PREDICT_CHUNK_POINTS = 4096


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
        embed = lambda questions: self.embedder.embed_questions(questions)  # noqa: E731
        if run is not None:
            self.catalogue = run.catalogue(stats, self.embedding_dim, embed)
        else:  # a bare head: questions by embeddings or (text, options) only
            self.catalogue = QuestionCatalogue({}, {}, {}, {}, References(
                (), np.zeros((0, 0, 1), np.float32), np.zeros((0, 0), bool),
                np.zeros((0, 0), np.float32)), stats, self.embedding_dim, embed)
        # the intervals' calibration on the run's validation groups (None: uncalibrated)
        self.calibration: Calibration | None = None if run is None else run.calibration()
        self._embedder: Embedder | None = None
        self._question_selector: QuestionSelector | None = None

    @property
    def question_keys(self) -> list[str]:
        """Keys of the training survey's questions, usable in adapt(), predict() and
        suggest_questions()."""
        return self.catalogue.keys

    def options(self, key: str) -> tuple[str, ...]:
        """The answer options of a training-survey question, in order."""
        return self.catalogue.options(key)

    def text(self, key: str) -> str:
        """The text of a training-survey question."""
        return self.catalogue.text(key)

    @property
    def embedding_dim(self) -> int:
        return self.head_config.embedding_dim

    @property
    def n_references(self) -> int:
        return len(self.catalogue.references.labels)

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
        counts = check_respondents(respondents, len(context))
        resolved = self.catalogue.resolve([q for q, _ in context], where="context")
        _refuse_repeats(resolved, [q for q, _ in context])
        distributions = [check_distribution(d, len(r.options), f"context item {i} ({r.name!r})")
                         for i, (r, (_, d)) in enumerate(zip(resolved, context))]
        table, batch = self._pack("context", resolved, distributions, counts, _CONTEXT_MULTIPLE)
        return AdaptedGroup(self, self._encode(self._state, table, batch),
                            [r.row for r in resolved],
                            None if counts is None else [float(c) for c in counts],
                            self._bands(resolved, distributions, counts))

    def _bands(self, resolved: list[ResolvedQuestion], distributions: list[np.ndarray],
               counts) -> Bands | None:
        """The group's interval rule (None: the run is uncalibrated): its k, respondents and
        factor, from its left-out context answers each predicted from the others."""
        if self.calibration is None:
            return None
        k = len({r.key if r.key is not None else r.name for r in resolved})
        bands = self.calibration.bands(k, None if counts is None else float(np.median(counts)))
        squared = []
        for i in left_out(len(resolved)):
            keep = [j for j in range(len(resolved)) if j != i]
            table, batch = self._pack("context", [resolved[j] for j in keep],
                                      [distributions[j] for j in keep],
                                      None if counts is None else np.asarray(counts)[keep],
                                      _CONTEXT_MULTIPLE)
            state = self._encode(self._state, table, batch)
            table, batch = self._pack("target", [resolved[i]])
            prob, std = jax.device_get(self._predict(self._state, state, table, batch))
            n = len(resolved[i].options)
            squared.append(squared_score(distributions[i], prob[0, :n],
                                         bands.scale(prob[0, :n], std[0, :n])))
        return dataclasses.replace(bands, factor=float(group_factor(sum(squared),
                                                                    len(squared))))

    @property
    def default_criterion(self) -> str:
        """The question-selection criterion `suggest_questions` uses unless told: with the
        reference head the expected error where the metric is W1, else (and for every other
        head) the design from the reference answers every run keeps."""
        return default_criterion(self.config.head, self.config.data.metric)

    def suggest_questions(self, n: int = 5, candidates: Sequence | None = None, *,
                          criterion: str | None = None, respondents: float | None = None
                          ) -> Suggestions:
        """The n questions to ask a new group first, best first, from the run's own data (no
        answers yet): see `gpo.question_selection`.

        candidates: survey keys to choose from (default: all the run's questions), or
        (text, options) questions new to the run, which no training group answered: their
        answers cannot inform the reference head, so they come last with gain 0.
        criterion: 'metric', 'posterior' or 'design' (default: `default_criterion`).
        respondents: how many people will answer each question, if known."""
        return self._suggest(n, candidates, [], None, criterion, respondents)

    def _suggest(self, n: int, candidates: Sequence | None, asked: list[int | None],
                 asked_counts: list[float] | None, criterion: str | None,
                 respondents: float | None) -> Suggestions:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive number of questions, got {n!r}")
        criterion = criterion or self.default_criterion
        # (an unknown criterion is the selector's to name, whatever the head)
        if criterion in CRITERIA and criterion != "design" and self.config.head != "reference":
            raise ValueError(f"criterion {criterion!r} reads the reference head's posterior; "
                             f"this run's head is {self.config.head!r}: use 'design'")
        if respondents is not None and not (np.isfinite(respondents) and respondents > 0):
            raise ValueError(f"respondents must be a positive number, got {respondents!r}")
        rows, counts = [], []  # the run questions answered so far, each once, in order
        for i, row in enumerate(asked):
            if row is not None and row not in rows:
                rows.append(row)
                counts.append(None if asked_counts is None else asked_counts[i])
        known, new = self.catalogue.candidates(candidates)
        known = [row for row in known if row not in rows]
        if not known and not new:
            raise ValueError("this group already answered every candidate question; give "
                             "other candidates (survey keys or (text, options) questions)")
        picks = self._selector().select(n, known, criterion, rows, counts, respondents)
        keys = self.question_keys
        out = [self._suggestion(keys[p.question], p.gain) for p in picks]
        chosen = {p.question for p in picks}
        for row in known:  # what no usable reference group answered: uninformative
            if len(out) < n and row not in chosen:
                out.append(self._suggestion(keys[row], 0.0, "no training group answered it"))
        for text, options in new:
            if len(out) < n:
                out.append(Suggestion(None, text, options, 0.0, "new to the run: no training "
                                      "group answered it, so its answer cannot inform the "
                                      "head"))
        return Suggestions(out, criterion, UNITS[criterion])

    def _suggestion(self, key: str, gain: float, note: str = "") -> Suggestion:
        return Suggestion(key, self.text(key), self.options(key), gain, note)

    def _selector(self) -> QuestionSelector:
        """The question selector over an option table of all the run's questions."""
        if self._question_selector is None:
            resolved = [self.catalogue.of_key(k) for k in self.question_keys]
            O = max(len(r.options) for r in resolved)
            table, option_mask = self.catalogue.table(resolved, len(resolved), O)
            head = self.module if self.config.head == "reference" else None
            self._question_selector = QuestionSelector(head, table, option_mask)
        return self._question_selector

    def _pack(self, part: str, resolved: list[ResolvedQuestion], distributions=None,
              counts=None, multiple: int | None = None):
        """One episode of points over an option table of just these questions, built and
        packed as training builds and packs them."""
        O = max([self.catalogue.references.probs_SxQxO.shape[-1]]
                + [len(r.options) for r in resolved])
        table, _ = self.catalogue.table(resolved, padded_size(len(resolved),
                                                              _QUESTION_MULTIPLE), O)
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


class AdaptedGroup:
    """A group's encoded context; predictions reuse it without recomputing context attention."""

    def __init__(self, model: GroupPreferenceModel, context_state,
                 asked: list[int | None] | None = None, respondents: list[float] | None = None,
                 bands: Bands | None = None):
        self.model = model
        self.context = context_state
        self.asked = asked or []          # the run's rows of the context questions (None: new)
        self.respondents = respondents    # their respondent counts, where given
        self.bands = bands                # its calibrated interval rule (None: uncalibrated)

    def suggest_questions(self, n: int = 5, candidates: Sequence | None = None, *,
                          criterion: str | None = None, respondents: float | None = None
                          ) -> Suggestions:
        """The next n questions to ask this group, given the questions it answered (see
        `GroupPreferenceModel.suggest_questions`; candidates default to the run's questions
        it has not answered)."""
        return self.model._suggest(n, candidates, self.asked, self.respondents, criterion,
                                   respondents)

    @property
    def features(self) -> dict[str, np.ndarray]:
        """The head's named, interpretable parts of this group's state (may be empty)."""
        described = self.model.module.describe_group(self.context)
        out = {name: np.asarray(value[0]) for name, value in described.items()}
        if "reference_weights" in out:  # labelled with the training groups they weigh
            out["reference_weights"] = LabelledWeights(
                out["reference_weights"], self.model.catalogue.references.labels)
        if "mixture_weights" in out:
            out["mixture_weights"] = LabelledWeights(
                out["mixture_weights"],
                [f"prototype {i + 1}" for i in range(len(out["mixture_weights"]))])
        return out

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
        option-embedding arrays), in order, with calibrated intervals where the run has a
        calibration (`Prediction.interval`, `Predictions.intervals`); an interpolated group
        has none (no held-out group was calibrated there)."""
        if not questions:
            return Predictions()
        m = self.model
        resolved = m.catalogue.resolve(list(questions), where="predict")
        out = Predictions()
        chunks = _chunks(resolved, PREDICT_CHUNK_POINTS)
        for chunk in chunks:  # (several chunks: each padded to one shape, compiled once)
            table, batch = m._pack("target", chunk,
                                   multiple=PREDICT_CHUNK_POINTS if len(chunks) > 1 else None)
            prob, std = jax.device_get(m._predict(m._state, self.context, table, batch))
            start = 0
            for r in chunk:
                end = start + len(r.options)
                out.append(Prediction(r.name, r.options, prob[0, start:end],
                                      std[0, start:end], r.key, r.ordinals, self.bands))
                start = end
        return out


def _refuse_repeats(resolved: list[ResolvedQuestion], given: list) -> None:
    """A question answered twice in one context would count as two independent answers (a
    repeat 100,000 times gives a near-certain prediction): refused, naming both items. Merge
    repeated answers first (their respondent-weighted mean, counts summed)."""
    seen = {}
    for i, (r, q) in enumerate(zip(resolved, given)):
        identity = (r.key if r.key is not None else
                    (r.name, r.options) if not isinstance(q, np.ndarray | jax.Array) else
                    np.asarray(q, np.float32).tobytes())
        if identity in seen:
            raise ValueError(f"context items {seen[identity]} and {i} are the same question "
                             f"({r.name[:60]!r}); give each question once (merge repeated "
                             "answers first: their respondent-weighted mean)")
        seen[identity] = i


def _chunks(resolved: list[ResolvedQuestion], max_points: int) -> list[list[ResolvedQuestion]]:
    """Whole questions in consecutive chunks of at most `max_points` options (a question with
    more is a chunk of its own)."""
    chunks, points = [[]], 0
    for r in resolved:
        if chunks[-1] and points + len(r.options) > max_points:
            chunks.append([])
            points = 0
        chunks[-1].append(r)
        points += len(r.options)
    return chunks


def load(run_dir: str | Path) -> GroupPreferenceModel:
    """A trained run: its config, best checkpoint, embedding statistics, the training survey's
    questions and reference answers. Needs no data folder."""
    run = RunDir(run_dir).require()
    head, meta = run.restore_head()
    return GroupPreferenceModel(run.config, head, run.stats(), run, meta.get("step"),
                                meta.get("validation"))


__all__ = ["AdaptedGroup", "GroupPreferenceModel", "Prediction", "Predictions", "Suggestion",
           "Suggestions", "load"]
