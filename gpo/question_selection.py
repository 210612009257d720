"""Which questions to ask a group: greedy designs over the reference head's posterior.

The reference head (`gpo.models.reference`) is a Bayesian linear model of a group over the
reference groups' deviations from their mean: after some answers, its posterior covariance
says how uncertain the group's coefficients still are, and so how uncertain the prediction
of every other question is. A question is worth asking by how much its answer shrinks that
uncertainty where it matters. Each criterion is greedy, one question at a time, the best
given the questions before it (rank-one-sized updates of an S x S posterior: cheap):

- `design`: the affine group regression's V-optimal design from the training groups'
  answers alone (the untrained head: a fixed ridge, every reference group equally reliable,
  no respondent counts). It needs no trained head: GPO, PAL and PPD runs use it too, from
  the reference answers every run keeps.
- `posterior`: the least total predictive variance of the target options under the trained
  head's own posterior (its learned ridge power law, respondent noise and reference
  reliabilities).
- `metric`: the expected alignment error itself. W1 integrates |CDF error| over each
  question's ordinal scale, so the criterion sums gap x E|cumulative error| over the target
  questions, E|e| = sqrt(2/pi) sigma under the posterior.

In a linear-Gaussian model the posterior covariance depends on which questions were answered
and by how many people, never on the answers' values: the next best questions after five
answers are the same whatever the answers said, and a selection reads no answer at all.
The reliabilities are computed once over the target questions and held fixed, so that the
gains of successive questions add up.

Shapes: B candidates, Q questions, O options, S reference groups, J target options.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gpo.models.reference import ReferenceConfig, ReferenceRegression
from gpo.points import EpisodeBatch, OptionTable, gather_points, pack_points, padded_size
from gpo.predictions import RecordList

CRITERIA = ("design", "posterior", "metric")
# The affine regression's ridge penalty of the `design` criterion (on weights summing to 1:
# the head's ridge times the number of reference groups).
DESIGN_PENALTY = 1e-2
_CANDIDATES_AT_ONCE = 128  # candidates a compiled call scores (a fixed shape)
_POINT_MULTIPLE = 16
UNITS = {"design": "variance", "posterior": "variance", "metric": "alignment"}


def default_criterion(head: str, metric: str) -> str:
    """What to rank by unless told: with the reference head the expected error itself where
    the metric is W1 (`metric`, the best criterion on OpinionQA's validation groups), else
    the design (the best on GlobalOpinionQA's and the persona pairs' validation groups, both
    scored by other metrics; docs/results.md); heads without a posterior have only the design."""
    return "metric" if head == "reference" and metric == "wasserstein" else "design"


@dataclasses.dataclass(frozen=True)
class Pick:
    question: int          # index into the table's questions
    gain: float            # how much the criterion improved by asking it (see `UNITS`)


def design_head(embedding_dim: int, n_references: int) -> ReferenceRegression:
    """The untrained reference head of the `design` criterion: the affine group regression
    with ridge penalty DESIGN_PENALTY, equal reliabilities, no respondent noise."""
    return ReferenceRegression(ReferenceConfig(
        embedding_dim=embedding_dim, ridge=DESIGN_PENALTY / max(n_references, 1),
        ridge_slope=0.0, sampling_noise=1e-9, reliability=1e-9), rngs=nnx.Rngs(0))


class QuestionSelector:
    """Greedy question selection for groups of one run, over its option table.

    head: the trained reference head (criteria `posterior` and `metric`), or None where the
    run's head has no posterior (only `design` then). table: the option table of the
    questions (device or host arrays; its reference columns are the run's reference groups).
    option_mask_QxO: the questions' real options. usable_S: the reference columns a
    selection may read (default: all; while validating, the non-validation training
    groups)."""

    def __init__(self, head: ReferenceRegression | None, table: OptionTable,
                 option_mask_QxO: np.ndarray, usable_S: np.ndarray | None = None):
        self.option_mask_QxO = np.asarray(option_mask_QxO, bool)
        self.table = jax.device_put(table)
        S = table.reference_RxS.shape[1]
        self.usable_S = np.ones(S, bool) if usable_S is None else np.asarray(usable_S, bool)
        embedding_dim = table.x_RxE.shape[1]
        self.heads = {"design": design_head(embedding_dim, int(self.usable_S.sum()))}
        if head is not None:
            self.heads["posterior"] = self.heads["metric"] = head
        self._prepared: dict[tuple[str, bytes], _Prepared] = {}

    @property
    def criteria(self) -> tuple[str, ...]:
        return tuple(c for c in CRITERIA if c in self.heads)

    def informative(self, questions: Sequence[int]) -> np.ndarray:
        """Whether any usable reference group answered each question (only those can tell
        the head anything about a group)."""
        known = np.asarray(self.table.reference_known_RxS)[:, self.usable_S]
        O = self.option_mask_QxO.shape[1]
        return np.array([known[q * O:(q + 1) * O].any() for q in questions], bool)

    def select(self, n: int, candidates: Sequence[int], criterion: str,
               asked: Sequence[int] = (), asked_respondents: Sequence[float] | None = None,
               respondents: float | None = None, targets: Sequence[int] | None = None
               ) -> list[Pick]:
        """The n best of `candidates` to ask next, in order, after `asked` (answered by
        `asked_respondents` people each, where known); `respondents`: how many people are
        expected to answer the new ones (None: unknown, no sampling noise); `targets`: the
        questions whose predictions count (default: all). Candidates no usable reference
        group answered are never picked (they cannot inform the head); ties go to the
        earlier candidate."""
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if criterion not in self.heads:
            raise ValueError(f"criterion {criterion!r} reads the reference head's posterior, "
                             "which this run's head does not have; use criterion='design'")
        targets = (np.arange(len(self.option_mask_QxO)) if targets is None
                   else np.asarray(targets, int))
        prepared = self._prepare(criterion, targets)
        chosen = [int(q) for q in asked]
        counts = ([0.0] * len(chosen) if asked_respondents is None
                  else [float(c or 0.0) for c in asked_respondents])
        count = float(respondents or 0.0)
        remaining = [int(q) for q in candidates if int(q) not in set(chosen)]
        remaining = [q for q, ok in zip(remaining, self.informative(remaining)) if ok]
        S = len(self.usable_S)
        current = (prepared.posteriors(self, [chosen], [counts])[0][0] if chosen
                   else np.eye(S, dtype=np.float32))
        picks = []
        for _ in range(min(n, len(remaining))):
            covariance_BxSxS, ridge = prepared.posteriors(
                self, [chosen + [c] for c in remaining], [counts + [count]] * len(remaining))
            values = prepared.values(covariance_BxSxS, ridge)
            before = prepared.values(current[None], ridge)[0]
            best = int(np.argmin(values))  # the first of equal values: the earlier candidate
            picks.append(Pick(remaining[best], prepared.gain(before - float(values[best]))))
            current = covariance_BxSxS[best]
            chosen.append(remaining.pop(best))
            counts.append(count)
        return picks

    def _prepare(self, criterion: str, targets: np.ndarray) -> _Prepared:
        key = (criterion, targets.tobytes())
        if key not in self._prepared:
            if len(self._prepared) >= 8:  # per-group targets (sparse surveys): keep a few
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[key] = _Prepared(self, self.heads[criterion], criterion, targets)
        return self._prepared[key]

    def _batch(self, contexts: list[list[int]], counts: list[list[float]]) -> EpisodeBatch:
        """Episodes whose context points are every option of these questions."""
        O = self.option_mask_QxO.shape[1]
        rows, questions, zero, n = [], [], [], []
        for qs, cs in zip(contexts, counts):
            qs = np.asarray(qs, int)
            options = [np.flatnonzero(self.option_mask_QxO[q]) for q in qs]
            q_N = np.repeat(qs, [len(o) for o in options])
            rows.append(q_N * O + (np.concatenate(options) if options else np.zeros(0, int)))
            questions.append(q_N)
            zero.append(np.zeros(len(q_N)))
            n.append(np.repeat(np.asarray(cs, float), [len(o) for o in options]))
        capacity = padded_size(max(len(r) for r in rows), _POINT_MULTIPLE)
        slots = pack_points("context", rows, questions, zero, n, capacity)
        B, S = len(rows), len(self.usable_S)
        return EpisodeBatch(np.zeros(B, np.int32), np.broadcast_to(self.usable_S, (B, S)),
                            np.zeros(B, bool), context=slots, target=slots)


class _Prepared:
    """One criterion's fixed parts for one set of targets: the head's reliability scale over
    them, their scaled deviations and, for `metric`, the cumulative sums of those along each
    question's scale."""

    def __init__(self, selector: QuestionSelector, head: ReferenceRegression, criterion: str,
                 targets: np.ndarray):
        self.criterion = criterion
        graphdef, state = nnx.split(head)
        O = selector.option_mask_QxO.shape[1]
        rows = (targets[:, None] * O + np.arange(O)[None]).reshape(-1)
        mask = selector.option_mask_QxO[targets].reshape(-1)
        n_points = int(mask.sum())
        slots = pack_points("target", [rows[mask]], [np.repeat(targets, O)[mask]],
                            [np.zeros(n_points)], [np.zeros(n_points)],
                            padded_size(n_points, 256))  # few compiled shapes
        batch = EpisodeBatch(np.zeros(1, np.int32), selector.usable_S[None], np.zeros(1, bool),
                             context=slots, target=slots)

        self.graphdef, self.state, self.table = graphdef, state, selector.table
        scale_S, features_JxS, ordinal_J, gap_J = (np.asarray(a) for a in _fixed_parts(
            graphdef, state, selector.table, batch))
        features_JxS, ordinal_J, gap_J = (a[:n_points] for a in (features_JxS, ordinal_J,
                                                                   gap_J))
        self.scale_S = scale_S
        question_J = np.repeat(targets, O)[mask]
        # `metric`: per target option, the cumulative deviation features up to it along its
        # scale (as the W1 loss integrates), weighted by its gap to the next position.
        same = question_J[:, None] == question_J[None, :]
        at_or_below = same & (ordinal_J[None, :] <= ordinal_J[:, None])
        self.cumulative_JxS = (at_or_below.astype(np.float64) @ features_JxS).astype(np.float32)
        self.count_J = at_or_below.sum(1).astype(np.float32)
        self.gap_J = gap_J.astype(np.float32)
        scored = np.zeros(len(selector.option_mask_QxO), bool)
        scored[question_J[gap_J > 0]] = True
        self.n_scored = max(int(scored.sum()), 1)
        self.moment_SxS = (features_JxS.T.astype(np.float64) @ features_JxS).astype(np.float32)
        self.n_options = max(len(features_JxS), 1)
        self.std_scale = float(head.std_scale())

        # padded to a multiple of 256 target options (zero features and gaps: inert), so
        # that every group's targets share a few compiled shapes
        pad = padded_size(len(gap_J), 256) - len(gap_J)
        self._targets = (np.pad(self.cumulative_JxS, ((0, pad), (0, 0))),
                         np.pad(self.count_J, (0, pad)), np.pad(self.gap_J, (0, pad)),
                         self.moment_SxS)

    def posteriors(self, selector: QuestionSelector, contexts: list[list[int]],
                   counts: list[list[float]]) -> tuple[np.ndarray, float]:
        """(posterior covariance of each context `[B, S, S]`, one target noise for all): the
        head's ridge at the median context's size. A context's own option count moves the
        head's ridge, which says nothing about what its answers tell, so every candidate of
        a step is scored with the same target noise."""
        covariances, ridges = [], []
        for start in range(0, len(contexts), _CANDIDATES_AT_ONCE):
            chunk = contexts[start:start + _CANDIDATES_AT_ONCE]
            pad = _CANDIDATES_AT_ONCE - len(chunk) if len(contexts) > 1 else 0
            batch = selector._batch(chunk + [chunk[-1]] * pad,  # a fixed shape a call
                                    counts[start:start + len(chunk)] + [counts[-1]] * pad)
            covariance, ridge = jax.device_get(_posteriors(self.graphdef, self.state,
                                                           self.table, batch, self.scale_S))
            covariances.append(covariance[:len(chunk)])
            ridges.append(ridge[:len(chunk)])
        return np.concatenate(covariances), float(np.median(np.concatenate(ridges)))

    def values(self, covariance_BxSxS: np.ndarray, ridge: float) -> np.ndarray:
        return np.asarray(_criterion_values(self.criterion, covariance_BxSxS,
                                            np.float32(ridge), *self._targets))

    def gain(self, improvement: float) -> float:
        """The criterion's improvement in its unit: expected alignment for `metric` (mean
        over the scored target questions), mean predictive variance per target option for
        the others."""
        if self.criterion == "metric":
            return math.sqrt(2 / math.pi) * self.std_scale * improvement / self.n_scored
        return improvement / self.n_options


# Module-level jitted pieces (the head's graph a static argument): every selection of a
# process, every group's included, shares their compiled code.

@functools.partial(jax.jit, static_argnums=0)
def _fixed_parts(graphdef, state, table, batch):
    """(reliability scale `[S]`, scaled deviations, ordinal positions and gaps) of the
    batch's one episode of target points."""
    module = nnx.merge(graphdef, state)
    points = gather_points(table, batch, "context")
    scale = module.reference_scale(points)
    _, features, _ = module.features(points, scale)
    return scale[0], features[0], points.ordinal_BxN[0], points.gap_BxN[0]


@functools.partial(jax.jit, static_argnums=0)
def _posteriors(graphdef, state, table, batch, scale_S):
    """(posterior covariance `[B, S, S]`, ridge `[B]`) of each episode's context points at
    the fixed reliabilities."""
    module = nnx.merge(graphdef, state)
    points = gather_points(table, batch, "context")
    fit = module.posterior(points, jnp.broadcast_to(scale_S, points.mask_BxN.shape[:1]
                                                    + scale_S.shape))
    return fit.covariance_BxSxS, fit.ridge_B


@functools.partial(jax.jit, static_argnums=0)
def _criterion_values(criterion, covariance_BxSxS, ridge, cumulative_JxS, count_J, gap_J,
                      moment_SxS):
    """Each posterior's criterion value: total predictive variance of the target options
    (`design`, `posterior`), or sum of gap x E|cumulative error| over them (`metric`)."""
    if criterion == "metric":
        quadratic_BxJ = jnp.einsum("js,bst,jt->bj", cumulative_JxS, covariance_BxSxS,
                                   cumulative_JxS)
        return (jnp.sqrt(jnp.maximum(quadratic_BxJ, 0.0) + count_J[None] * ridge)
                * gap_J[None]).sum(-1)
    return jnp.einsum("bst,st->b", covariance_BxSxS, moment_SxS)


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """A question to ask, with the expected gain it was ranked by."""

    key: str | None              # the survey key (None: a question new to the run)
    question: str                # its text
    options: tuple[str, ...]
    expected_gain: float         # in the criterion's unit (`Suggestions.unit`)
    note: str = ""               # why a question ranks where it does, where not by its gain

    def as_dict(self) -> dict:
        return {"key": self.key, "question": self.question, "options": list(self.options),
                "expected_gain": round(float(self.expected_gain), 8), "note": self.note}


class Suggestions(RecordList):
    """The questions of one suggest_questions() call, best first: a list of `Suggestion`,
    printable, and convertible to one row per question."""

    def __init__(self, items=(), criterion: str = "", unit: str = ""):
        super().__init__(items)
        self.criterion = criterion
        self.unit = unit

    @property
    def keys(self) -> list[str | None]:
        return [s.key for s in self]

    def records(self) -> list[dict]:
        return [{"rank": i + 1, "criterion": self.criterion, "unit": self.unit,
                 **s.as_dict()} for i, s in enumerate(self)]

    @property
    def heading(self) -> str:
        what = {"alignment": "expected gain in alignment on the other questions",
                "variance": "expected drop in predictive variance per option"}.get(
            self.unit, self.unit)
        return f"Questions to ask, best first (criterion {self.criterion!r}; {what})"

    def _gain(self, s: Suggestion) -> str:
        return f"{s.expected_gain:+.4f}" if self.unit == "alignment" else \
            f"{s.expected_gain:.2e}"

    def __str__(self) -> str:
        lines = [f"{self.heading}:"]
        width = max((len(s.key or "(new)") for s in self), default=0)
        for i, s in enumerate(self):
            options = " / ".join(s.options)
            lines.append(f"{i + 1:3d}. {s.key or '(new)':<{width}}  {self._gain(s)}  "
                         f"{s.question} [{options}]" + (f"  ({s.note})" if s.note else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """A notebook's (and the demo report's) view: a table, a row per question."""
        notes = any(s.note for s in self)  # a note column only where a question has one
        header = ["rank", "key", "gain", "question", "options"] + ["note"] * notes
        left = "<td style='text-align:left'>"
        rows = "".join(
            f"<tr><td>{i + 1}</td>{left}{html.escape(s.key or '(new)')}</td>"
            f"<td>{self._gain(s)}</td>{left}{html.escape(s.question)}</td>"
            f"{left}{html.escape(' / '.join(s.options))}</td>"
            + (f"{left}{html.escape(s.note)}</td>" if notes else "") + "</tr>"
            for i, s in enumerate(self))
        numeric = {"rank", "gain"}  # right-aligned, as the report's numbers; text reads left
        return (f"<table><caption>{html.escape(self.heading)}</caption><tr>"
                + "".join(f"<th>{h}</th>" if h in numeric else
                          f"<th style='text-align:left'>{h}</th>" for h in header)
                + f"</tr>{rows}</table>")
