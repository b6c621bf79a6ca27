"""The trainer under tf.distribute on CPU: MirroredStrategy over two logical CPUs, and
MultiWorkerMirroredStrategy with two local worker processes (TF_CONFIG on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess

import numpy as np
import pytest

from tests.support.trainer_data import (
    FAST_FLAGS,
    REPO_ROOT,
    balanced_counts,
    run_trainer,
    trainer_command,
    trainer_env,
    write_data_dir,
)

PER_REPLICA_BATCH = 4  # FAST_FLAGS' 8 would leave 2 steps per epoch at 2 replicas


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("records")
    write_data_dir(path, {"train": balanced_counts(4), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32, num_shards=2)
    return path


def common_flags(data_dir, job_dir):
    return (f"--data_dir={data_dir}", f"--job_dir={job_dir}", *FAST_FLAGS,
            f"--batch_size={PER_REPLICA_BATCH}", "--head_epochs=1", "--epochs=1")


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(data_dir, tmp_path):
    result = run_trainer(*common_flags(data_dir, tmp_path), "--strategy=mirrored",
                         "--logical_cpu_devices=2")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stderr
    training = json.loads((tmp_path / "eval/metrics.json").read_text())["training"]
    assert training["replicas"] == 2
    assert training["global_batch_size"] == 2 * PER_REPLICA_BATCH
    assert training["total_steps"] == 2 * (28 // 8)
    assert (tmp_path / "export/saved_model/saved_model.pb").is_file()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_trains_and_only_the_chief_exports(data_dir, tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster,
                                    "task": {"type": "worker", "index": index}})
            with open(tmp_path / f"worker{index}.log", "w") as log:
                workers.append(subprocess.Popen(
                    trainer_command(*common_flags(data_dir, tmp_path / "job"),
                                    "--strategy=multi_worker_mirrored"),
                    cwd=REPO_ROOT, env=trainer_env(TF_CONFIG=tf_config), stdout=log,
                    stderr=subprocess.STDOUT))
        codes = [process.wait(timeout=600) for process in workers]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    logs = [(tmp_path / f"worker{index}.log").read_text() for index in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert "with 2 replica(s), task worker/0 (chief)" in logs[0]
    assert "task worker/1," in logs[1]
    job = tmp_path / "job"
    metrics = json.loads((job / "eval/metrics.json").read_text())
    assert metrics["training"]["replicas"] == 2
    assert metrics["training"]["total_steps"] == 2 * (28 // 8)
    assert np.sum(metrics["confusion_matrix"]) == 7  # every test face once, none twice
    assert (job / "export/saved_model/saved_model.pb").is_file()
    assert "exported" in logs[0] and "exported" not in logs[1]
    # The worker's checkpoint copies went to its temporary dirs, removed after each save.
    assert not list(job.rglob("workertemp_*"))
