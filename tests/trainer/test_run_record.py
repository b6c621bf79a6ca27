"""The resume guard: a job_dir resumes only the training it holds."""

import pytest

from trainer import run_record
from trainer.config import ConfigError, TrainConfig
from trainer.training.output_dirs import resolve_output_dirs


def settings(replicas=2, **changes):
    config = TrainConfig.of(**{"data_dir": "d", "job_dir": "j", **changes})
    return run_record.run_settings(config, "digest", replicas, steps_per_epoch=10)


def test_settings_leave_out_what_may_change_on_a_resume():
    same = settings(strategy="mirrored", jit_compile=True, steps_per_execution=50, tta="flip",
                    data_dir="gs://elsewhere", backup_every_minutes=1)
    assert same == settings()
    assert settings(learning_rate=0.01) != settings()


def test_a_changed_replica_count_is_refused_with_the_batch_that_keeps_the_global_one(tmp_path):
    dirs = resolve_output_dirs(str(tmp_path), {})
    run_record.record(str(tmp_path), settings(replicas=2, batch_size=32))
    run_record.check(dirs, str(tmp_path), settings(replicas=4, batch_size=32), 4)  # no backup
    (tmp_path / "checkpoints" / "backup" / "head").mkdir(parents=True)
    (tmp_path / "checkpoints" / "backup" / "head" / "checkpoint").write_text("x")
    with pytest.raises(ConfigError) as refused:
        run_record.check(dirs, str(tmp_path), settings(replicas=4, batch_size=32), 4)
    message = str(refused.value)
    assert "global_batch_size: 64 -> 128" in message
    assert "With 4 replica(s), --batch_size=16 keeps the global batch of 64" in message
    run_record.check(dirs, str(tmp_path), settings(replicas=4, batch_size=16), 4)  # resumes


def test_start_over_discards_the_previous_run_but_keeps_the_feature_cache(tmp_path):
    dirs = resolve_output_dirs(str(tmp_path), {})
    for name in ("checkpoints/backup/head", "logs/train", "eval", "model",
                 "cache/train"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "f").write_text("x")
    run_record.record(str(tmp_path), settings())
    run_record.discard_previous_run(dirs, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
