"""What predict() returns: per question, the predicted distribution over its options with a
std per option and, where the run is calibrated, intervals with stated coverage
(`gpo.intervals`); printable, and convertible to one row per (question, option)."""

from __future__ import annotations

import dataclasses
import html

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

    def _repr_html_(self) -> str:
        """A notebook's view: one table, a row per option, its question's text heading it."""
        calibrated = self.calibrated
        head = "<th>option</th><th>predicted</th>" + (
            f"<th>{self.level:.0%} interval</th>" if calibrated else "")
        rows = []
        for p in self:
            span = 3 if calibrated else 2
            rows.append(f'<tr><th colspan="{span}" style="text-align:left">'
                        f"{html.escape(p.question)}</th></tr>")
            low, high = p.interval(self.level) if calibrated else (None, None)
            for i, (option, prob) in enumerate(zip(p.options, p.probs)):
                cells = f"<td>{html.escape(option)}</td><td>{prob:.1%}</td>"
                if calibrated:
                    cells += f"<td>{low[i]:.1%} – {high[i]:.1%}</td>"
                rows.append(f"<tr>{cells}</tr>")
        note = ("" if calibrated or not self
                else f"<p>No intervals: {html.escape(NO_CALIBRATION)}</p>")
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>{note}"


class LabelledWeights(np.ndarray):
    """Weights named by what they weigh (the training groups a reference-head group is fitted
    on, PAL's prototypes): a numpy array as ever (arithmetic, `.sum()`, `.round(2)`) that
    prints one `label  weight` line each, largest first; `w["POLPARTY=Democrat"]` reads one
    by its label and `dict(w.items())` gives them all."""

    def __new__(cls, values, labels):
        out = np.asarray(values).view(cls)
        out.labels = tuple(labels)
        if out.shape != (len(out.labels),):
            raise ValueError(f"{out.shape} weights for {len(out.labels)} labels")
        return out

    def __array_finalize__(self, obj):
        self.labels = getattr(obj, "labels", None)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        if array.ndim == 0:  # a sum or a mean is a number, not a weight
            return array[()]
        return super().__array_wrap__(array, context, return_scalar)

    def round(self, decimals: int = 0, out=None) -> LabelledWeights:
        return LabelledWeights(np.asarray(self).round(decimals), self.labels)

    def _labelled(self) -> bool:
        return self.labels is not None and self.ndim == 1 and len(self.labels) == len(self)

    def __getitem__(self, key):
        if isinstance(key, str):
            if not self._labelled() or key not in self.labels:
                raise KeyError(f"no weight labelled {key!r}; labels: {list(self.labels or [])}")
            return float(np.asarray(self)[self.labels.index(key)])
        return np.asarray(self)[key]  # positions: a plain array (its labels would not fit)

    def items(self) -> list[tuple[str, float]]:
        return list(zip(self.labels, map(float, np.asarray(self))))

    def __repr__(self) -> str:
        if not self._labelled() or self.dtype.kind != "f":
            return repr(np.asarray(self))
        width = max(map(len, self.labels), default=0)
        ranked = sorted(self.items(), key=lambda item: -item[1])
        return "\n".join(f"{label:<{width}}  {value + 0.0:+.4f}" for label, value in ranked)

    __str__ = __repr__
