"""Operating points: a decision threshold chosen on val, reported on test. Never a silent 0.5.

For a chosen positive class the score is its probability: one-vs-rest for a softmax run,
and for a BCE run the sigmoid of its single logit (the ``prob/<positive>`` column; a
threshold on it is the same decision as a threshold on the logit, ``logit_threshold``). An image is called
positive when its score is at least the threshold. Rules:

- ``sensitivity``: the highest threshold that keeps sensitivity on val at or above the
  target (default 0.95): the k-th highest positive score, k = ceil(target x positives);
- ``specificity``: the lowest threshold that keeps specificity on val at or above the
  target: just above the k-th lowest negative score;
- ``youden``: the threshold maximising sensitivity + specificity - 1 on val.

The threshold is applied as it is to the test split: sensitivity, specificity, PPV, NPV and
the 2x2 confusion matrix there, beside the same numbers on val.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError

RULES = ("sensitivity", "specificity", "youden")
DEFAULT_TARGET = 0.95


@dataclass(frozen=True)
class Confusion:
    """Counts and rates at one threshold (positive = the chosen class)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return _ratio(self.tn, self.tn + self.fn)

    @property
    def matrix(self) -> list[list[int]]:
        """Rows = true (negative, positive), columns = called (negative, positive)."""
        return [[self.tn, self.fp], [self.fn, self.tp]]

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "sensitivity": _none(self.sensitivity),
            "specificity": _none(self.specificity),
            "ppv": _none(self.ppv),
            "npv": _none(self.npv),
            "confusion_matrix": self.matrix,
        }


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def _none(x: float) -> float | None:
    return None if x != x else float(x)


def confusion_at(y: np.ndarray, score: np.ndarray, threshold: float) -> Confusion:
    """``y``: 1 for the positive class, 0 for the rest."""
    y = np.asarray(y, dtype=bool)
    called = np.asarray(score, dtype=np.float64) >= threshold
    return Confusion(
        tp=int((called & y).sum()),
        fp=int((called & ~y).sum()),
        tn=int((~called & ~y).sum()),
        fn=int((~called & y).sum()),
    )


def choose_threshold(
    y: np.ndarray, score: np.ndarray, rule: str = "sensitivity", target: float = DEFAULT_TARGET
) -> float:
    """The threshold ``rule`` picks on these labels and scores (see the module docstring)."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if rule not in RULES:
        raise ConfigError(f"operating point rule {rule!r} unknown; valid: {', '.join(RULES)}")
    if y.all() or not y.any():
        raise ConfigError(
            "an operating point needs positive and negative images on val; it has only one kind"
        )
    if rule != "youden" and not 0 < target <= 1:
        raise ConfigError(f"target {rule} must be in (0, 1], got {target}")
    if rule == "sensitivity":
        pos = np.sort(score[y])[::-1]
        k = max(1, math.ceil(target * len(pos) - 1e-9))
        return float(pos[k - 1])
    if rule == "specificity":
        neg = np.sort(score[~y])
        k = max(1, math.ceil(target * len(neg) - 1e-9))
        return float(np.nextafter(neg[k - 1], np.inf))
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, score)
    finite = np.isfinite(thresholds)  # the first threshold (inf) calls nothing positive
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


@dataclass
class OperatingPoint:
    positive_class: str
    rule: str
    target: float | None
    threshold: float
    chosen_on: str
    val: Confusion
    result: Confusion  # on the evaluated split
    split: str
    single_logit: bool = False

    @property
    def logit_threshold(self) -> float | None:
        """The threshold as log-odds of P(positive): for a BCE run (positive = its second
        class) the same decision on the raw logit, for a two-class softmax run on the
        difference of the logits. None for more classes."""
        t = min(max(self.threshold, 1e-12), 1 - 1e-12)
        return math.log(t / (1 - t)) if self.single_logit else None

    @property
    def description(self) -> str:
        if self.rule == "youden":
            rule = f"the best Youden's J on {self.chosen_on}"
        else:
            rule = f"{self.rule} >= {self.target:g} on {self.chosen_on}"
        return (
            f"{self.positive_class} if P({self.positive_class}) >= {self.threshold:.4g} (chosen for {rule})"
        )

    def to_json(self) -> dict[str, Any]:
        """The evaluate contract's keys (the evaluated split's rates) and the details."""
        r = self.result
        return {
            "threshold": self.threshold,
            "sensitivity": _none(r.sensitivity),
            "specificity": _none(r.specificity),
            "ppv": _none(r.ppv),
            "npv": _none(r.npv),
            "chosen_on": self.chosen_on,
            "positive_class": self.positive_class,
            "rule": self.rule,
            "target": self.target,
            "split": self.split,
            "confusion_matrix": r.matrix,
            "val": self.val.to_json(),
            "logit_threshold": self.logit_threshold,
            "description": self.description,
        }

    def table(self) -> pd.DataFrame:
        """Rows: val and the evaluated split; columns: n, sensitivity, specificity, ppv, npv,
        tp, fp, tn, fn."""
        rows = []
        for name, c in ((self.chosen_on, self.val), (self.split, self.result)):
            rows.append(
                {
                    "split": name,
                    "n": c.n,
                    "sensitivity": c.sensitivity,
                    "specificity": c.specificity,
                    "ppv": c.ppv,
                    "npv": c.npv,
                    **asdict(c),
                }
            )
        return pd.DataFrame(rows).drop_duplicates("split")


def default_positive(classes: Sequence[str]) -> str:
    """The second class: a two-class task's positive, and for more classes the first after
    the "normal"-like one (tasks put negative-sounding names first)."""
    return str(classes[1]) if len(classes) > 1 else str(classes[0])


def positive_scores(df: pd.DataFrame, classes: Sequence[str], positive: str) -> tuple[np.ndarray, np.ndarray]:
    """``(is positive, score)`` of a predictions table for one positive class."""
    if positive not in classes:
        raise ConfigError(
            f"positive class {positive!r} is not a class of this run; valid: {', '.join(classes)}"
        )
    y = df["target"].to_numpy() == list(classes).index(positive)
    return y, df[f"prob/{positive}"].to_numpy(dtype=np.float64)


def operating_point(
    val: pd.DataFrame,
    evaluated: pd.DataFrame,
    classes: Sequence[str],
    *,
    positive: str | None = None,
    rule: str = "sensitivity",
    target: float = DEFAULT_TARGET,
    split: str = "test",
    single_logit: bool = False,
) -> OperatingPoint:
    """Choose the threshold on ``val`` predictions, report it on ``evaluated`` (the split
    named ``split``); both are predictions tables (``target``, ``prob/<class>``)."""
    positive = positive or default_positive(classes)
    yv, sv = positive_scores(val, classes, positive)
    threshold = choose_threshold(yv, sv, rule, target)
    ye, se = positive_scores(evaluated, classes, positive)
    return OperatingPoint(
        positive_class=positive,
        rule=rule,
        target=None if rule == "youden" else float(target),
        threshold=threshold,
        chosen_on="val",
        val=confusion_at(yv, sv, threshold),
        result=confusion_at(ye, se, threshold),
        split=split,
        single_logit=single_logit,
    )
