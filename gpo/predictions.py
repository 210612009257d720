"""What predict() returns: per question, the predicted distribution over its options with a
std per option; printable, and convertible to one row per (question, option)."""

from __future__ import annotations

import dataclasses

import numpy as np


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


class RecordList(list):
    """A list of results that `records()` turns into rows (dicts) and `to_frame()` into a
    pandas DataFrame."""

    def records(self) -> list[dict]:
        raise NotImplementedError

    def to_frame(self):
        """A pandas DataFrame of `records()` (pandas is optional: `pip install pandas`)."""
        try:
            import pandas
        except ImportError as err:
            raise ImportError("to_frame() needs pandas (pip install pandas); records() gives "
                              "the same rows as dicts") from err
        return pandas.DataFrame(self.records())


class Predictions(RecordList):
    """The predictions of one predict() call: a list of `Prediction`, printable, and
    convertible to one row per (question, option)."""

    def records(self) -> list[dict]:
        return [{"question": p.question, "key": p.key, "option": option,
                 "prob": round(float(prob), 6), "std": round(float(std), 6)}
                for p in self for option, prob, std in zip(p.options, p.probs, p.std)]

    def __str__(self) -> str:
        return "\n\n".join(str(p) for p in self)
