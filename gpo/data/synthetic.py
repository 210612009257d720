"""A seeded synthetic survey with known latent structure.

Each option of a question is a policy stance: more or less of one theme ("Spend more on
public transport"). T latent preference types each weigh the F themes; a type's choice
distribution is softmax(sharpness * stance_features @ type_weights) over a question's options.
A group is a convex mixture of types (Dirichlet weights), so its distribution is the mixture of
the types' distributions; optional finite respondents add multinomial sampling noise. The texts
are real sentences, so a frozen LLM embedder can run on them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpo.data.survey import Group, Question, Survey, SurveyBuilder

THEMES = ("public transport", "national defence", "renewable energy", "police funding",
          "public schools", "farm subsidies", "space exploration", "immigration enforcement",
          "public health care", "highway construction", "scientific research", "tax cuts",
          "foreign aid", "the arts", "border security", "affordable housing")
_MORE = ("Spend more on {}", "Greatly increase support for {}", "Make {} a top priority")
_LESS = ("Spend less on {}", "Cut support for {}", "Treat {} as a low priority")
_PROMPTS = ("If the budget had to change, which of these would you choose?",
            "Which of these comes closest to your view on next year's budget?",
            "Thinking about government priorities, which option do you prefer?",
            "Which of the following should lawmakers do first?")


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticSurvey:
    """The survey plus the latent truth it was drawn from."""

    survey: Survey
    type_weights_TxF: np.ndarray      # each latent type's preference over themes
    mixtures_GxT: np.ndarray          # each group's convex weights over types
    features_QxOxF: np.ndarray        # each option's stance (+1 more / -1 less) on each theme
    type_probs_TxQxO: np.ndarray      # each type's exact choice distribution


def make_synthetic_survey(seed: int = 0, n_groups: int = 36, n_questions: int = 300,
                          n_types: int = 3, options_range: tuple[int, int] = (2, 5),
                          sharpness: float = 2.0, concentration: float = 0.5,
                          respondents: int | None = None) -> SyntheticSurvey:
    """Draw a synthetic survey. `respondents=None` gives exact mixture distributions."""
    if not 2 <= options_range[0] <= options_range[1]:
        raise ValueError(f"options_range must satisfy 2 <= low <= high, got {options_range}")
    rng = np.random.default_rng(seed)
    F, O = len(THEMES), options_range[1]
    type_weights = rng.normal(size=(n_types, F))
    mixtures = rng.dirichlet(np.full(n_types, concentration), size=n_groups)

    builder = SurveyBuilder(f"synthetic(seed={seed})")
    features = np.zeros((n_questions, O, F))
    type_probs = np.zeros((n_types, n_questions, O))
    for qi in range(n_questions):
        n = int(rng.integers(options_range[0], options_range[1] + 1))
        themes = rng.choice(F, size=n, replace=False)
        signs = rng.choice([-1.0, 1.0], size=n)
        options = tuple((_MORE if s > 0 else _LESS)[int(rng.integers(3))].format(THEMES[t])
                        for t, s in zip(themes, signs))
        features[qi, np.arange(n), themes] = signs
        text = _PROMPTS[int(rng.integers(len(_PROMPTS)))]
        builder.add_question(Question(f"SYN{qi:04d}", text, options, (False,) * n,
                                      tuple(float(i + 1) for i in range(n))))
        utility_TxN = type_weights @ features[qi, :n].T
        p = np.exp(sharpness * (utility_TxN - utility_TxN.max(1, keepdims=True)))
        type_probs[:, qi, :n] = p / p.sum(1, keepdims=True)

    group_probs = np.einsum("gt,tqo->gqo", mixtures, type_probs)
    for gi in range(n_groups):
        group = Group(f"group{gi:02d}", "synthetic")
        for qi in range(n_questions):
            n = int((features[qi].any(-1)).sum())
            p = group_probs[gi, qi, :n]
            if respondents is None:
                builder.add_answer(group, f"SYN{qi:04d}", p)
            else:
                counts = rng.multinomial(respondents, p / p.sum())
                builder.add_answer(group, f"SYN{qi:04d}", counts, respondents)
    survey = builder.build()
    O = survey.max_options
    return SyntheticSurvey(survey, type_weights, mixtures, features[:, :O], type_probs[:, :, :O])


def make_planted_agreement_survey(n_groups: int = 24, n_questions: int = 60, width: int = 16,
                                  seed: int = 0) -> tuple[Survey, np.ndarray]:
    """The smallest in-context task: every group agrees with every question at its own rate.

    The population prior is of no use and a group's context says everything, so a head that
    reads its context must beat the prior by far. Returns the survey and (questions x 2 x
    width) option embeddings in which 'agree' and 'disagree' are told apart by a shared
    direction (a head must know which option a point is)."""
    rng = np.random.default_rng(seed)
    questions = [Question(f"AGREE{i:03d}", f"Statement {i}: do you agree?",
                          ("agree", "disagree"), (False, False), (1.0, 2.0))
                 for i in range(n_questions)]
    rate_G = rng.uniform(0.05, 0.95, n_groups)
    builder = SurveyBuilder(f"planted agreement(seed={seed})")
    for q in questions:
        builder.add_question(q)
    for g, rate in enumerate(rate_G):
        for q in questions:
            builder.add_answer(Group(f"group{g:02d}", "planted"), q.key, [rate, 1 - rate])
    option_direction = rng.normal(size=(1, 2, width))
    noise = 0.5 * rng.normal(size=(n_questions, 2, width))
    return builder.build(), (noise + option_direction).astype(np.float32)
