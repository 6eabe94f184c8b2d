"""Names, choice lists and defaults that several modules and the CLI share, each defined once here.

The tensor and signature names are the contract of every exported model: TF
Serving clients, TFLite apps and `mnist-tf serve` call them by these names.
This module imports nothing, so the CLI lists the choices in `--help`
without loading TensorFlow.
"""

# The model's input and output.
IMAGE_SHAPE = (28, 28, 1)  # uint8 pixels, a light digit on black, as in MNIST
NUM_CLASSES = 10
INPUT_NAME = "image"
LOGITS = "logits"
PROBABILITIES = "probabilities"
CLASS_ID = "class_id"

# The exported models: TF Serving's model name and the SavedModel's (and TFLite's) signatures.
MODEL_NAME = "mnist"
DEFAULT_SIGNATURE = "serving_default"  # MNIST-form pixels: INPUT_NAME
BYTES_SIGNATURE = "serving_bytes"  # encoded pictures: BYTES_INPUT_NAME
BYTES_INPUT_NAME = "image_bytes"

# Choices.
TFLITE_KINDS = ("float32", "dynamic_range", "float16", "int8")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
BENCHMARK_PARTS = ("peak", "throughput", "accuracy", "inference", "serve", "compare")

# The export's accuracy gate: training images that calibrate int8, and how many points of
# test accuracy a TFLite variant may lose against the Keras model.
CALIBRATION_EXAMPLES = 500
MAX_ACCURACY_DROP_POINTS = 0.5
