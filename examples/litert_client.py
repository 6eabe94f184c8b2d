"""Classify a picture of a digit on a device, with LiteRT only (no TensorFlow, no mnist-tf).

The export folder's tflite/ holds the classifiers and `mnist_preprocess.tflite`, the
same preprocessing the SavedModel's `serving_bytes` signature runs (find the digit,
crop it, fit it to 20x20, centre it in 28x28). A phone app does the same three steps
with its own image decoder and the LiteRT runtime for Android or iOS:

    python examples/litert_client.py export/tflite photo.jpg [more pictures...]

Needs: pip install ai-edge-litert numpy pillow
"""

import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def runner(path: Path, signature: str):
    return Interpreter(model_path=str(path)).get_signature_runner(signature)


def main(tflite_dir: str, *pictures: str) -> int:
    folder = Path(tflite_dir)
    preprocess = runner(folder / "mnist_preprocess.tflite", "preprocess")
    classify = runner(folder / "mnist_int8.tflite", "serving_default")
    failed = 0
    for name in pictures:
        # 1. Decode: any picture, as float RGBA in [0, 1] (transparent pixels keep their alpha).
        pixels = np.asarray(Image.open(name).convert("RGBA"), np.float32) / 255
        # 2. Preprocess: MNIST's 28x28 form, or `blank` when there is no digit.
        prepared = preprocess(pixels=pixels)
        if prepared["blank"]:
            print(f"{name}: error: no digit found")
            failed += 1
            continue
        # 3. Classify: uint8 pixels [1,28,28,1] -> probabilities [1,10].
        probabilities = classify(image=prepared["image"][None])["probabilities"][0]
        print(f"{name}: {int(probabilities.argmax())} ({float(probabilities.max()):.1%})")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
