"""The `mnist-tf` command line: parsing and messages only; the work is in the library.

One module per command, each a thin layer over one library call
(docs/design.md lists them). TensorFlow is imported inside each command, so
`--help` answers at once.
"""

from mnist_tf.cli import benchmark, evaluate, export, predict, serve, train  # noqa: F401  (registers the commands)
from mnist_tf.cli.common import main

__all__ = ["main"]
