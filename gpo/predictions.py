"""What predict() returns: per question, the predicted distribution over its options with a
std per option and, where the run is calibrated, intervals with stated coverage
(`gpo.intervals`); printable, and convertible to one row per (question, option)."""

from __future__ import annotations

import dataclasses

import numpy as np

from gpo.intervals import DEFAULT_LEVEL, Bands, check_level

NO_CALIBRATION = ("this run has no interval calibration (it was made before gpo calibrated "
                  "intervals, or held out no validation groups); `gpo calibrate --run-dir RUN` "
                  "makes one")


@dataclasses.dataclass(frozen=True)
class Prediction:
    question: str                # the question's text (or its key, or "question i")
    options: tuple[str, ...]
    probs: np.ndarray            # sums to 1 over options
    std: np.ndarray              # the model's predictive std per option
    key: str | None = None       # the survey key, when the question was given by key
    ordinals: tuple[float, ...] | None = None  # the options' ordinal positions
    bands: Bands | None = None   # the group's calibrated interval rule (None: uncalibrated)

    @property
    def calibrated(self) -> bool:
        return self.bands is not None

    def interval(self, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per option: the range that holds the group's answer with probability
        `level` (see `gpo.intervals` for what that guarantee assumes), within [0, 1]."""
        if self.bands is None:
            raise ValueError(NO_CALIBRATION)
        return self.bands.option_intervals(self.probs, self.std, level)

    @property
    def mean_position(self) -> float | None:
        """The predicted mean ordinal position of the answers (for a scale question: its
        average answer, options numbered by their ordinal positions)."""
        if self.ordinals is None:
            return None
        return float(np.dot(self.probs, self.ordinals))

    def mean_interval(self, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
        """(low, high) of the mean ordinal position at `level` (None without ordinals)."""
        if self.bands is None:
            raise ValueError(NO_CALIBRATION)
        if self.ordinals is None:
            return None
        return self.bands.mean_interval(self.probs, self.std, np.asarray(self.ordinals),
                                        level)

    def as_dict(self, level: float = DEFAULT_LEVEL) -> dict:
        out = {"question": self.question, "key": self.key, "options": list(self.options),
               "probs": _rounded(self.probs), "std": _rounded(self.std)}
        if self.ordinals is not None:
            out["mean_position"] = round(self.mean_position, 6)
        if self.calibrated:
            low, high = self.interval(level)
            out["interval"] = {"level": level, "low": _rounded(low), "high": _rounded(high)}
            if self.ordinals is not None:
                out["mean_interval"] = {"level": level,
                                        **dict(zip(("low", "high"),
                                                   _rounded(self.mean_interval(level))))}
        return out

    def format(self, level: float = DEFAULT_LEVEL) -> str:
        width = max(len(o) for o in self.options)
        if not self.calibrated:
            return "\n".join([self.question] + [f"  {o:<{width}}  {p:6.1%}"
                                                 for o, p in zip(self.options, self.probs)])
        low, high = self.interval(level)
        lines = [f"{self.question}", f"  {'':<{width}}  {'':>6}  {level:.0%} interval"]
        lines += [f"  {o:<{width}}  {p:6.1%}  {lo:5.1%} – {hi:5.1%}"
                  for o, p, lo, hi in zip(self.options, self.probs, low, high)]
        if self.ordinals is not None and len(self.options) > 2:
            lo, hi = self.mean_interval(level)
            lines.append(f"  mean position {self.mean_position:.2f} on "
                         f"{min(self.ordinals):g}–{max(self.ordinals):g} "
                         f"({lo:.2f} – {hi:.2f})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _rounded(values) -> list[float]:
    return [round(float(v), 6) for v in values]


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
    convertible to one row per (question, option), with intervals at `level` where the run
    is calibrated (`intervals(level)`: the same predictions at another level)."""

    def __init__(self, predictions=(), level: float = DEFAULT_LEVEL):
        super().__init__(predictions)
        self.level = check_level(level)

    def intervals(self, level: float) -> Predictions:
        """These predictions with their intervals at `level` (e.g. 0.8, 0.95)."""
        return Predictions(self, level)

    @property
    def calibrated(self) -> bool:
        return bool(self) and all(p.calibrated for p in self)

    def records(self) -> list[dict]:
        rows = []
        for p in self:
            low, high = p.interval(self.level) if p.calibrated else (None, None)
            for i, (option, prob, std) in enumerate(zip(p.options, p.probs, p.std)):
                row = {"question": p.question, "key": p.key, "option": option,
                       "prob": round(float(prob), 6), "std": round(float(std), 6)}
                if low is not None:
                    row.update(level=self.level, low=round(float(low[i]), 6),
                               high=round(float(high[i]), 6))
                rows.append(row)
        return rows

    def __str__(self) -> str:
        text = "\n\n".join(p.format(self.level) for p in self)
        if self and not self.calibrated:
            text += f"\n\n(no intervals: {NO_CALIBRATION})"
        return text
