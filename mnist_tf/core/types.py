"""Types that several layers share: a probabilities (or logits) function and a prediction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

# A probability function: uint8 images [N,28,28,1] -> float probabilities [N,C], C classes (10 for MNIST).
ProbaFn = Callable[[np.ndarray], np.ndarray]
# A classify function: the same images -> (probabilities [N,C], declined [N] bool: not a digit, `DECLINE_BELOW`).
ClassifyFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# A logits function: the same images -> the network's logits [N,C], before any softmax (an array or a tensor).
LogitsFn = Callable[[np.ndarray], Any]

# An answer whose (calibrated) top probability is below this is flagged "not sure": such an answer is
# wrong more than one time in ten (docs/serving.md, "Calibrated probabilities and not sure"). The page
# (serve/static/app.js) uses the same number.
SURE = 0.9

# A model trained with non-digits (`Config.non_digits`) declines a picture as "not a digit" when the evidence for
# every class is weak: when logsumexp(logits / T), the log of the summed calibrated exponentiated logits (minus the
# "energy" of Liu et al., 2020), is below this. A model trained to be unsure of non-digits gives them small
# logits for every class; the top probability alone cannot tell that from a digit torn between two classes,
# which has one or two large logits. Chosen on held-out pictures (docs/person-made.md, "Not a digit"). Kept with
# the model (calibration.json's `decline_evidence_below`), so a model trained without non-digits never declines.
DECLINE_BELOW = 3.35
DECLINED = "not a digit (it looks like none of 0-9): pass a picture of one digit"


@dataclasses.dataclass
class Prediction:
    """The class of one image file, or why it could not be classified.

    `digit` is the class number (named so since MNIST's classes are digits); `class_name` its name."""

    file: str
    digit: int | None = None
    probability: float | None = None
    probabilities: list[float] | None = None
    error: str | None = None
    class_name: str | None = None  # the data set's name of class `digit`, e.g. "Sneaker"; None when unknown
    # The 28x28 uint8 input the model saw, for `plots.what_the_model_saw`; not part of the JSON.
    image: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def sure(self) -> bool | None:
        """Whether the top probability reaches `SURE`; None without an answer."""
        return None if self.probability is None else self.probability >= SURE

    def to_dict(self) -> dict[str, Any]:
        fields = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "image" and getattr(self, f.name) is not None
        }
        return fields if self.sure is None else {**fields, "sure": self.sure}

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.file}: error: {self.error}"
        name = self.class_name if self.class_name is not None else str(self.digit)
        return f"{self.file}: {name} ({self.probability:.1%}{'' if self.sure else ', not sure'})"
