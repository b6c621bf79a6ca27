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

from beam_preprocess.user_error import UserError, first_line

TPU_CONNECT_TIMEOUT_SECONDS = 30.0
# Compute capability from which NVIDIA GPUs have fast bfloat16 (Ampere and later).
BFLOAT16_COMPUTE_CAPABILITY = (8, 0)


class StrategyError(UserError, RuntimeError):
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
        raise StrategyError(
            f"cannot reach TPU {where}: {first_line(e)}. Check the TPU name/address (--tpu), "
            "that it is in this project and zone, and that this VM may use it; or choose "
            "another --strategy.") from None
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


def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    # Without GPUs MirroredStrategy would use only /cpu:0: mirror over every logical CPU.
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(cpus)


def _multi_worker_strategy(collective_timeout_seconds: float):
    _check_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout_seconds or None)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


NVIDIA_GPUS = "/proc/driver/nvidia/gpus"  # one entry per GPU the NVIDIA driver runs


def unseen_gpus_warning(nvidia_gpus: str = NVIDIA_GPUS) -> str | None:
    """One line when the NVIDIA driver runs GPUs that TensorFlow does not see (a TensorFlow
    installed without its CUDA libraries trains on the CPU without a word), else None."""
    try:
        count = len(os.listdir(nvidia_gpus))
    except OSError:
        return None
    if count == 0 or tf.config.list_physical_devices("GPU"):
        return None
    return (f"{count} NVIDIA GPU(s) found ({nvidia_gpus}) but TensorFlow sees none: this "
            "TensorFlow lacks its CUDA libraries, so training runs on the CPU. Install them: "
            "pip install -c constraints.txt -c containers/cuda-constraints.txt \".[gpu]\"")


def create_strategy(name: str = "auto", tpu: str | None = None,
                    collective_timeout_seconds: float = 0.0) -> tf.distribute.Strategy:
    """The strategy for `--strategy`; `auto` picks TPU if --tpu is given, else Mirrored on >1
    GPU, else the default (single-device) strategy. Multi-worker collectives that wait longer
    than `collective_timeout_seconds` (0: forever) fail, so a lost worker ends the job."""
    if name == "auto":
        if tpu:
            name = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; choose one of auto, "
                            f"{', '.join(STRATEGIES)}")
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "multi_worker_mirrored":
        return _multi_worker_strategy(collective_timeout_seconds)
    if name == "mirrored":
        return _mirrored_strategy()
    return tf.distribute.get_strategy()


def any_worker(strategy: tf.distribute.Strategy, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true if it is true in any process of the job: under multi-worker a
    collective that every worker must reach at the same point; elsewhere the flags as given."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return tuple(bool(f) for f in flags)
    if not hasattr(strategy, "_any_worker_sum"):
        # One traced function per strategy: an all-reduce of a small vector.
        strategy._any_worker_sum = tf.function(lambda values: strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(values,)), axis=None))
    totals = strategy._any_worker_sum(tf.constant([float(f) for f in flags]))
    return tuple(bool(t > 0) for t in totals.numpy())


def wait_for_other_workers(strategy: tf.distribute.Strategy) -> None:
    """Under multi-worker, returns once every worker got here (so the chief has finished
    writing what the others are about to read). A single process has nobody to wait for."""
    any_worker(strategy, False)


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


def _gpus_support_bfloat16() -> bool:
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability")
                    for gpu in gpus]
    return bool(gpus) and all(c is not None and tuple(c) >= BFLOAT16_COMPUTE_CAPABILITY
                              for c in capabilities)


def precision_policy(mode: str, strategy: tf.distribute.Strategy) -> str:
    """The Keras dtype policy for --mixed_precision.

    auto: bfloat16 on TPUs and on GPUs that compute it fast (compute capability 8+), float16
    (with loss scaling) on older GPUs, float32 on CPUs, where neither has fast kernels.
    bfloat16 and float16 are taken as asked on any device (float16 runs on a CPU too, slowly:
    the tests exercise loss scaling that way).
    """
    if mode == "none":
        return "float32"
    if mode in ("bfloat16", "float16"):
        return f"mixed_{mode}"
    if mode != "auto":
        raise StrategyError(f"unknown --mixed_precision {mode!r}")
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_bfloat16" if _gpus_support_bfloat16() else "mixed_float16"
    return "float32"
