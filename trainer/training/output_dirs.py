"""Where a training job writes: under --job_dir, unless Vertex AI names the place.

One layout everywhere: `launch train` makes the job_dir the job's base output directory, so
Vertex AI's variables point where the local defaults are (<job_dir>/model, /checkpoints,
/logs) and every artifact has one address, on Vertex AI and on a laptop alike.

Vertex AI custom jobs with a base output directory set AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and
AIP_TENSORBOARD_LOG_DIR; its model registry reads the SavedModel from AIP_MODEL_DIR and its
TensorBoard integration reads AIP_TENSORBOARD_LOG_DIR, so those win over --job_dir.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping

MODEL_DIR_ENV = "AIP_MODEL_DIR"
CHECKPOINT_DIR_ENV = "AIP_CHECKPOINT_DIR"
TENSORBOARD_DIR_ENV = "AIP_TENSORBOARD_LOG_DIR"


@dataclasses.dataclass(frozen=True)
class OutputDirs:
    checkpoints: str  # last.weights.h5, best.weights.h5, best.json
    backup: str  # tf.train.Checkpoint state for resuming a killed job
    logs: str  # TensorBoard event files
    # The serving SavedModel: <job_dir>/model, where Vertex AI's AIP_MODEL_DIR points when the
    # job's base output directory is the job_dir (as `launch train` sets it).
    saved_model: str
    export: str  # model.keras and labels.json
    eval: str  # metrics.json, confusion_matrix.png
    cache: str  # --cache_features shards when they do not fit in memory


def _join(base: str, name: str) -> str:
    return posixpath.join(base.rstrip("/"), name)


def resolve_output_dirs(job_dir: str, env: Mapping[str, str]) -> OutputDirs:
    """The output directories for `job_dir`, honouring Vertex AI's AIP_* variables in `env`."""
    if not job_dir:
        raise ValueError("--job_dir is required (a local directory or gs:// path)")
    checkpoints = (env.get(CHECKPOINT_DIR_ENV, "").rstrip("/")
                   or _join(job_dir, "checkpoints"))
    export = _join(job_dir, "export")
    return OutputDirs(
        checkpoints=checkpoints,
        backup=_join(checkpoints, "backup"),
        logs=env.get(TENSORBOARD_DIR_ENV, "").rstrip("/") or _join(job_dir, "logs"),
        saved_model=env.get(MODEL_DIR_ENV, "").rstrip("/") or _join(job_dir, "model"),
        export=export,
        eval=_join(job_dir, "eval"),
        cache=_join(job_dir, "cache"),
    )
