"""Types that several layers share: a probabilities function and a prediction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

# A probability function: uint8 images [N,28,28,1] -> float probabilities [N,10].
ProbaFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Prediction:
    """The class of one image file, or why it could not be classified."""

    file: str
    digit: int | None = None
    probability: float | None = None
    probabilities: list[float] | None = None
    error: str | None = None
    # The 28x28 uint8 input the model saw, for `plots.what_the_model_saw`; not part of the JSON.
    image: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "image" and getattr(self, f.name) is not None
        }

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.file}: error: {self.error}"
        return f"{self.file}: {self.digit} ({self.probability:.1%})"
