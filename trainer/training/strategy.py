"""Where training runs: the tf.distribute strategy, who is chief, and the numeric precision.

`create_strategy` must run before any other TensorFlow op in the process: the multi-worker and
TPU strategies configure the runtime and cannot once it has started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import tensorflow as tf

STRATEGY_CHOICES = ("auto", "default", "mirrored", "multi_worker_mirrored", "tpu")
TPU_CONNECT_TIMEOUT_SECONDS = 30.0


class StrategyError(RuntimeError):
    """The requested strategy cannot be set up here (no TPU, bad TF_CONFIG, ...)."""


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices, so that MirroredStrategy has replicas
    on a machine without accelerators (tests, debugging a distributed run on a laptop)."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        raise StrategyError(f"cannot split the CPU into {num_devices} devices: {e}") from e


def _check_reachable(master: str, timeout: float = TPU_CONNECT_TIMEOUT_SECONDS) -> None:
    """TensorFlow retries a silent grpc:// address forever; fail instead if nothing answers."""
    if not master.startswith("grpc://"):
        return
    host, _, port = master.removeprefix("grpc://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


def _tpu_strategy(tpu: str | None) -> tf.distribute.TPUStrategy:
    where = repr(tpu) if tpu else "(no --tpu given, looking for a local TPU)"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")
        if tpu and tpu != "local":
            _check_reachable(resolver.master())
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        # Each way of not finding a TPU raises another type with a long trace; the user needs one
        # line. The first line of the original message is enough to tell them apart.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StrategyError(
            f"cannot reach TPU {where}: {reason}. Check the TPU name/address (--tpu), that it "
            "is in this project and zone, and that this VM may use it; or choose another "
            "--strategy.") from None
    if not tf.config.list_logical_devices("TPU"):
        raise StrategyError(f"TPU {where} was initialised but shows no TPU cores.")
    return tf.distribute.TPUStrategy(resolver)


def _check_tf_config() -> None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return
    try:
        config = json.loads(raw)
        config["cluster"], config["task"]["type"], config["task"]["index"]  # noqa: B018
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise StrategyError(
            f"TF_CONFIG is not valid ({e!r}); it must be JSON like "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            '"index": 0}}.') from None


def create_strategy(name: str = "auto", tpu: str | None = None) -> tf.distribute.Strategy:
    """The strategy for `--strategy`; `auto` picks TPU if --tpu is given, else Mirrored on >1
    GPU, else the default (single-device) strategy."""
    if name not in STRATEGY_CHOICES:
        raise StrategyError(f"unknown strategy {name!r}; choose one of {STRATEGY_CHOICES}")
    if name == "auto":
        if tpu:
            name = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "multi_worker_mirrored":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        # Without GPUs MirroredStrategy would use only /cpu:0: mirror over every logical CPU.
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    return tf.distribute.get_strategy()


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster."""

    task_type: str | None
    task_id: int
    is_chief: bool


def current_task(strategy: tf.distribute.Strategy) -> Task:
    """Who this process is. Only the chief writes checkpoints, exports and summaries.

    The chief is task "chief", or worker 0 when the cluster has no "chief" task (the
    tf.distribute convention, and what Vertex AI's TF_CONFIG gives).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return Task(None, 0, True)
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type is None:  # a single worker without TF_CONFIG
        return Task(None, 0, True)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return Task(task_type, task_id, is_chief)


def precision_policy(mixed_precision: bool, strategy: tf.distribute.Strategy) -> str:
    """The Keras dtype policy: bfloat16 on TPU (and CPU, where float16 has no fast kernels),
    float16 on GPU, float32 unless asked."""
    if not mixed_precision:
        return "float32"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16"
