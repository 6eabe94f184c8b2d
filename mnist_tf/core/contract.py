"""The tensor contract of every exported model: its input, outputs, signatures and name, each defined once.

The tensor and signature names are the contract of every exported model: TF
Serving clients, TFLite apps and `mnist-tf serve` call them by these names.
This module imports nothing, so any layer may use it without loading TensorFlow.
"""

# The model's input and output.
IMAGE_SHAPE = (28, 28, 1)  # uint8 pixels, a light digit on black, as in MNIST
NUM_CLASSES = 10  # MNIST's; a model trained on another data set has as many as its data
INPUT_NAME = "image"
LOGITS = "logits"
NOT_A_DIGIT = "not_a_digit"  # bool [N]: declined, the evidence for every class is weak (`core.types.DECLINE_BELOW`)
PROBABILITIES = "probabilities"
CLASS_ID = "class_id"
CLASS_NAME = "class_name"  # the data set's name of the class, e.g. "7" or "Sneaker"
# The TFLite models' metadata entry holding the class names, UTF-8, one a line, class 0 first.
TFLITE_CLASS_NAMES = "class_names"
# The TFLite models' metadata entry holding a copy of the calibration.json whose temperature is in their graph.
TFLITE_CALIBRATION = "calibration"

# The exported models: TF Serving's model name and the SavedModel's (and TFLite's) signatures.
MODEL_NAME = "mnist"
DEFAULT_SIGNATURE = "serving_default"  # MNIST-form pixels: INPUT_NAME
BYTES_SIGNATURE = "serving_bytes"  # encoded pictures: BYTES_INPUT_NAME
BYTES_INPUT_NAME = "image_bytes"
