"""Quiet commands: TensorFlow's and LiteRT's native libraries write to file descriptor 2 themselves, past any log
level ("Could not find cuda drivers" as TensorFlow loads, the TFLite converter's "fully_quantize: 0, ...",
LiteRT's "Created TensorFlow Lite XNNPACK delegate"). A command that runs quiet (no `--verbose`, no
TF_CPP_MIN_LOG_LEVEL of the user's own: `mnist_tf.cli.common.start_tensorflow`) sets QUIET_ENV, and the steps
that print such lines run inside `native_chatter_hidden`. Errors still reach the user, as Python exceptions."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# Set by a quiet command, so that the processes it starts (workers, the server) stay quiet too.
QUIET_ENV = "MNIST_TF_QUIET"


@contextlib.contextmanager
def stderr_closed() -> Iterator[None]:
    """File descriptor 2 points at /dev/null within the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def native_chatter_hidden() -> contextlib.AbstractContextManager:
    """`stderr_closed()` when the command runs quiet, else nothing."""
    return stderr_closed() if os.environ.get(QUIET_ENV) else contextlib.nullcontext()
