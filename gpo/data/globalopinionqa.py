"""GlobalOpinionQA loader (Durmus et al. 2023), official CSV layout.

Columns: question, selections, options, source. `selections` is the repr of a Python
defaultdict, "defaultdict(<class 'list'>, {'Country': [p1, ...], ...})"; it is parsed as a
literal (ast.literal_eval of the inner dict only), never evaluated. Countries are groups.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import numpy as np

from gpo.data.survey import (
    Group,
    Question,
    Survey,
    SurveyBuilder,
    SurveyDataError,
    read_csv,
)

# Options that carry no opinion; they are dropped and the rest renormalised (as GPO does).
REFUSAL_OPTIONS = frozenset({"dk/refused", "refused", "don't know", "dk", "no answer",
                             "don't know/refused", "not sure", "don't know/no answer"})
_SELECTIONS = re.compile(r"^\s*defaultdict\(\s*<class '(?:list|dict)'>\s*,\s*(\{.*\})\s*\)\s*$",
                         re.S)


def parse_selections(text: str, where: str = "") -> dict[str, list[float]]:
    """Parse the `selections` cell safely: only a dict literal of lists of numbers passes."""
    match = _SELECTIONS.match(text)
    body = match.group(1) if match else text.strip()
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError) as err:
        raise SurveyDataError(f"{where}selections is not a defaultdict/dict literal: "
                              f"{text[:80]!r}") from err
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list | tuple) for k, v in value.items()):
        raise SurveyDataError(f"{where}selections must map country names to lists, got "
                              f"{text[:80]!r}")
    out = {}
    for country, probs in value.items():
        if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in probs):
            raise SurveyDataError(f"{where}group {country!r}: non-numeric selections {probs!r}")
        out[country] = [float(p) for p in probs]
    return out


def question_key(text: str, options: tuple[str, ...]) -> str:
    """A stable key: the file has none, and one question text can appear with two option sets."""
    digest = hashlib.sha1("\x1f".join((text, *options)).encode("utf-8")).hexdigest()
    return f"GOQA_{digest[:12]}"


def load_globalopinionqa(path: str | Path) -> Survey:
    """Load a GlobalOpinionQA CSV (the full official file or a subset in its layout)."""
    path = Path(path)
    if path.is_dir():
        csvs = sorted(path.glob("*.csv"))
        if len(csvs) != 1:
            raise FileNotFoundError(f"{path}: expected one GlobalOpinionQA .csv, found "
                                    f"{[p.name for p in csvs]}")
        path = csvs[0]
    builder = SurveyBuilder("globalopinionqa")
    reader = read_csv(path)
    need = {"question", "selections", "options"}
    if not need <= set(reader.fieldnames or ()):
        raise SurveyDataError(f"file {str(path)!r}: missing columns "
                              f"{sorted(need - set(reader.fieldnames or ()))}")
    for line, row in enumerate(reader, start=2):
        where = f"file {str(path)!r}, line {line}: "
        try:
            options = tuple(str(o) for o in ast.literal_eval(row["options"]))
        except (ValueError, SyntaxError) as err:
            raise SurveyDataError(f"{where}options is not a literal list: "
                                  f"{row['options'][:80]!r}") from err
        refusals = tuple(o.strip().casefold() in REFUSAL_OPTIONS for o in options)
        n_answers = len(options) - sum(refusals)
        key = question_key(row["question"], options)
        question = Question(key, row["question"], options, refusals,
                            tuple(float(i + 1) for i in range(n_answers)))
        builder.add_question(question, str(path))
        keep = ~np.asarray(refusals)
        for country, probs in parse_selections(row["selections"], where).items():
            if len(probs) != len(options):
                raise SurveyDataError(f"{where}question {key!r}, group {country!r}: "
                                      f"{len(probs)} values for {len(options)} options "
                                      f"{list(options)}")
            answer = np.asarray(probs)[keep]
            if np.all(np.isfinite(probs)) and answer.sum() == 0 and sum(probs) > 0:
                builder.skipped.append(f"{country}/{key}")  # only refusals
                continue
            builder.add_answer(Group(country, "country"), key, answer, None,
                               f"{path}:{line}")
    return builder.build()
