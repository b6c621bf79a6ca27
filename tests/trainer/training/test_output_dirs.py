"""Where a job writes: under --job_dir, or where Vertex AI says."""

from trainer.training.output_dirs import resolve_output_dirs
from trainer.training.progress import on_vertex


def test_outputs_go_under_job_dir_by_default():
    dirs = resolve_output_dirs("gs://b/run1/", {})
    assert dirs.checkpoints == "gs://b/run1/checkpoints"
    assert dirs.backup == "gs://b/run1/checkpoints/backup"
    assert dirs.logs == "gs://b/run1/logs"
    assert dirs.saved_model == "gs://b/run1/model"
    assert dirs.export == "gs://b/run1/export"
    assert dirs.eval == "gs://b/run1/eval"
    assert dirs.cache == "gs://b/run1/cache"


def test_vertex_ai_directories_win_over_job_dir():
    env = {"AIP_MODEL_DIR": "gs://b/out/model/", "AIP_CHECKPOINT_DIR": "gs://b/out/checkpoints/",
           "AIP_TENSORBOARD_LOG_DIR": "gs://b/out/logs/"}
    dirs = resolve_output_dirs("gs://b/run1", env)
    assert dirs.saved_model == "gs://b/out/model"
    assert dirs.checkpoints == "gs://b/out/checkpoints"
    assert dirs.backup == "gs://b/out/checkpoints/backup"
    assert dirs.logs == "gs://b/out/logs"
    assert dirs.eval == "gs://b/run1/eval"
    assert dirs.export == "gs://b/run1/export"
    assert dirs.cache == "gs://b/run1/cache"  # big and temporary: never in Vertex's model dir


def test_vertex_ai_variables_of_a_launched_job_give_the_local_layout():
    """`launch train` makes the job_dir the base output directory: one address per artifact."""
    env = {"AIP_MODEL_DIR": "gs://b/run1/model/", "AIP_CHECKPOINT_DIR": "gs://b/run1/checkpoints/",
           "AIP_TENSORBOARD_LOG_DIR": "gs://b/run1/logs/"}
    assert resolve_output_dirs("gs://b/run1", env) == resolve_output_dirs("gs://b/run1", {})


def test_vertex_ai_is_recognised_by_its_environment():
    assert on_vertex({"CLOUD_ML_JOB_ID": "1"}) and on_vertex({"AIP_MODEL_DIR": "x"})
    assert not on_vertex({"HOME": "/root"})
