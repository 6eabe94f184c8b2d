"""The choice lists and defaults the CLI offers, defined once.

This module imports nothing, so the CLI lists the choices in `--help`
without loading TensorFlow.
"""

# Config fields with a fixed set of values.
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
MIXED_PRECISION = ("auto", "off", "float16", "bfloat16")
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "mixed_precision": MIXED_PRECISION}

# Command options.
TFLITE_KINDS = ("float32", "dynamic_range", "float16", "int8")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
BENCHMARK_PARTS = ("peak", "throughput", "accuracy", "inference", "serve", "compare")

# The export's accuracy gate: training images that calibrate int8, and how many points of
# test accuracy a TFLite variant may lose against the Keras model.
CALIBRATION_EXAMPLES = 500
MAX_ACCURACY_DROP_POINTS = 0.5

# The TFDS data sets `--dataset` names (any other value is a folder of IDX archives); the first is the default.
DATASETS = ("mnist", "fashion_mnist", "kmnist", "emnist/digits", "emnist/mnist")
DEFAULT_DATASET = DATASETS[0]
