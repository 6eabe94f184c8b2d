"""How a model is set up to train here: thread pools, the device, XLA, and `compile`."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from mnist_tf.config import Config
from mnist_tf.modeling.losses import DigitAccuracy, make_loss
from mnist_tf.modeling.optimizer import make_optimizer


def set_threads(threads: int | None = None, inter_op: int = 1) -> dict[str, int]:
    """Pins TensorFlow's thread pools; call before any TensorFlow op runs.

    intra-op = `threads` (default: every core), so one op, e.g. a convolution,
    uses all of them; inter-op = 1 by default, because this network is a chain
    of layers with little to run side by side, and a second pool would
    oversubscribe a small CPU (`mnist-tf train` uses the split `training.tuning`
    measured). tf.data keeps its own pool, one thread per core, for the input
    pipeline. Returns what was set.
    """
    threads = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # TensorFlow already started in this process (a notebook, a test): keep its pools.
        pass
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1,
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1,
        "tf_data": os.cpu_count() or 1,
    }


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit(cfg: Config, replicas: int = 1) -> bool:
    """XLA on GPU; off on CPU, where it measured slower (docs/performance.md, 'Why --jit is off on CPU').

    Also off, unless forced, with several replicas: Keras' own "auto" turns XLA off under
    tf.distribute, where it is less tested; `--jit on` still forces it.
    """
    return gpu_available() and replicas == 1 if cfg.jit is None else cfg.jit


def compile_model(model: keras.Model, cfg: Config, steps_per_epoch: int, replicas: int = 1) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=make_loss(cfg),
        # With non-digits in training (label -1), the accuracy is the digits' alone.
        metrics=[DigitAccuracy() if cfg.non_digits else keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=resolve_jit(cfg, replicas),
        steps_per_execution=cfg.steps_per_execution,
    )
    return model
