"""mnist-tf: train, evaluate and deploy a convolutional MNIST classifier with TensorFlow and Keras."""

__version__ = "0.1.0"
