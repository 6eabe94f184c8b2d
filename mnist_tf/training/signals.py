"""Ctrl-C and SIGTERM stopping a training reliably, each as a KeyboardInterrupt."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as after Ctrl-C, but exit with 143 (128 + SIGTERM)."""

    exit_code = 128 + signal.SIGTERM


# The interrupt the last SIGINT or SIGTERM raised, until it is known to have surfaced.
_pending: KeyboardInterrupt | None = None


def _raise_interrupt(signum: int, frame: object) -> None:
    global _pending
    _pending = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    raise _pending


def raise_pending() -> None:
    """Raises the interrupt a signal raised, again, if it has not stopped the block yet.

    Python raises a signal's exception in whatever the main thread runs at that
    moment; where that is TensorFlow's or Keras' code that catches and drops
    errors, a Ctrl-C vanished and training went on. Training calls this after
    every step (`callbacks.StopOnSignal`), so one Ctrl-C always stops it.
    """
    global _pending
    if _pending is not None:
        pending, _pending = _pending, None
        raise pending


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) raises KeyboardInterrupt and SIGTERM raises
    `Terminated`, a KeyboardInterrupt, so the code that handles Ctrl-C handles both; each
    is remembered for `raise_pending`. A SIGINT that is ignored (a background job) stays
    ignored. Does nothing outside the main thread (signals go there only)."""
    global _pending
    _pending = None
    try:
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous_int)
        _pending = None
