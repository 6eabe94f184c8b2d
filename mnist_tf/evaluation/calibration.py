"""Temperature scaling: probabilities that mean what they say.

A network trained with label smoothing is underconfident: its "89%" answers are
right almost always. Dividing its logits by one number, the temperature T, before
the softmax fixes most of that (Guo et al., 2017, "On Calibration of Modern Neural
Networks"): T < 1 sharpens the probabilities, T > 1 softens them, and the class
with the highest probability stays the same.

T is fitted here, in numpy, by minimising the negative log-likelihood of held-out
labels: a search over log T, first on a grid, then by golden-section search
around the grid's best point. The negative log-likelihood is convex in 1/T, so it
has one minimum and the search is deterministic.

`mnist-tf train` fits T at the end of a run and writes it to the run dir's
calibration.json (`core.rundir.CALIBRATION`); every path that turns logits into
probabilities (Keras, the SavedModel, TFLite, the server) divides by it. A model
without the file has T = 1: its probabilities are the plain softmax.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core.errors import UserError
from mnist_tf.core.files import write_json
from mnist_tf.evaluation.metrics import expected_calibration_error

# The temperatures searched: far beyond any a trained network needs, so a fit at a bound means a degenerate set
# (every example right with a wide margin drives T towards 0).
LOWEST, HIGHEST = 0.05, 20.0
GRID_POINTS = 61  # on log T: steps of about 0.1, so the grid's best point brackets the minimum
TOLERANCE = 1e-6  # golden-section search stops when the bracket of log T is this narrow
_GOLDEN = (math.sqrt(5) - 1) / 2


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) along the last axis, in float64."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def evidence(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """logsumexp(logits / temperature) along the last axis, in float64: how much the logits say for any class at
    all. A picture is declined as not a digit when this is low (`core.types.DECLINE_BELOW`)."""
    scaled = np.asarray(logits, np.float64) / temperature
    top = scaled.max(axis=-1)
    return np.log(np.exp(scaled - top[..., None]).sum(axis=-1)) + top


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """The mean -log p(label) of softmax(logits / temperature), computed stably."""
    scaled = np.asarray(logits, np.float64) / temperature
    return float((evidence(scaled) - scaled[np.arange(len(scaled)), np.asarray(labels)]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [LOWEST, HIGHEST] that minimises the negative log-likelihood of `labels`."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one example")

    def loss(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, math.exp(log_t))

    grid = np.linspace(math.log(LOWEST), math.log(HIGHEST), GRID_POINTS)
    best = int(np.argmin([loss(g) for g in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)]
    # Golden-section search: shrink [low, high] around the minimum, keeping one inner point each step.
    a, b = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > TOLERANCE:
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - _GOLDEN * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + _GOLDEN * (high - low)
            loss_b = loss(b)
    return float(math.exp((low + high) / 2))


# The share of the calibration images (digits) a model's decline threshold may decline at most (`calibrate`):
# half the 1% of real digits a decline may cost.
DECLINE_AT_MOST = 0.005


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A fitted temperature and how well it does on the examples it was fitted on: calibration.json."""

    temperature: float
    fitted_on: str  # which images, e.g. "the validation split (train[55000:])"
    held_out: bool  # False when the images were also trained on: the fit is then less trustworthy
    examples: int
    ece_before: float  # expected calibration error (15 bins) with T = 1 ...
    ece_after: float  # ... and with the fitted T
    nll_before: float  # negative log-likelihood with T = 1 ...
    nll_after: float  # ... and with the fitted T
    # The `evidence` (with T) below which a picture is declined as not a digit (`core.types.DECLINE_BELOW`);
    # None: the model never declines (it was not trained with non-digits).
    decline_evidence_below: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def calibrate(
    logits: np.ndarray, labels: np.ndarray, fitted_on: str, held_out: bool, decline_below: float | None = None
) -> Calibration:
    """Fits a temperature on `logits` [N,C] and integer `labels` [N], and scores it there.

    With `decline_below` (a model that declines non-digits), the threshold kept is at most that, and low
    enough that no more than `DECLINE_AT_MOST` of these images, digits all, would be declined: a weaker model
    (a short run) is less sure of real digits, and declines fewer pictures rather than more of them."""
    temperature = fit_temperature(logits, labels)
    if decline_below is not None:
        lowest = float(np.quantile(evidence(logits, temperature), DECLINE_AT_MOST))
        decline_below = min(decline_below, math.floor(lowest * 1e4) / 1e4)
    return Calibration(
        temperature=temperature,
        fitted_on=fitted_on,
        held_out=held_out,
        examples=len(labels),
        ece_before=expected_calibration_error(softmax(logits), labels),
        ece_after=expected_calibration_error(softmax(logits, temperature), labels),
        nll_before=negative_log_likelihood(logits, labels),
        nll_after=negative_log_likelihood(logits, labels, temperature),
        decline_evidence_below=decline_below,
    )


def write(path: Path, calibration: Calibration) -> None:
    """Writes calibration.json atomically: a reader sees the whole file or none."""
    write_json(path, calibration.to_dict(), "the model's calibration")


def read(path: Path) -> dict[str, Any] | None:
    """calibration.json as a dict (other keys than `Calibration`'s are kept); None when there is no such file.

    A file that is not JSON, or whose temperature is not a positive number, is refused in one line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _unreadable(path, e) from None
    return parse(text, path)


def parse(text: str | bytes, source: Path | str) -> dict[str, Any]:
    """A calibration.json's content (from a file or a TFLite model's metadata, `source`) as a dict, checked as
    `read` checks it."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise _unreadable(source, e) from None
    temperature = data.get("temperature") if isinstance(data, dict) else None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise UserError(
            f"the calibration {source} has no positive temperature (found {temperature!r}): delete it to use the "
            "model's plain probabilities, or train the run again"
        )
    return data


def _unreadable(source: Path | str, e: Exception) -> UserError:
    return UserError(
        f"cannot read the calibration {source} ({type(e).__name__}): delete it to use the model's plain "
        "probabilities, or train the run again"
    )


def temperature(data: dict[str, Any] | None) -> float:
    """The temperature in a calibration's content (`read`, `parse`); 1.0 (the plain softmax) where there is none."""
    return float(data["temperature"]) if data is not None else 1.0


def decline_below(data: dict[str, Any] | None) -> float | None:
    """The decline threshold in a calibration's content (`read`, `parse`): the `evidence` below which a picture is
    not a digit; None where there is none."""
    value = (data or {}).get("decline_evidence_below")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
