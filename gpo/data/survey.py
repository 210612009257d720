"""The core data type: choice questions answered by groups.

Shapes: G groups, Q questions, O the largest number of answer (non-refusal) options.
A survey is dense: `probs_GxQxO` holds each group's distribution over a question's answer
options (zeros in padding and where the group did not answer), `answered_GxQ` says which
entries exist. Pairwise or individual preferences are the same type: a 2-option question
and a group of size one with a one-hot (or soft) target.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


class SurveyDataError(ValueError):
    """Bad survey input. The message names the file, question key and group at fault."""


def read_text(path: str | Path) -> str:
    """A data file's text; not UTF-8: one error naming the file and the byte."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SurveyDataError(f"file {str(path)!r}: not UTF-8 text (byte {err.start}: "
                              f"{err.reason})") from None


def read_csv(path: str | Path) -> csv.DictReader:
    """A data file's CSV rows (read whole, so a bad byte is named before any row is used)."""
    return csv.DictReader(io.StringIO(read_text(path), newline=""))


def read_json(path: str | Path, kind: type = dict):
    """A data file's JSON: invalid JSON, a key repeated within an object (JSON readers
    would keep only the last silently) or another top-level type: one error naming it."""
    def no_repeats(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise SurveyDataError(f"file {str(path)!r}: key {key!r} appears twice in one "
                                      "object")
            out[key] = value
        return out

    try:
        data = json.loads(read_text(path), object_pairs_hook=no_repeats)
    except json.JSONDecodeError as err:
        raise SurveyDataError(f"file {str(path)!r}: not valid JSON ({err})") from None
    if not isinstance(data, kind):
        raise SurveyDataError(f"file {str(path)!r}: expected a JSON "
                              f"{'object' if kind is dict else kind.__name__}, got "
                              f"{type(data).__name__}")
    return data


def _where(source: str | None, question: str | None = None, group: str | None = None) -> str:
    parts = [f"{name} {value!r}" for name, value in
             (("file", source), ("question", question), ("group", group)) if value is not None]
    return ", ".join(parts) + ": " if parts else ""


@dataclasses.dataclass(frozen=True)
class Question:
    """A multiple-choice question.

    `options` lists every option in source order; `refusals[i]` marks options such as
    'Refused' or 'Not sure' that carry no opinion and are excluded from distributions.
    `ordinals` gives the ordinal position of each answer (non-refusal) option, in order;
    fractional positions are allowed (e.g. a neutral middle option at 1.5).
    """

    key: str
    text: str
    options: tuple[str, ...]
    refusals: tuple[bool, ...]
    ordinals: tuple[float, ...]

    def __post_init__(self):
        where = _where(None, self.key)
        if len(self.refusals) != len(self.options):
            raise SurveyDataError(f"{where}{len(self.options)} options but "
                                  f"{len(self.refusals)} refusal flags")
        if len(self.ordinals) != len(self.answer_options):
            raise SurveyDataError(f"{where}{len(self.answer_options)} answer options "
                                  f"{self.answer_options} but {len(self.ordinals)} ordinals")
        if len(self.answer_options) < 1:
            raise SurveyDataError(f"{where}no answer options left after removing refusals")
        if not all(np.isfinite(self.ordinals)):
            raise SurveyDataError(f"{where}non-finite ordinal in {self.ordinals}")

    @property
    def answer_options(self) -> tuple[str, ...]:
        return tuple(o for o, r in zip(self.options, self.refusals) if not r)


@dataclasses.dataclass(frozen=True)
class Group:
    """A group of respondents: `name` within a demographic `attribute` (e.g. 'Other' in RACE)."""

    name: str
    attribute: str = ""

    @property
    def label(self) -> str:
        return f"{self.attribute}={self.name}" if self.attribute else self.name


@dataclasses.dataclass(frozen=True, eq=False)
class Survey:
    """Groups' answer distributions over questions, as dense arrays with masks."""

    questions: tuple[Question, ...]
    groups: tuple[Group, ...]
    probs_GxQxO: np.ndarray
    answered_GxQ: np.ndarray
    respondents_GxQ: np.ndarray  # respondent counts (or total survey weight); NaN when unknown
    name: str = "survey"
    skipped: tuple[str, ...] = ()  # 'group/question' entries dropped at load (e.g. only refusals)

    def __post_init__(self):
        if not self.questions or not self.groups:
            raise SurveyDataError(f"{self.name}: empty dataset ({len(self.groups)} groups, "
                                  f"{len(self.questions)} questions)")
        _unique([q.key for q in self.questions], "question key", self.name)
        _unique([g.label for g in self.groups], "group", self.name)
        G, Q, O = len(self.groups), len(self.questions), self.max_options
        for field, shape in (("probs_GxQxO", (G, Q, O)), ("answered_GxQ", (G, Q)),
                             ("respondents_GxQ", (G, Q))):
            if getattr(self, field).shape != shape:
                raise SurveyDataError(f"{self.name}: {field} has shape "
                                      f"{getattr(self, field).shape}, expected {shape}")

    # -- derived views (computed once: metrics read them on every call; read-only) -------

    @functools.cached_property
    def max_options(self) -> int:
        return max(len(q.answer_options) for q in self.questions)

    @functools.cached_property
    def n_options_Q(self) -> np.ndarray:
        return _read_only(np.array([len(q.answer_options) for q in self.questions]))

    @functools.cached_property
    def option_mask_QxO(self) -> np.ndarray:
        return _read_only(np.arange(self.max_options)[None, :] < self.n_options_Q[:, None])

    @functools.cached_property
    def ordinals_QxO(self) -> np.ndarray:
        """Ordinal positions; padding repeats the question's largest ordinal (zero-width gaps)."""
        out = np.zeros((len(self.questions), self.max_options))
        for i, q in enumerate(self.questions):
            out[i, :] = max(q.ordinals)
            out[i, : len(q.ordinals)] = q.ordinals
        return _read_only(out)

    @property
    def question_keys(self) -> list[str]:
        return [q.key for q in self.questions]

    @property
    def group_labels(self) -> list[str]:
        return [g.label for g in self.groups]

    def __repr__(self) -> str:
        return (f"Survey({self.name!r}: {len(self.groups)} groups, {len(self.questions)} "
                f"questions, {int(self.answered_GxQ.sum())} answered pairs)")

    # -- selection ----------------------------------------------------------------------

    def select(self, groups: Sequence[int] | None = None,
               questions: Sequence[int] | None = None) -> Survey:
        """A survey restricted to the given group and question indices (order kept as given)."""
        g = np.arange(len(self.groups)) if groups is None else np.asarray(groups, int)
        q = np.arange(len(self.questions)) if questions is None else np.asarray(questions, int)
        qs = tuple(self.questions[i] for i in q)
        O = max(len(x.answer_options) for x in qs) if len(qs) else 0
        return Survey(questions=qs, groups=tuple(self.groups[i] for i in g),
                      probs_GxQxO=self.probs_GxQxO[np.ix_(g, q)][..., :O],
                      answered_GxQ=self.answered_GxQ[np.ix_(g, q)],
                      respondents_GxQ=self.respondents_GxQ[np.ix_(g, q)], name=self.name,
                      skipped=self.skipped)

    def complete_questions(self) -> Survey:
        """Only the questions every group answered (OpinionQA: 620 of 684 over 36 groups)."""
        return self.select(questions=np.flatnonzero(self.answered_GxQ.all(axis=0)))

    def drop_sparse(self, min_answers: int) -> Survey:
        """Only groups that answered at least `min_answers` questions, and questions still answered.

        For sparse data such as GlobalOpinionQA, where many countries answered one question.
        """
        groups = np.flatnonzero(self.answered_GxQ.sum(1) >= min_answers)
        if len(groups) == 0:
            raise SurveyDataError(f"{self.name}: no group answered {min_answers} questions")
        questions = np.flatnonzero(self.answered_GxQ[groups].any(0))
        return self.select(groups, questions)

    def group_index(self, label_or_name: str) -> int:
        """Index of a group by label ('RACE=Other') or by a name that is unique ('Male')."""
        labels = self.group_labels
        if label_or_name in labels:
            return labels.index(label_or_name)
        hits = [i for i, g in enumerate(self.groups) if g.name == label_or_name]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise KeyError(f"group name {label_or_name!r} is ambiguous; use one of "
                           f"{[labels[i] for i in hits]}")
        raise KeyError(f"{self.name}: unknown group {label_or_name!r}")

    def question_index(self, key: str) -> int:
        keys = self.question_keys
        if key not in keys:
            raise KeyError(f"{self.name}: unknown question key {key!r}")
        return keys.index(key)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _unique(items: Sequence[str], what: str, source: str) -> None:
    seen = set()
    for item in items:
        if item in seen:
            raise SurveyDataError(f"{source}: duplicate {what} {item!r}")
        seen.add(item)


def normalised(values: np.ndarray) -> np.ndarray:
    """Non-negative values with a positive sum, divided by it; scaled by their largest first,
    so values whose sum overflows (1e308 twice) still give the right distribution."""
    scaled = values / values.max()
    return scaled / scaled.sum()


def check_answer(values: Sequence[float], question: Question, group: str,
                 source: str | None) -> np.ndarray:
    """Validate one group's counts or probabilities over a question's answer options."""
    where = _where(source, question.key, group)
    arr = np.asarray(values, dtype=np.float64)
    n = len(question.answer_options)
    if arr.shape != (n,):
        raise SurveyDataError(f"{where}{arr.size} values for {n} answer options "
                              f"{question.answer_options}")
    if not np.all(np.isfinite(arr)):
        raise SurveyDataError(f"{where}non-finite value in {arr.tolist()}")
    if np.any(arr < 0):
        raise SurveyDataError(f"{where}negative value in {arr.tolist()}")
    if arr.sum() <= 0:
        raise SurveyDataError(f"{where}all-zero answers {arr.tolist()} (nothing to normalise)")
    return arr


class SurveyBuilder:
    """Collects questions and per-group answers, validating each, then builds a `Survey`.

    Answers are counts or unnormalised weights over the question's answer options (refusals
    already removed); they are renormalised to distributions.
    """

    def __init__(self, name: str):
        self.name = name
        self._questions: dict[str, Question] = {}
        self._groups: dict[str, Group] = {}
        self._answers: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
        self.skipped: list[str] = []

    def add_question(self, question: Question, source: str | None = None) -> None:
        old = self._questions.get(question.key)
        if old is not None and old != question:
            raise SurveyDataError(f"{_where(source, question.key)}conflicting definitions of "
                                  f"the question: {old.answer_options} vs "
                                  f"{question.answer_options}")
        self._questions[question.key] = question

    def has_question(self, key: str) -> bool:
        return key in self._questions

    def question(self, key: str, source: str | None = None, group: str | None = None) -> Question:
        if key not in self._questions:
            raise SurveyDataError(f"{_where(source, key, group)}unknown question key")
        return self._questions[key]

    def add_group(self, group: Group) -> None:
        """Fix a group's position in the survey (e.g. metadata order); unanswered groups are
        left out of the built survey."""
        self._groups.setdefault(group.label, group)

    def add_answer(self, group: Group, key: str, values: Sequence[float],
                   respondents: float | None = None, source: str | None = None) -> None:
        question = self.question(key, source, group.label)
        arr = check_answer(values, question, group.label, source)
        if (group.label, key) in self._answers:
            raise SurveyDataError(f"{_where(source, key, group.label)}duplicate answers for "
                                  "this group and question")
        self.add_group(group)
        total = np.nan if respondents is None else float(respondents)
        self._answers[(group.label, key)] = (normalised(arr), total)

    def build(self, questions: Sequence[str] | None = None) -> Survey:
        """The survey over answered questions (or the given keys, in that order)."""
        answered_keys = {k for _, k in self._answers}
        keys = [k for k in self._questions if k in answered_keys] if questions is None else list(
            questions)
        if not keys or not self._answers:
            raise SurveyDataError(f"{self.name}: empty dataset (no answered questions)")
        qs = tuple(self.question(k) for k in keys)
        answered_groups = {label for label, k in self._answers if k in set(keys)}
        groups = tuple(g for label, g in self._groups.items() if label in answered_groups)
        O = max(len(q.answer_options) for q in qs)
        probs = np.zeros((len(groups), len(qs), O), np.float32)
        answered = np.zeros((len(groups), len(qs)), bool)
        respondents = np.full((len(groups), len(qs)), np.nan, np.float32)
        q_index = {k: i for i, k in enumerate(keys)}
        g_index = {g.label: i for i, g in enumerate(groups)}
        for (label, key), (dist, total) in self._answers.items():
            if key not in q_index:
                continue
            gi, qi = g_index[label], q_index[key]
            probs[gi, qi, : dist.size] = dist
            answered[gi, qi] = True
            respondents[gi, qi] = total
        return Survey(qs, groups, probs, answered, respondents, name=self.name,
                      skipped=tuple(self.skipped))


def survey_from_distributions(
    name: str,
    questions: Sequence[Question],
    distributions: Mapping[Group, Mapping[str, Sequence[float]]],
) -> Survey:
    """Build a survey from {group: {question key: values over answer options}}."""
    builder = SurveyBuilder(name)
    for q in questions:
        builder.add_question(q)
    for group, answers in distributions.items():
        for key, values in answers.items():
            builder.add_answer(group, key, values)
    return builder.build([q.key for q in questions])
