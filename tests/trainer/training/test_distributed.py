"""The trainer under tf.distribute on CPU, with the faults the cloud brings: MirroredStrategy
over two logical CPUs, MultiWorkerMirroredStrategy with two local worker processes (TF_CONFIG
on 127.0.0.1), a worker killed mid-epoch, SIGTERM during a multi-step chunk."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from tests.support.trainer_data import (
    FAST_FLAGS,
    MID_EPOCH_BACKUPS,
    REPO_ROOT,
    balanced_counts,
    run_trainer,
    trainer_command,
    trainer_env,
    write_data_dir,
)
from trainer.training.preemption import EXIT_PREEMPTED

PER_REPLICA_BATCH = 4  # FAST_FLAGS' 8 would leave 2 steps per epoch at 2 replicas


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("records")
    write_data_dir(path, {"train": balanced_counts(4), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32, num_shards=2)
    return path


def common_flags(data_dir, job_dir, epochs=1):
    return (f"--data_dir={data_dir}", f"--job_dir={job_dir}", *FAST_FLAGS,
            f"--batch_size={PER_REPLICA_BATCH}", "--head_epochs=1", f"--epochs={epochs}")


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(data_dir, tmp_path):
    result = run_trainer(*common_flags(data_dir, tmp_path), "--strategy=mirrored",
                         "--logical_cpu_devices=2", "--train_top_batchnorm")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stderr
    training = json.loads((tmp_path / "eval/metrics.json").read_text())["training"]
    assert training["replicas"] == 2
    assert training["global_batch_size"] == 2 * PER_REPLICA_BATCH
    assert training["total_steps"] == 2 * (28 // 8)
    assert (tmp_path / "model/saved_model.pb").is_file()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_workers(args, logs) -> list[subprocess.Popen]:
    """One trainer process per log file, as the workers of one MultiWorkerMirrored job."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(logs))]}
    workers = []
    for index, log_path in enumerate(logs):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        with open(log_path, "w") as log:
            workers.append(subprocess.Popen(
                trainer_command(*args, "--strategy=multi_worker_mirrored"), cwd=REPO_ROOT,
                env=trainer_env(TF_CONFIG=tf_config), stdout=log, stderr=subprocess.STDOUT))
    return workers


def wait_all(workers, timeout=600) -> list[int]:
    try:
        return [process.wait(timeout=timeout) for process in workers]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_trains_and_only_the_chief_exports(data_dir, tmp_path):
    logs = [tmp_path / f"worker{index}.log" for index in range(2)]
    codes = wait_all(start_workers(common_flags(data_dir, tmp_path / "job"), logs))
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in texts)
    assert "with 2 replica(s), task worker/0 (chief)" in texts[0]
    assert "task worker/1," in texts[1]
    job = tmp_path / "job"
    metrics = json.loads((job / "eval/metrics.json").read_text())
    assert metrics["training"]["replicas"] == 2
    assert metrics["training"]["total_steps"] == 2 * (28 // 8)
    assert np.sum(metrics["confusion_matrix"]) == 7  # every test face once, none twice
    assert (job / "model/saved_model.pb").is_file()
    assert "exported" in texts[0] and "exported" not in texts[1]
    assert not list(job.rglob("workertemp_*"))  # the worker's backup copies stayed local


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_ends_the_job_and_the_restarted_job_resumes(tmp_path):
    """What Vertex AI does with restart_job_on_worker_restart: every worker restarts, and all
    resume from the chief's backup to the planned step count."""
    data, job = tmp_path / "records", tmp_path / "job"
    write_data_dir(data, {"train": balanced_counts(8), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32, num_shards=2)
    args = (*common_flags(data, job, epochs=3), MID_EPOCH_BACKUPS,
            "--collective_timeout_seconds=60")
    total = 4 * (56 // 8)
    first = start_workers(args, [tmp_path / "first0.log", tmp_path / "first1.log"])
    deadline = time.monotonic() + 600
    while not (job / "checkpoints/backup/fine_tune/checkpoint").exists():
        assert all(p.poll() is None for p in first), (tmp_path / "first0.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first[1].kill()
    codes = wait_all(first, timeout=120)  # the chief must not hang on its lost peer
    assert codes[0] != 0 and not (job / "eval/metrics.json").exists()

    logs = [tmp_path / "second0.log", tmp_path / "second1.log"]
    codes = wait_all(start_workers(args, logs))
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in texts)
    resumed = [re.search(r"resumed fine_tune phase from backup \S+ at step (\d+)", t)
               for t in texts]
    assert all(resumed) and resumed[0].group(1) == resumed[1].group(1)
    training = json.loads((job / "eval/metrics.json").read_text())["training"]
    assert training["total_steps"] == total
    final_backup = (job / "checkpoints/backup/fine_tune/checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-28"' in final_backup


@pytest.mark.slow
def test_multi_step_chunks_with_xla_back_up_resume_and_match_single_steps(tmp_path):
    """The accelerator configs' loop: --steps_per_execution 4 --jit_compile on 2 replicas,
    stopped by SIGTERM mid fine-tuning and resumed, ends with the planned steps and the same
    metrics as a --steps_per_execution 1 run on the same data and seed."""
    data = tmp_path / "records"
    write_data_dir(data, {"train": balanced_counts(14), "validation": balanced_counts(2),
                          "test": balanced_counts(2)}, image_size=32, num_shards=2)

    def flags(job, steps_per_execution):
        return (f"--data_dir={data}", f"--job_dir={job}", "--weights=none", "--dense_units=32",
                f"--batch_size={PER_REPLICA_BATCH}", "--dropout=0", "--head_epochs=0",
                "--epochs=2", "--strategy=mirrored", "--logical_cpu_devices=2",
                "--jit_compile", f"--steps_per_execution={steps_per_execution}",
                "--backup_every_steps=4", "--rotation_degrees=5", "--fine_tune_learning_rate=1e-3")

    single = run_trainer(*flags(tmp_path / "single", 1))
    assert single.returncode == 0, single.stderr[-4000:]

    job = tmp_path / "chunked"
    with open(tmp_path / "chunked.log", "w") as log:
        first = subprocess.Popen(trainer_command(*flags(job, 4)), cwd=REPO_ROOT,
                                 env=trainer_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not (job / "checkpoints/backup/fine_tune/checkpoint").exists():
                assert first.poll() is None, (tmp_path / "chunked.log").read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=300) == EXIT_PREEMPTED
        finally:
            first.kill()
    stopped = int(re.search(r"backup saved at step (\d+)",
                            (tmp_path / "chunked.log").read_text()).group(1))
    assert stopped % 4 == 0 and 0 < stopped < 24
    resumed = run_trainer(*flags(job, 4))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"at step {stopped} of 24" in resumed.stderr

    a = json.loads((tmp_path / "single/eval/metrics.json").read_text())
    b = json.loads((job / "eval/metrics.json").read_text())
    assert b["training"]["total_steps"] == a["training"]["total_steps"] == 24
    assert b["confusion_matrix"] == a["confusion_matrix"]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    assert b["training"]["best_val_accuracy"] == a["training"]["best_val_accuracy"]
