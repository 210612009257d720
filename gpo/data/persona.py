"""Semi-synthetic pairwise preferences from Anthropic's persona statements, in PAL's style.

A latent user type is a set of persona traits (e.g. agreeableness + interest-in-math). Each
question pairs two statements drawn from the types' traits; a statement scores +1 for a type
that holds its trait when it matches the trait ("answer_matching_behavior": Yes), -1 when it
contradicts it, 0 when the trait is not the type's. A user is one type (or a Dirichlet mix of
types); it prefers the higher-scoring statement (ties split evenly, mixtures average).
Users are groups of size one, questions are 2-option questions, targets one-hot (or soft):
the same `Survey` type as OpinionQA. Everything is drawn from a seed; nothing is stored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from gpo.data.survey import Group, Question, SurveyBuilder, SurveyDataError, read_text

PROMPT = "Which of these two statements would you rather say?"


@dataclasses.dataclass(frozen=True, eq=False)
class PersonaPreferences:
    survey: object               # the Survey
    type_traits: tuple[tuple[str, ...], ...]
    user_mixtures_UxT: np.ndarray
    scores_TxQxO: np.ndarray     # each type's score of each statement


def read_persona_statements(folder: str | Path, trait: str) -> list[tuple[str, int]]:
    """(statement, +1 matches the trait / -1 contradicts it) from one trait's .jsonl file."""
    path = Path(folder) / f"{trait}.jsonl"
    out = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        try:
            row = json.loads(line)
            sign = {"Yes": 1, "No": -1}[row["answer_matching_behavior"].strip()]
            out.append((str(row["statement"]), sign))
        except (json.JSONDecodeError, KeyError) as err:
            raise SurveyDataError(f"file {str(path)!r}, line {line_no}: not a persona "
                                  f"statement row ({err})") from err
    if not out:
        raise SurveyDataError(f"file {str(path)!r}: no statements")
    return out


def make_persona_preferences(folder: str | Path, seed: int = 0, n_types: int = 4,
                             traits_per_type: int = 2, n_users: int = 60,
                             n_pairs: int = 400, mixture_concentration: float | None = None
                             ) -> PersonaPreferences:
    """Draw the dataset. `mixture_concentration=None`: each user is exactly one type."""
    folder = Path(folder)
    if (folder / "persona").is_dir():
        folder = folder / "persona"
    traits_available = sorted(p.stem for p in folder.glob("*.jsonl"))
    needed = n_types * traits_per_type
    if len(traits_available) < needed:
        raise SurveyDataError(f"{folder}: {len(traits_available)} persona traits, need {needed}")
    rng = np.random.default_rng(seed)
    chosen = [traits_available[i] for i in rng.choice(len(traits_available), needed,
                                                      replace=False)]
    type_traits = tuple(tuple(chosen[t * traits_per_type:(t + 1) * traits_per_type])
                        for t in range(n_types))
    pool = [(trait, s, sign) for trait in chosen
            for s, sign in read_persona_statements(folder, trait)]
    owner = {trait: t for t, traits in enumerate(type_traits) for trait in traits}

    builder = SurveyBuilder(f"persona(seed={seed})")
    scores = np.zeros((n_types, n_pairs, 2))
    for q in range(n_pairs):
        a, b = rng.choice(len(pool), size=2, replace=False)
        options = (pool[a][1], pool[b][1])
        for o, (trait, _, sign) in enumerate((pool[a], pool[b])):
            scores[owner[trait], q, o] = sign
        builder.add_question(Question(f"PAIR{q:04d}", PROMPT, options, (False, False),
                                      (1.0, 2.0)))
    prefer_TxQxO = np.where(scores[..., :1] > scores[..., 1:], [1.0, 0.0],
                            np.where(scores[..., :1] < scores[..., 1:], [0.0, 1.0], [0.5, 0.5]))
    if mixture_concentration is None:
        mixtures = np.eye(n_types)[rng.integers(n_types, size=n_users)]
    else:
        mixtures = rng.dirichlet(np.full(n_types, mixture_concentration), size=n_users)
    user_probs = np.einsum("ut,tqo->uqo", mixtures, prefer_TxQxO)
    for u in range(n_users):
        for q in range(n_pairs):
            builder.add_answer(Group(f"user{u:03d}", "user"), f"PAIR{q:04d}", user_probs[u, q])
    return PersonaPreferences(builder.build(), type_traits, mixtures, scores)
