"""The questions a run knows, and the questions a user names, resolved against them.

A user names a question by a survey key of the run, a `(text, options)` pair (embedded with
the run's embedder), or an `(options x E)` array of option embeddings. `QuestionCatalogue`
holds the run's questions (texts, options, their ordinal positions and embeddings) and its
reference groups' answers, resolves what a user names, and builds the option table of any
list of questions the way training builds a survey's.

Shapes: Q questions, O options, E embedding width, S reference groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from gpo.data.survey import normalised
from gpo.points import EmbeddingStats, OptionTable, References, build_option_table


@dataclasses.dataclass(frozen=True)
class ResolvedQuestion:
    """A question of an API call, resolved against the run."""

    name: str                    # text, key or "question i"
    key: str | None
    options: tuple[str, ...]
    embeddings_NxE: np.ndarray   # raw (unstandardised) option embeddings
    ordinals: tuple[float, ...]  # the options' ordinal positions
    row: int | None              # the question's index among the run's; None: new to it


def new_question(name: str, options: tuple[str, ...], embeddings: np.ndarray
                 ) -> ResolvedQuestion:
    """A question no reference group answered (new to the run); its options count as an
    evenly spaced scale, in the order given."""
    return ResolvedQuestion(name, None, options, embeddings,
                            tuple(float(i) for i in range(len(options))), None)


class QuestionCatalogue:
    """The run's questions and reference answers; `embed` embeds (text, options) questions
    with the run's embedder (loaded on first use)."""

    def __init__(self, options: dict[str, tuple[str, ...]], embeddings: dict[str, np.ndarray],
                 texts: dict[str, str], ordinals: dict[str, tuple[float, ...]],
                 references: References, stats: EmbeddingStats, embedding_dim: int,
                 embed: Callable[[list[tuple[str, tuple[str, ...]]]], list[np.ndarray]]):
        self._options, self._embeddings, self._texts = options, embeddings, texts
        self._ordinals, self.references, self.stats = ordinals, references, stats
        self.embedding_dim, self._embed = embedding_dim, embed
        self._row = {key: q for q, key in enumerate(options)}

    @property
    def keys(self) -> list[str]:
        return list(self._options)

    def row(self, key: str) -> int:
        return self._row[key]

    def options(self, key: str) -> tuple[str, ...]:
        """The answer options of a run question, in order."""
        if key not in self._options:
            raise KeyError(f"unknown question key {key!r}; the run's keys are "
                           "model.question_keys")
        return self._options[key]

    def text(self, key: str) -> str:
        """The text of a run question."""
        self.options(key)
        return self._texts.get(key, key)

    def of_key(self, key: str) -> ResolvedQuestion:
        return ResolvedQuestion(self.text(key), key, self._options[key], self._embeddings[key],
                                self._ordinals[key], self._row[key])

    def resolve(self, questions: Sequence, where: str) -> list[ResolvedQuestion]:
        """Each question a key, (text, options) or an option-embedding array; new ones are
        embedded in one call. Bad input: one ValueError naming the item."""
        out, to_embed = [], []
        for i, q in enumerate(questions):
            label = f"{where} item {i}"
            if isinstance(q, str):
                if q not in self._options:
                    raise ValueError(f"{label}: unknown question key {q!r}; the run's keys are "
                                     "model.question_keys; give (text, options) or option "
                                     "embeddings for new questions")
                out.append(self.of_key(q))
            elif isinstance(q, np.ndarray | jax.Array):
                try:
                    emb = np.asarray(q, np.float32)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{label}: option embeddings are not numbers ({err})"
                                     ) from None
                if emb.ndim == 2 and len(emb) < 2:
                    raise ValueError(f"{label}: option embeddings for {len(emb)} options; a "
                                     "question needs at least 2")
                if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
                    raise ValueError(f"{label}: option embeddings have shape {emb.shape}, "
                                     f"expected (options, {self.embedding_dim})")
                if not np.isfinite(emb).all():
                    raise ValueError(f"{label}: option embeddings are not finite (option "
                                     f"{int(np.argwhere(~np.isfinite(emb))[0, 0])})")
                out.append(new_question(f"question {i}", tuple(
                    f"option {j}" for j in range(len(emb))), emb))
            elif isinstance(q, tuple | list) and len(q) == 2 and isinstance(q[0], str):
                if isinstance(q[1], str) or not isinstance(q[1], Sequence) or not all(
                        isinstance(o, str) for o in q[1]):
                    raise ValueError(f"{label}: the options of {q[0][:60]!r} must be a list "
                                     f"of strings, got {q[1]!r:.60}")
                text, options = q[0], tuple(q[1])
                if len(set(options)) != len(options):
                    raise ValueError(f"{label}: {text[:60]!r} lists an option twice")
                if len(options) < 2:
                    raise ValueError(f"{label}: {text[:60]!r} needs at least 2 options")
                out.append(new_question(text, options, np.zeros(0)))
                to_embed.append((len(out) - 1, text, options))
            else:
                raise ValueError(f"{label}: a question is a key, (text, options) or an "
                                 f"(options x {self.embedding_dim}) array, got {q!r:.80}")
        if to_embed:
            vectors = self._embed([(t, o) for _, t, o in to_embed])
            for (index, text, options), v in zip(to_embed, vectors):
                if v.shape[1] != self.embedding_dim:
                    raise ValueError(f"embedder gives width {v.shape[1]}, the model expects "
                                     f"{self.embedding_dim}")
                if not np.isfinite(v).all():
                    raise ValueError(f"{where} item {index}: the embedder gave non-finite "
                                     f"embeddings for {text[:60]!r}")
                out[index] = new_question(text, options, v)
        return out

    def table(self, resolved: Sequence[ResolvedQuestion], n_questions: int, O: int
              ) -> tuple[OptionTable, np.ndarray]:
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
                                   self.references.take(rows, O))
        return table, option_mask

    def candidates(self, candidates: Sequence | None
                   ) -> tuple[list[int], list[tuple[str, tuple[str, ...]]]]:
        """(run question rows, new (text, options) questions) of a candidates list, in order,
        without repeats; each item a survey key or a (text, options) pair (default: every
        run question)."""
        if candidates is None:
            return list(range(len(self._options))), []
        if isinstance(candidates, str) or not isinstance(candidates, Sequence):
            raise ValueError("candidates must be a list of survey keys or (text, options) "
                             f"questions, got {type(candidates).__name__}")
        known, new = [], []
        for i, q in enumerate(candidates):
            if isinstance(q, str):
                if q not in self._row:
                    raise ValueError(f"candidates item {i}: unknown question key {q!r}; the "
                                     "run's keys are model.question_keys")
                if self._row[q] not in known:
                    known.append(self._row[q])
            elif (isinstance(q, tuple | list) and len(q) == 2 and isinstance(q[0], str)
                  and isinstance(q[1], Sequence) and not isinstance(q[1], str)):
                if (q[0], tuple(map(str, q[1]))) not in new:
                    new.append((q[0], tuple(str(o) for o in q[1])))
            else:
                raise ValueError(f"candidates item {i}: a candidate is a survey key or "
                                 f"(text, options), got {q!r:.80}")
        return known, new


def check_distribution(values, n_options: int, where: str) -> np.ndarray:
    """A context answer over a question's options, normalised; or one error naming it."""
    arr = np.asarray(values, np.float64)
    if arr.shape != (n_options,):
        raise ValueError(f"{where}: {arr.size} probabilities for {n_options} options")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{where}: probabilities must be finite and non-negative, got "
                         f"{arr.tolist()}")
    if not np.any(arr > 0):
        raise ValueError(f"{where}: probabilities sum to 0; nothing to normalise")
    return normalised(arr)


def check_respondents(values, n_items: int) -> np.ndarray | None:
    """Respondent counts, one per context item (or None); or one error naming them."""
    if values is None:
        return None
    arr = np.asarray(values, np.float64)
    if arr.shape != (n_items,):
        raise ValueError(f"respondents: {arr.size} counts for {n_items} context items")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"respondents must be finite and positive, got {arr.tolist()}")
    return arr
