"""`tf.distribute` strategies: which one to use, and each process's role in it.

    default       one device (TensorFlow's default strategy)
    mirrored      synchronous data parallelism over this machine's GPUs (or,
                  with none, over its logical CPU devices: one unless configured)
    multi-worker  MultiWorkerMirroredStrategy over several processes or machines,
                  configured by the standard TF_CONFIG environment variable
    auto          mirrored when more than one GPU is visible, else default

`cfg.batch_size` is always the global batch: each step splits it over the
replicas, so a run means the same maths whatever the strategy. The learning
rate is not scaled with the number of replicas: it is the rate for the global
batch (docs/distributed.md, "Batch size and learning rate").

`Role` reads TF_CONFIG without TensorFlow, so a bad cluster spec is refused
before the strategy is made. `make_strategy` must run before any other
TensorFlow op in the process: MultiWorkerMirroredStrategy configures the
runtime's collective ops, which is only possible before it starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from mnist_tf.config.choices import STRATEGIES
from mnist_tf.core.errors import UserError

TF_CONFIG = "TF_CONFIG"
_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


@dataclasses.dataclass(frozen=True)
class Role:
    """This process's place in the cluster: the chief writes the run, others help."""

    task_type: str = "worker"
    index: int = 0
    num_workers: int = 1
    has_chief_task: bool = False  # TF_CONFIG names a "chief" task; else worker 0 is the chief.

    @property
    def is_chief(self) -> bool:
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.index == 0

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.index}"


def _bad_tf_config(why: str) -> UserError:
    return UserError(f"--strategy multi-worker needs a valid {TF_CONFIG} environment variable ({why}), e.g. {_EXAMPLE}")


def parse_tf_config(text: str | None) -> Role:
    """Validates a TF_CONFIG string and returns this task's `Role`; raises `UserError`."""
    if not text:
        raise _bad_tf_config("it is not set")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad_tf_config(f"not JSON: {e.msg} at character {e.pos}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise _bad_tf_config('it needs a "cluster" object and a "task" object')
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise _bad_tf_config(f"task types {', '.join(unknown)} are not used by this strategy: use chief and worker")
    for kind, addresses in cluster.items():
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and ":" in a for a in addresses)
        ):
            raise _bad_tf_config(f'cluster "{kind}" must be a non-empty list of "host:port" strings')
    if len(cluster.get("chief", [])) > 1:
        raise _bad_tf_config("a cluster has at most one chief")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise _bad_tf_config(f"task type {task_type!r} is not in the cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise _bad_tf_config(f"task index {index!r} is not in 0..{len(cluster[task_type]) - 1}")
    return Role(task_type, index, sum(len(a) for a in cluster.values()), "chief" in cluster)


def role(strategy: str) -> Role:
    """This process's `Role` under `strategy`: the only worker unless multi-worker."""
    check_name(strategy)
    return parse_tf_config(os.environ.get(TF_CONFIG)) if strategy == "multi-worker" else Role()


def check_name(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def make_strategy(strategy: str) -> tf.distribute.Strategy:
    """The named strategy. Call it before any other TensorFlow op (see the module docstring)."""
    check_name(strategy)
    if strategy == "multi-worker":
        parse_tf_config(os.environ.get(TF_CONFIG))  # a clear error rather than TensorFlow's
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if strategy == "mirrored":
        # MirroredStrategy() alone takes the GPUs, or one CPU; name the CPUs so that
        # logical CPU devices (tf.config.set_logical_device_configuration) are used too.
        return tf.distribute.MirroredStrategy(None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")])
    if strategy == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def fit_compatible(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """Works around two Keras 3 bugs that stop `model.fit` under MultiWorkerMirroredStrategy.

    Keras 3.15 (keras-team/keras#20585) (1) builds the model from a batch it
    passes whole to `strategy.reduce`, which MultiWorkerMirroredStrategy rejects,
    and (2) averages each step's scalar logs with `reduce(..., axis=0)`, which
    fails on scalars. Here (1) the build uses this worker's first replica's batch
    (only shapes matter) and (2) steps return their logs as 1-vectors, which
    that reduction averages over all replicas. The per-epoch logs that callbacks
    and history.csv see are read from the metric variables, summed over every
    replica, so they are exact. Other strategies get `model` untouched.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model

    def local(value: object) -> object:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):  # Keras' private hook, same signature.
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def as_vectors(step):
        def wrapped(data):
            return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

        return wrapped

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)
    return model


def worker_dir(run_dir: Path, role: Role) -> Path:
    """Where a non-chief worker keeps its own files: beside the run dir, removed when the run ends.

    Every worker runs the same callbacks (checkpoints, logs, backups), but only
    the chief's are the run's. The others write here; in particular each needs
    its own resume state (backup/), which is what lets them resume.
    """
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{run_dir.name}.{role.name}")


def describe(strategy: tf.distribute.Strategy) -> dict[str, object]:
    """For metrics.json: the strategy, by its --strategy name, and how many replicas shared each batch."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "multi-worker"
    elif isinstance(strategy, tf.distribute.MirroredStrategy):
        name = "mirrored"
    else:
        name = "default"
    return {"strategy": name, "replicas": int(strategy.num_replicas_in_sync)}
