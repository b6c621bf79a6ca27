"""The trainer's command-line flags and the TrainConfig they make.

Flags are defined by `define_flags` (called by `python -m trainer`), not at import, so that
other entry points and tests can import this module without taking over the global flags.
Flagfiles in configs/ hold tested combinations: `--flagfile=configs/local_cpu.cfg`.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from trainer.model import TRAIN_ALL, TRAINABLE_FROM_CHOICES
from trainer.strategy import STRATEGY_CHOICES

WEIGHTS_NONE = "none"


class ConfigError(ValueError):
    """A flag value, or a combination of them, that cannot work."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    job_dir: str
    image_size: int | None = None  # None: the manifest's
    weights: str | None = "vggface2"  # "vggface2", a weight file path, or None (random)
    trainable_from: str = "conv5_3"
    train_top_batchnorm: bool = False
    dense_units: int = 256
    dropout: float = 0.5
    batch_size: int = 32  # per replica
    head_epochs: int = 2
    epochs: int = 10
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    plateau_factor: float = 0.2
    plateau_patience: int = 2
    min_learning_rate: float = 1e-7
    label_smoothing: float = 0.0
    class_weight: str = "none"
    augment: bool = True
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.1
    random_erasing: float = 0.0
    shuffle_buffer: int = 2048
    steps_per_epoch: int | None = None  # None: one pass over the train split
    steps_per_execution: int = 1
    backup_every_steps: int = 100
    strategy: str = "auto"
    tpu: str | None = None
    logical_cpu_devices: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    tta: bool = False
    cache_features: bool = False
    cache_dtype: str = "float16"
    cache_memory_gb: float = 4.0
    seed: int = 0

    def __post_init__(self):
        _validate(self)


def _validate(config: TrainConfig) -> None:
    problems = []
    if not config.data_dir:
        problems.append("--data_dir is required")
    if not config.job_dir:
        problems.append("--job_dir is required")
    for name in ("batch_size", "dense_units", "shuffle_buffer", "steps_per_execution",
                 "backup_every_steps", "plateau_patience"):
        if getattr(config, name) < 1:
            problems.append(f"--{name} must be >= 1, got {getattr(config, name)}")
    for name in ("head_epochs", "epochs"):
        if getattr(config, name) < 0:
            problems.append(f"--{name} must be >= 0, got {getattr(config, name)}")
    if config.head_epochs + config.epochs == 0:
        problems.append("--head_epochs and --epochs are both 0: nothing to train")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        problems.append(f"--steps_per_epoch must be >= 1, got {config.steps_per_epoch}")
    if config.image_size is not None and config.image_size < 32:
        problems.append(f"--image_size must be >= 32, got {config.image_size}")
    for name in ("learning_rate", "fine_tune_learning_rate"):
        if getattr(config, name) <= 0:
            problems.append(f"--{name} must be > 0, got {getattr(config, name)}")
    for name, low, high in (("dropout", 0, 1), ("label_smoothing", 0, 1),
                            ("plateau_factor", 0, 1)):
        if not low <= getattr(config, name) < high:
            problems.append(f"--{name} must be in [{low}, {high}), got {getattr(config, name)}")
    if not 0 <= config.random_erasing <= 1:
        problems.append(f"--random_erasing is a probability, got {config.random_erasing}")
    if config.strategy == "tpu" and config.logical_cpu_devices > 1:
        problems.append("--logical_cpu_devices cannot be used with --strategy=tpu")
    problems += _cache_problems(config)
    if problems:
        raise ConfigError("; ".join(problems))


def _cache_problems(config: TrainConfig) -> list[str]:
    """--cache_features trains on features computed once per face: only flips (cached as a
    second view) survive; a random rotation, shift, zoom or erasing would need new features
    every epoch, so it is refused rather than silently applied once."""
    if not config.cache_features:
        return []
    problems = []
    if config.trainable_from == TRAIN_ALL:
        problems.append("--cache_features needs a frozen part: --trainable_from=all trains "
                        "the whole network")
    uncacheable = [f"--{name}={getattr(config, name):g}" for name in
                   ("rotation_degrees", "shift_fraction", "zoom_fraction", "random_erasing")
                   if getattr(config, name) > 0]
    if config.augment and uncacheable:
        problems.append("--cache_features caches each face (and its mirror image) once, so "
                        f"it cannot apply {', '.join(uncacheable)}: set them to 0 (flips stay) "
                        "or use --noaugment")
    if config.cache_memory_gb < 0:
        problems.append(f"--cache_memory_gb must be >= 0, got {config.cache_memory_gb}")
    return problems


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the `python -m trainer` flags on `flag_values`."""
    d = TrainConfig.__dataclass_fields__

    def default(name):
        return d[name].default

    fv = {"flag_values": flag_values}
    flags.DEFINE_string("data_dir", None, "Output directory of beam_preprocess (has "
                        "manifest.json); local or gs://.", **fv)
    flags.DEFINE_string("job_dir", None, "Where this run writes checkpoints, backups, logs, "
                        "eval and export; local or gs://. Rerun with the same job_dir to resume.",
                        **fv)
    flags.DEFINE_integer("image_size", None, "Model input size; must equal the manifest's "
                         "(default: the manifest's).", **fv)
    flags.DEFINE_string("weights", default("weights"), "Backbone weights: 'vggface2' (download "
                        "the published notop file), a path to a keras-vggface .h5, or 'none'.",
                        **fv)
    flags.DEFINE_enum("trainable_from", default("trainable_from"), TRAINABLE_FROM_CHOICES,
                      "Fine-tuning cut: this block and everything above train ('conv5_3' is "
                      "the blog's activation_46 cut); 'all' or 'none' (head only).", **fv)
    flags.DEFINE_bool("train_top_batchnorm", False, "BatchNorm above the cut uses batch "
                      "statistics in training (default: moving statistics).", **fv)
    flags.DEFINE_integer("dense_units", default("dense_units"), "Units of the head's hidden "
                         "Dense layer.", **fv)
    flags.DEFINE_float("dropout", default("dropout"), "Dropout rate in the head.", **fv)
    flags.DEFINE_integer("batch_size", default("batch_size"), "Batch size PER REPLICA; the "
                         "global batch is this times the number of replicas.", **fv)
    flags.DEFINE_integer("head_epochs", default("head_epochs"), "Phase 1: epochs training the "
                         "head with the backbone frozen.", **fv)
    flags.DEFINE_integer("epochs", default("epochs"), "Phase 2: epochs fine-tuning from "
                         "--trainable_from.", **fv)
    flags.DEFINE_float("learning_rate", default("learning_rate"), "Phase 1 learning rate.", **fv)
    flags.DEFINE_float("fine_tune_learning_rate", default("fine_tune_learning_rate"),
                       "Phase 2 learning rate (much lower).", **fv)
    flags.DEFINE_enum("optimizer", default("optimizer"), ["adam", "sgd"], "Optimizer; sgd uses "
                      "momentum --momentum.", **fv)
    flags.DEFINE_float("momentum", default("momentum"), "SGD momentum.", **fv)
    flags.DEFINE_enum("lr_schedule", default("lr_schedule"), ["cosine", "plateau", "constant"],
                      "cosine: decay to 0 over each phase; plateau: multiply by "
                      "--plateau_factor when validation loss stops improving.", **fv)
    flags.DEFINE_float("plateau_factor", default("plateau_factor"), "Plateau: LR factor.", **fv)
    flags.DEFINE_integer("plateau_patience", default("plateau_patience"), "Plateau: epochs "
                         "without improvement before reducing.", **fv)
    flags.DEFINE_float("min_learning_rate", default("min_learning_rate"), "Plateau: lower "
                       "bound.", **fv)
    flags.DEFINE_float("label_smoothing", default("label_smoothing"), "Label smoothing of the "
                       "cross-entropy.", **fv)
    flags.DEFINE_enum("class_weight", default("class_weight"), ["none", "balanced"],
                      "balanced: weight each class by N / (C * count) from the manifest's "
                      "train counts.", **fv)
    flags.DEFINE_bool("augment", default("augment"), "Augment training faces (flip, rotation, "
                      "shift, zoom, optional erasing).", **fv)
    flags.DEFINE_float("rotation_degrees", default("rotation_degrees"), "Max random "
                       "rotation.", **fv)
    flags.DEFINE_float("shift_fraction", default("shift_fraction"), "Max random shift, as a "
                       "fraction of the image size.", **fv)
    flags.DEFINE_float("zoom_fraction", default("zoom_fraction"), "Max random zoom in/out.",
                       **fv)
    flags.DEFINE_float("random_erasing", default("random_erasing"), "Probability of erasing "
                       "a random rectangle of a training face (0: off).", **fv)
    flags.DEFINE_integer("shuffle_buffer", default("shuffle_buffer"), "Records in the "
                         "training shuffle buffer (per input pipeline).", **fv)
    flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over "
                         "the train split at the global batch size).", **fv)
    flags.DEFINE_integer("steps_per_execution", default("steps_per_execution"), "Training "
                         "steps per tf.function call (raise on TPU).", **fv)
    flags.DEFINE_integer("backup_every_steps", default("backup_every_steps"), "Save the "
                         "resumable backup every N steps (and at each epoch end).", **fv)
    flags.DEFINE_enum("strategy", default("strategy"), STRATEGY_CHOICES,
                      "auto: TPU if --tpu, MirroredStrategy on >1 GPU, else default.", **fv)
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address ('local' on a TPU VM).",
                        **fv)
    flags.DEFINE_integer("logical_cpu_devices", 0, "Split the CPU into N logical devices "
                         "(to try --strategy=mirrored without GPUs).", **fv)
    flags.DEFINE_bool("mixed_precision", False, "bfloat16 on TPU and CPU, float16 on GPU.",
                      **fv)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train and eval steps.", **fv)
    flags.DEFINE_bool("tta", False, "Test-time augmentation in the final evaluation: average "
                      "the probabilities of each face and its mirror image.", **fv)
    flags.DEFINE_bool("cache_features", False, "Run the frozen part below --trainable_from "
                      "once per face (and its mirror image) and train the rest on the cached "
                      "outputs: much faster epochs. Only flip augmentation.", **fv)
    flags.DEFINE_enum("cache_dtype", default("cache_dtype"), ["float16", "float32"],
                      "Storage type of cached features (float16 halves memory and disk).", **fv)
    flags.DEFINE_float("cache_memory_gb", default("cache_memory_gb"), "Keep the feature "
                       "cache in memory up to this size per process (building it briefly takes "
                       "twice that), else write it to job_dir/cache/ (0: always disk).", **fv)
    flags.DEFINE_integer("seed", default("seed"), "Random seed.", **fv)
    flags.mark_flags_as_required(["data_dir", "job_dir"], flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """The TrainConfig of parsed flags; raises ConfigError on impossible values."""
    values = {name: flag_values[name].value for name in TrainConfig.__dataclass_fields__}
    weights = values["weights"]
    values["weights"] = None if weights is None or weights.lower() == WEIGHTS_NONE else weights
    return TrainConfig(**values)
