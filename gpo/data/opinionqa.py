"""OpinionQA loader (Santurkar et al. 2023), official `human_resp/` layout.

    human_resp/American_Trends_Panel_W<wave>/<ATTR>_data.json   per-group answer counts
    human_resp/American_Trends_Panel_W<wave>/info.csv           questions, options, ordinals
    human_resp/American_Trends_Panel_W<wave>/metadata.csv       attributes and their groups
    human_resp/American_Trends_Panel_W<wave>/responses.csv      per-respondent answers (full
                                                                download only), survey weights

Options come from info.csv `references`: the JSON's MC_options was split on commas upstream.
Options without an ordinal in `option_ordinal` (they trail the list: 'Refused', 'Not sure')
are refusals; they are dropped and the rest renormalised.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from gpo.data.survey import (
    Group,
    Question,
    Survey,
    SurveyBuilder,
    SurveyDataError,
    read_csv,
    read_json,
)

WAVE_DIR = re.compile(r"^American_Trends_Panel_W(\d+)$")
# Pseudo-groups in the per-group files that are not demographic groups.
PSEUDO_GROUPS = frozenset({"Refused", "nan"})
_NOT_GROUPS = frozenset({"MC_options", "question_text", "marginals"})
# NONE_data.json repeats another attribute's flat table (in wave 26, POLPARTY's): no groups.
NOT_ATTRIBUTES = frozenset({"NONE"})


def find_human_resp(root: str | Path) -> Path:
    """Accept the OpinionQA folder, its `human_resp/`, or a parent holding `opinionqa/`."""
    root = Path(root)
    for candidate in (root / "human_resp", root, root / "opinionqa" / "human_resp"):
        if candidate.is_dir() and any(WAVE_DIR.match(p.name) for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(f"{root}: no OpinionQA human_resp/American_Trends_Panel_W* folders "
                            "found (see data_cards/opinionqa.md for how to get the data)")


def wave_dirs(human_resp: Path, waves: Iterable[int] | None = None) -> dict[int, Path]:
    found = {int(m.group(1)): p for p in sorted(human_resp.iterdir())
             if p.is_dir() and (m := WAVE_DIR.match(p.name))}
    if waves is None:
        return found
    missing = sorted(set(waves) - set(found))
    if missing:
        raise SurveyDataError(f"{human_resp}: waves {missing} not found; have {sorted(found)}")
    return {w: found[w] for w in sorted(set(waves))}


def _literal(text: str, source: Path, key: str, column: str):
    """Parse a Python-literal cell ("['a', 'b']") without evaluating code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise SurveyDataError(f"file {str(source)!r}, question {key!r}: column {column!r} "
                              f"is not a literal list: {text[:80]!r}") from err


def read_info(path: Path) -> list[Question]:
    """Questions of one wave from its info.csv, in its order (a key on several rows: the
    last one's, see the data card)."""
    questions = []
    reader = read_csv(path)
    need = {"key", "question", "references", "option_ordinal"}
    if not need <= set(reader.fieldnames or ()):
        raise SurveyDataError(f"file {str(path)!r}: missing columns "
                              f"{sorted(need - set(reader.fieldnames or ()))}")
    for row in reader:
        key = row["key"]
        options = tuple(str(o) for o in _literal(row["references"], path, key, "references"))
        ordinals = _literal(row["option_ordinal"], path, key, "option_ordinal")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in ordinals):
            raise SurveyDataError(f"file {str(path)!r}, question {key!r}: column "
                                  f"'option_ordinal' must list numbers, got "
                                  f"{row['option_ordinal'][:80]!r}")
        ordinals = tuple(float(x) for x in ordinals)
        if len(ordinals) > len(options):
            raise SurveyDataError(f"file {str(path)!r}, question {key!r}: {len(ordinals)} "
                                  f"ordinals for {len(options)} options")
        refusals = tuple(i >= len(ordinals) for i in range(len(options)))
        questions.append(Question(key, row["question"], options, refusals, ordinals))
    return questions


def read_metadata(path: Path) -> dict[str, list[str]]:
    """Attribute -> its groups, from a wave's metadata.csv."""
    return {row["key"]: [str(o) for o in _literal(row["options"], path, row["key"], "options")]
            for row in read_csv(path)}


def _option_index(question: Question) -> dict[str, int]:
    """Option text -> position in the question's options, exact and case/space-folded.

    The folded form absorbs upstream typos such as 'neither better noR worse' (POLICY3_W42).
    """
    index = {}
    for i, option in enumerate(question.options):
        index.setdefault(_fold(option), i)
    for i, option in enumerate(question.options):
        index[option] = i
    return index


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _answer_counts(question: Question, counts: dict[str, float], option_index: dict[str, int],
                   source: Path, group: str) -> tuple[np.ndarray, float]:
    """Counts over all options -> (counts over answer options, respondents incl. refusals)."""
    full = np.zeros(len(question.options))
    for option, count in counts.items():
        i = option_index.get(option, option_index.get(_fold(option)))
        if i is None:
            raise SurveyDataError(f"file {str(source)!r}, question {question.key!r}, group "
                                  f"{group!r}: option {option!r} is not one of "
                                  f"{list(question.options)}")
        if isinstance(count, bool) or not isinstance(count, int | float):
            raise SurveyDataError(f"file {str(source)!r}, question {question.key!r}, group "
                                  f"{group!r}: count {count!r} for option {option!r} is not "
                                  "a number")
        full[i] += float(count)
    keep = ~np.asarray(question.refusals)
    return full[keep], float(full.sum())


def _add_group_file(builder: SurveyBuilder, path: Path, attribute: str,
                    info: dict[str, Question]) -> None:
    """One `<ATTR>_data.json`: flat ({group: {option: count}}) or, for an intersection of
    two attributes such as POLPARTY_RACE, nested ({first: {second: {option: count}}} plus
    'marginals', which repeats the first attribute's table and is skipped). An intersection's
    groups join both values: 'POLPARTY_RACE=Democrat & Black'."""
    data = read_json(path)
    for key, per_group in data.items():
        if key not in info:
            raise SurveyDataError(f"file {str(path)!r}, question {key!r}: unknown question key "
                                  f"(not in {path.parent / 'info.csv'})")
        question = info[key]
        if not isinstance(per_group, dict):
            raise SurveyDataError(f"file {str(path)!r}, question {key!r}: expected "
                                  f"{{group: {{option: count}}}}, got {per_group!r:.60}")
        builder.add_question(question, str(path))
        option_index = _option_index(question)
        for name, counts in per_group.items():
            if name in _NOT_GROUPS or name in PSEUDO_GROUPS or not counts:
                continue  # metadata, pseudo-groups, or a group that was not asked
            if not isinstance(counts, dict):
                raise SurveyDataError(f"file {str(path)!r}, question {key!r}, group {name!r}: "
                                      f"expected {{option: count}}, got {counts!r:.60}")
            if any(isinstance(v, dict) for v in counts.values()):  # an intersection file
                for inner, inner_counts in counts.items():
                    if inner in PSEUDO_GROUPS or not inner_counts:
                        continue
                    _add_counts(builder, path, attribute, f"{name} & {inner}", question,
                                inner_counts, option_index)
                continue
            _add_counts(builder, path, attribute, name, question, counts, option_index)


def _add_counts(builder: SurveyBuilder, path: Path, attribute: str, name: str,
                question: Question, counts, option_index: dict[str, int]) -> None:
    if not isinstance(counts, dict):
        raise SurveyDataError(f"file {str(path)!r}, question {question.key!r}, group "
                              f"{name!r}: expected {{option: count}}, got {counts!r:.60}")
    answer, respondents = _answer_counts(question, counts, option_index, path, name)
    if answer.sum() == 0 and respondents > 0:
        # Only refusals: no opinion distribution exists (OpinionQA skips these too).
        builder.skipped.append(f"{attribute}={name}/{question.key}")
        return
    builder.add_answer(Group(name, attribute), question.key, answer, respondents, str(path))


def load_opinionqa(root: str | Path, attributes: Sequence[str] | None = None,
                   waves: Iterable[int] | None = None) -> Survey:
    """Load OpinionQA per-group distributions.

    attributes: demographic attributes to load (default: every `<ATTR>_data.json` present,
      intersections such as POLPARTY_RACE included, NONE_data.json skipped with a reason in
      `Survey.skipped`). An attribute listed in a wave's metadata.csv without a per-group file
      is computed from that wave's responses.csv.
    waves: ATP wave numbers to load (default: all).
    """
    human_resp = find_human_resp(root)
    builder = SurveyBuilder("opinionqa")
    wanted = None if attributes is None else list(dict.fromkeys(attributes))
    seen_attributes: set[str] = set()
    for wave, wave_dir in wave_dirs(human_resp, waves).items():
        info = {q.key: q for q in read_info(wave_dir / "info.csv")}
        files = {p.name[: -len("_data.json")]: p for p in sorted(wave_dir.glob("*_data.json"))}
        metadata = read_metadata(wave_dir / "metadata.csv") if (
            wave_dir / "metadata.csv").exists() else {}
        for attribute, names in metadata.items():  # groups in the survey's own order
            if wanted is None or attribute in wanted:
                for name in names:
                    builder.add_group(Group(name, attribute))
        for attribute in (files if wanted is None else wanted):
            if attribute in NOT_ATTRIBUTES and wanted is None:
                builder.skipped.append(f"{files[attribute]}: not a demographic attribute "
                                       "(repeats another attribute's table)")
                continue
            if attribute in files:
                _add_group_file(builder, files[attribute], attribute, info)
                seen_attributes.add(attribute)
            elif (wave_dir / "responses.csv").exists() and attribute in metadata:
                add_from_responses(builder, wave_dir, wave, attribute, info)
                seen_attributes.add(attribute)
    if wanted is not None and (missing := [a for a in wanted if a not in seen_attributes]):
        raise SurveyDataError(f"{human_resp}: attributes {missing} have no <ATTR>_data.json "
                              "and no responses.csv + metadata.csv entry in any loaded wave")
    return builder.build()


def add_from_responses(builder: SurveyBuilder, wave_dir: Path, wave: int, attribute: str,
                       info: dict[str, Question]) -> None:
    """Weighted group distributions from per-respondent answers (responses.csv).

    Each respondent adds their survey weight WEIGHT_W<wave> to the option they chose, within
    the group named by their `attribute` column; groups are those in metadata.csv.
    """
    path = wave_dir / "responses.csv"
    groups = read_metadata(wave_dir / "metadata.csv")[attribute]
    weight_column = f"WEIGHT_W{wave}"
    reader = read_csv(path)
    columns = set(reader.fieldnames or ())
    for needed in (weight_column, attribute):
        if needed not in columns:
            raise SurveyDataError(f"file {str(path)!r}: no column {needed!r}")
    keys = [k for k in info if k in columns]
    indices = {k: _option_index(info[k]) for k in keys}
    totals = {(g, k): np.zeros(len(info[k].options)) for g in groups for k in keys}
    for line, row in enumerate(reader, start=2):
        group = row[attribute]
        if group not in groups:
            continue  # 'Refused' and blanks are not groups
        try:
            weight = float(row[weight_column])
        except ValueError as err:
            raise SurveyDataError(f"file {str(path)!r}, line {line}: weight "
                                  f"{row[weight_column]!r} is not a number") from err
        if not np.isfinite(weight) or weight < 0:
            raise SurveyDataError(f"file {str(path)!r}, line {line}: bad weight {weight}")
        for k in keys:
            answer = row[k].strip()
            if not answer or answer.lower() == "nan":
                continue  # not asked
            i = indices[k].get(answer, indices[k].get(_fold(answer)))
            if i is None:
                raise SurveyDataError(f"file {str(path)!r}, line {line}, question {k!r}: "
                                      f"answer {answer!r} is not one of "
                                      f"{list(info[k].options)}")
            totals[(group, k)][i] += weight
    for (group, k), full in totals.items():
        answer = full[~np.asarray(info[k].refusals)]
        if answer.sum() > 0:
            builder.add_question(info[k], str(path))
            builder.add_answer(Group(group, attribute), k, answer, full.sum(), str(path))


# GPO's 22 OpinionQA groups (Zhao et al. 2024) as this loader labels them; its five religious
# groups (Atheist, Hindu, Jewish, Muslim, Protestant) have no per-group answers in the
# released human_resp/ folders, so 17 remain.
GPO_GROUPS = (
    "CREGION=Northeast", "CREGION=South", "SEX=Female", "SEX=Male",
    "EDUCATION=College graduate/some postgrad", "EDUCATION=Less than high school",
    "POLPARTY=Democrat", "POLPARTY=Republican", "INCOME=$100,000 or more",
    "INCOME=Less than $30,000", "POLIDEOLOGY=Conservative", "POLIDEOLOGY=Liberal",
    "POLIDEOLOGY=Moderate", "RACE=Asian", "RACE=Black", "RACE=Hispanic", "RACE=White")
CONTENTIOUS = "Pew_American_Trends_Panel_disagreement_500"


def contentious_keys(root: str | Path) -> list[str]:
    """The keys of OpinionQA's 500 high-disagreement questions (the set GPO evaluates on)."""
    path = find_human_resp(root) / CONTENTIOUS / "info.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; GPO's protocol needs OpinionQA's list of "
                                "contentious questions")
    return [row["key"] for row in read_csv(path)]


def load_opinionqa_gpo(root: str | Path) -> Survey:
    """GPO's protocol: its groups (GPO_GROUPS) on the contentious questions they all answered
    (156 of the 500 in the released per-group files)."""
    survey = load_opinionqa(root)
    missing = [g for g in GPO_GROUPS if g not in survey.group_labels]
    if missing:
        raise SurveyDataError(f"{find_human_resp(root)}: GPO's groups {missing} are missing")
    groups = [survey.group_index(g) for g in GPO_GROUPS]
    wanted = set(contentious_keys(root))
    answered_Q = survey.answered_GxQ[groups].all(0)
    questions = [q for q, key in enumerate(survey.question_keys)
                 if key in wanted and answered_Q[q]]
    if len(questions) < 2:
        raise SurveyDataError(f"{find_human_resp(root)}: {len(questions)} contentious questions "
                              "are answered by all of GPO's groups")
    return dataclasses.replace(survey.select(groups, questions), name="opinionqa-gpo")
