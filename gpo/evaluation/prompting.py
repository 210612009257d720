"""The paper's prompting baselines: what a user would otherwise do, which is ask the LLM.

Each method turns a test group's target questions into multiple-choice prompts and reads the
LLM's option distribution from the next-token probabilities of the option letters
(`gpo.embed.letters`). A method reads only what any method may: the question texts, the
group's name (steered) and the group's k context answers (few-shot).

- zero-shot: the LLM's own distribution, the same for every group;
- steered-QA / -BIO / -PORTRAY: OpinionQA's three persona styles naming the group (a question
  the persona answered, a short self-description, an instruction to answer as the group);
- few-shot: the group's k context questions with its answer shares, then the target question
  (the paper's in-context prompting baseline).

LLMs favour options by position, so each method is also scored averaged over the listed and
the reversed option order (`<method>, both orders`).

Shapes: G' test groups, Q questions, O options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gpo.data.splits import EvalTask
from gpo.data.survey import Group, Question, Survey
from gpo.embed.letters import LETTERS, LetterPrompt, LetterScorer
from gpo.embed.llm import INSTRUCTION, render_chat

STYLES = ("zero-shot", "steered-QA", "steered-BIO", "steered-PORTRAY", "few-shot")
BOTH_ORDERS = ", both orders"

# Per demographic attribute: the question a respondent answered to join the group (QA), a
# self-description (BIO) and a portrait to answer as (PORTRAY); {name} is the group's name.
_PERSONAS = {
    "CREGION": ("In which region of the United States do you live?",
                "I live in the {name} of the United States.",
                "someone who lives in the {name} of the United States"),
    "AGE": ("How old are you?", "I am {age} years old.", "someone {age} years old"),
    "SEX": ("What is your sex?", "I am {lower}.", "a {lower} person"),
    "EDUCATION": ("What is the highest level of schooling you have completed?",
                  "The highest level of schooling I have completed: {name}.",
                  "someone whose highest level of schooling is: {name}"),
    "POLPARTY": ("In politics today, do you consider yourself a Republican, a Democrat, an "
                 "independent or something else?",
                 "In politics today, I consider myself: {name}.",
                 "someone who, in politics today, considers themselves: {name}"),
    "INCOME": ("Last year, what was your total family income from all sources, before taxes?",
               "Last year my total family income was {lower}.",
               "someone whose total family income last year was {lower}"),
    "POLIDEOLOGY": ("In general, would you describe your political views as very "
                    "conservative, conservative, moderate, liberal or very liberal?",
                    "I would describe my political views as {lower}.",
                    "someone whose political views are {lower}"),
    "RACE": ("Which of these best describes your race or ethnicity?",
             "My race or ethnicity: {name}.", "someone whose race or ethnicity is: {name}"),
    "country": ("Which country are you from?", "I come from {name}.", "someone from {name}"),
}
_ANY_GROUP = ("Which group do you belong to?", "I belong to the group: {name}.",
              "a member of the group: {name}")


def persona(group: Group, style: str) -> str:
    """The steering text of one style ('QA', 'BIO', 'PORTRAY') for a group."""
    question, bio, portrait = _PERSONAS.get(group.attribute, _ANY_GROUP)
    fields = {"name": group.name, "lower": group.name.lower(),
              "age": group.name.replace("+", " or more")}
    if style == "QA":
        return (f"For context, here is a question you answered before.\nQuestion: {question}\n"
                f"Answer: {group.name}")
    if style == "BIO":
        return ("Below you are asked to describe yourself briefly and then to answer some "
                f"questions.\nDescription: {bio.format(**fields)}")
    if style == "PORTRAY":
        return f"Answer as if you were {portrait.format(**fields)}."
    raise ValueError(f"persona style must be 'QA', 'BIO' or 'PORTRAY', got {style!r}")


def _order(question: Question, reverse: bool) -> list[int]:
    """Answer-option indices in the order they are listed."""
    order = list(range(len(question.answer_options)))
    return order[::-1] if reverse else order


def question_block(question: Question, reverse: bool = False) -> str:
    """OpinionQA's format: the question, its lettered answer options, the answer cue."""
    options = question.answer_options
    listed = "".join(f"\n{LETTERS[i]}. {options[o]}"
                     for i, o in enumerate(_order(question, reverse)))
    return f"Question: {question.text}{listed}\nAnswer:"


def _shares(question: Question, probs_O: np.ndarray, reverse: bool) -> str:
    return ", ".join(f"{LETTERS[i]} {100 * probs_O[o]:.0f}%"
                     for i, o in enumerate(_order(question, reverse)))


def few_shot_context(survey: Survey, group: int, context: Sequence[int], reverse: bool) -> str:
    """The group's context questions with its answer shares, as the user message opens."""
    examples = [question_block(survey.questions[q], reverse)[: -len("Answer:")]
                + "Answers of the group: "
                + _shares(survey.questions[q], survey.probs_GxQxO[group, q], reverse)
                for q in context]
    return ("Here is how a group of people answered some survey questions: for each option, "
            "the share of the group that chose it.\n\n" + "\n\n".join(examples)
            + "\n\nNow a new question. Answer with the option this group would choose.\n")


def letter_prompt(scorer: LetterScorer, system: str, opening: str, block: str, n_options: int
                  ) -> LetterPrompt:
    """A prompt split where the question block begins: everything before it (the system text,
    a persona, context examples) is the prefix many prompts share."""
    if scorer.chat_template:
        whole = render_chat(scorer.chat_template, scorer.special_tokens, system,
                            opening + block)
    else:
        whole = f"{system}\n\n{opening}{block}"
    cut = whole.rindex(block)
    return LetterPrompt(whole[:cut], whole[cut:], n_options)


def _system(style: str, group: Group) -> str:
    if style.startswith("steered-"):
        return f"{INSTRUCTION}.\n{persona(group, style.split('-')[1])}"
    return f"{INSTRUCTION}."


def _check_styles(styles: Sequence[str]) -> None:
    for style in styles:
        if style not in STYLES:
            raise ValueError(f"prompting style must be one of {', '.join(STYLES)}; got "
                             f"{style!r}")


def prompting_predictions(survey: Survey, task: EvalTask, scorer: LetterScorer,
                          styles: Sequence[str] = STYLES) -> dict[str, np.ndarray]:
    """{method: predictions `[G', Q, O]`} for each style in the listed option order
    (`LLM <style>`) and averaged with the reversed order (`LLM <style>, both orders`), on the
    task's target questions (uniform elsewhere: only targets are scored)."""
    _check_styles(styles)
    prompts: list[LetterPrompt] = []
    where: list[tuple[str, bool, int, int]] = []  # (style, reversed, row, question)
    for style in styles:
        for reverse in (False, True):
            for row, g in enumerate(task.groups):
                group = survey.groups[g]
                opening = (few_shot_context(survey, g, np.flatnonzero(task.context_GxQ[row]),
                                            reverse) if style == "few-shot" else "")
                for q in np.flatnonzero(task.target_GxQ[row]):
                    question = survey.questions[q]
                    prompts.append(letter_prompt(scorer, _system(style, group), opening,
                                                 question_block(question, reverse),
                                                 len(question.answer_options)))
                    where.append((style, reverse, row, q))
    distributions = scorer.distributions(prompts, desc="LLM baselines")
    mask = survey.option_mask_QxO
    uniform = mask / mask.sum(1, keepdims=True)
    shape = (len(task.groups), *mask.shape)
    listed = {s: np.broadcast_to(uniform, shape).copy() for s in styles}
    reversed_ = {s: np.broadcast_to(uniform, shape).copy() for s in styles}
    for (style, reverse, row, q), dist in zip(where, distributions):
        order = _order(survey.questions[q], reverse)
        (reversed_ if reverse else listed)[style][row, q, order] = dist
    out = {}
    for style in styles:
        out[f"LLM {style}"] = listed[style]
        out[f"LLM {style}{BOTH_ORDERS}"] = (listed[style] + reversed_[style]) / 2
    return out


@dataclasses.dataclass(frozen=True)
class PromptingBaselines:
    """The prompting baselines as the evaluation runs them: an LLM and the styles to score."""

    scorer: LetterScorer
    styles: tuple[str, ...] = STYLES

    def __post_init__(self):
        _check_styles(self.styles)

    def predictions(self, survey: Survey, task: EvalTask) -> dict[str, np.ndarray]:
        return prompting_predictions(survey, task, self.scorer, self.styles)
