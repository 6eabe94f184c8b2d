"""PNG reports: learning curves, confusion matrix, worst mistakes, TFLite trade-offs, what the model saw.

Matplotlib runs headless (Agg) and every figure is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mnist_tf.core.files import atomic_path
from mnist_tf.evaluation.metrics import Evaluation


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path, "the plot") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def reliability_diagram(evaluation: Evaluation, path: Path) -> Path:
    """Accuracy against confidence in 15 bins beside the diagonal a calibrated model follows, and how many
    predictions fall in each bin."""
    rows = evaluation.reliability()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centres = [(r["low"] + r["high"]) / 2 for r in rows]
    width = rows[0]["high"] - rows[0]["low"]
    filled = [r for r in rows if r["count"]]
    top.bar(centres, [r["accuracy"] for r in rows], width=width * 0.9, color="tab:blue", label="accuracy")
    top.plot(
        [r["confidence"] for r in filled],
        [r["accuracy"] for r in filled],
        "o",
        color="tab:orange",
        ms=4,
        label="mean confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    top.set_ylabel("accuracy")
    top.set_title(f"reliability: expected calibration error {evaluation.calibration_error():.2%}")
    top.legend(loc="upper left")
    bottom.bar(centres, [r["count"] for r in rows], width=width * 0.9, color="tab:grey")
    bottom.set_yscale("log")
    bottom.set_xlabel("top probability (confidence)")
    bottom.set_ylabel("predictions")
    bottom.set_xlim(0, 1)
    return _save(fig, path)


def learning_curves(history: dict[str, Sequence[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training vs validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(evaluation: Evaluation, path: Path) -> Path:
    """Counts of true vs predicted class; the diagonal is correct."""
    cm = evaluation.confusion
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    # Log colour scale, so that a handful of errors shows next to ~1,000 correct.
    im = ax.imshow(np.log1p(cm), cmap="Blues")
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            if cm[t, p]:
                colour = "white" if cm[t, p] > cm.max() / 3 else "black"
                ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(cm.shape[1]))
    ax.set_yticks(range(cm.shape[0]))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (accuracy {evaluation.accuracy:.2%}, n={len(evaluation.labels):,})")
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    return _save(fig, path)


def misclassified(evaluation: Evaluation, images: np.ndarray, path: Path, limit: int = 36) -> Path:
    """A grid of the most confident mistakes: true label, prediction, confidence."""
    wrong = np.flatnonzero(evaluation.predictions != evaluation.labels)
    confidence = evaluation.probabilities.max(axis=1)
    worst = wrong[np.argsort(-confidence[wrong])][:limit]
    cols = 6
    rows = max(1, int(np.ceil(len(worst) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst):
        ax.imshow(images[i].squeeze(), cmap="gray_r")
        ax.set_title(f"true {evaluation.labels[i]} pred {evaluation.predictions[i]}\n{confidence[i]:.0%}", fontsize=8)
    title = f"{len(worst)} most confident of {len(wrong)} mistakes" if len(wrong) else "no mistakes"
    fig.suptitle(title)
    return _save(fig, path)


def tflite_report(rows: Sequence[dict], path: Path) -> Path:
    """Size vs accuracy vs batch-1 latency for each model variant."""
    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    for ax, key, label in (
        (axes[0], "size_bytes", "size (KiB)"),
        (axes[1], "accuracy", "test accuracy (%)"),
        (axes[2], "latency_ms", "batch-1 latency (ms)"),
    ):
        values = [r[key] for r in rows]
        if key == "size_bytes":
            values = [v / 1024 for v in values]
        if key == "accuracy":
            values = [v * 100 for v in values]
        bars = ax.bar(names, values, color="tab:blue")
        ax.bar_label(bars, fmt={"size_bytes": "%.0f", "accuracy": "%.2f"}.get(key, "%.3f"), fontsize=8)
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
        if key == "accuracy":
            low = min(values)
            ax.set_ylim(max(0, low - 1), 100)
    fig.suptitle("Model variants: size, accuracy, latency")
    return _save(fig, path)


def time_to_accuracy(accuracy: dict[str, dict], path: Path) -> Path:
    """Test accuracy after each epoch against training seconds, one line per run."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (name, summary) in zip(colors, accuracy.items()):
        for i, run in enumerate(r for r in summary["runs"] if "curve" in r):
            seconds = [p["seconds"] for p in run["curve"]]
            values = [100 * p["test_accuracy"] for p in run["curve"]]
            ax.plot(seconds, values, marker=".", color=color, alpha=0.8, label=name if i == 0 else None)
    for target in (99.0, 99.5, 99.6):
        ax.axhline(target, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_ylim(98.0, 100.0)
    ax.set_xlabel("training seconds (fit wall time, log scale)")
    ax.set_ylabel("test accuracy after the epoch (%)")
    ax.set_title("Time to accuracy, one line per seed")
    ax.legend()
    return _save(fig, path)


def what_the_model_saw(
    rows: Sequence[tuple[str, np.ndarray | None, np.ndarray | None, str]], path: Path, per_row: int = 3
) -> Path:
    """Each picture as given beside the 28x28 the model received and its answer, `per_row` pairs a row.

    `rows` holds (title, picture [H,W] or [H,W,C] in [0,1] or None, model input [28,28(,1)] or None, answer).
    """
    columns = min(per_row, len(rows))
    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, 2 * columns, figsize=(2.6 * 2 * columns, 2.6 * lines), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (title, picture, seen, answer) in enumerate(rows):
        left, right = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        if picture is not None:
            left.imshow(_on_checkerboard(np.asarray(picture, np.float32)), cmap="gray", vmin=0, vmax=1)
        left.set_title(title if len(title) <= 26 else "..." + title[-23:], fontsize=8)
        if seen is not None:
            right.imshow(np.asarray(seen).reshape(28, 28), cmap="gray", vmin=0, vmax=255)
        right.set_title(f"model saw: {answer}", fontsize=9)
        left.set_axis_on()
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
        right.set_axis_on()
    fig.tight_layout()
    return _save(fig, path)


def _on_checkerboard(picture: np.ndarray) -> np.ndarray:
    """Grey [H,W] or colour [H,W,3] for imshow; transparency shown over a checkerboard."""
    if picture.ndim == 3 and picture.shape[-1] in (2, 4):
        h, w = picture.shape[:2]
        board = 0.75 + 0.15 * (((np.arange(h)[:, None] // 8) + (np.arange(w)[None, :] // 8)) % 2)
        alpha = picture[..., -1:]
        picture = picture[..., :-1] * alpha + board[..., None] * (1 - alpha)
    return picture[..., 0] if picture.ndim == 3 and picture.shape[-1] == 1 else picture
