#!/usr/bin/env bash
# GPU check: trains the default model on an NVIDIA GPU with XLA and mixed precision, then prints
# training images/s and test accuracy. Run it from anywhere on a machine with a GPU and its driver:
#
#   benchmarks/gpu_check.sh                       # bfloat16, 3 epochs
#   PRECISION=float16 EPOCHS=6 benchmarks/gpu_check.sh
#
# It creates (once) a separate venv, .venv-gpu, with this package and tensorflow[and-cuda] (TensorFlow's
# pip-installed CUDA and cuDNN libraries), so the CPU venv stays as it is. MNIST comes from MANUAL_DIR
# (default ../shared/datasets/mnist) when that folder exists, else TFDS downloads it.
# Written without a GPU at hand: check the first run's output. --mixed-precision is the train option
# from the mixed-precision change; this script needs it.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
PRECISION=${PRECISION:-bfloat16}   # float16 for GPUs before Ampere
EPOCHS=${EPOCHS:-3}
RUN_DIR=${RUN_DIR:-runs/gpu-check}
MANUAL_DIR=${MANUAL_DIR:-../shared/datasets/mnist}
PYTHON=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L | grep -q "^GPU"; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L lists none); nothing to check" >&2
  exit 1
fi
nvidia-smi -L

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# The same TensorFlow range as pyproject.toml, with the CUDA libraries as pip packages.
"$VENV/bin/python" -m pip install --quiet -e . "tensorflow[and-cuda]>=2.20,<2.22"

"$VENV/bin/python" - <<'PY'
import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__} sees {len(gpus)} GPU(s): {[g.name for g in gpus]}")
if not gpus:
    raise SystemExit("gpu_check: TensorFlow sees no GPU: check the driver (nvidia-smi) and tensorflow[and-cuda]")
PY

manual=()
if [ -d "$MANUAL_DIR" ]; then
  manual=(--manual-dir "$MANUAL_DIR")
fi
"$VENV/bin/mnist-tf" train --preset default --epochs "$EPOCHS" --jit on --mixed-precision "$PRECISION" \
  --run-dir "$RUN_DIR" --overwrite ${manual[@]+"${manual[@]}"}

"$VENV/bin/python" - "$RUN_DIR/metrics.json" <<'PY'
import json
import sys

m = json.load(open(sys.argv[1]))
if m["device"] != "GPU" or not m["jit_compile"]:
    raise SystemExit(f"gpu_check: the run used {m['device']} with jit_compile={m['jit_compile']}, not GPU with XLA")
print(
    f"gpu_check: {m['train_images_per_second']:.0f} images/s over {m['epochs']} epochs "
    f"({m['train_seconds']:.1f} s of fit, XLA compilation included), "
    f"test accuracy {m['test_accuracy']:.2%}, test loss {m['test_loss']:.4f}, "
    f"{m['strategy']} strategy on {m['replicas']} replica(s), TensorFlow {m['versions']['tensorflow']}"
)
PY
