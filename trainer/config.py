"""The trainer's command-line flags and the TrainConfig they make.

Flags are defined by `define_flags` (called by `python -m trainer`), not at import, so that
other entry points and tests can import this module without taking over the global flags.
Flagfiles in configs/ hold tested combinations: `--flagfile=configs/local_cpu.cfg`.

This module imports no TensorFlow: `python -m trainer --helpfull` answers at once.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from beam_preprocess.user_error import UserError
from trainer.vggface.layout import TRAIN_ALL, TRAINABLE_FROM_CHOICES

WEIGHTS_NONE = "none"
STRATEGY_CHOICES = ("auto", "default", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION_CHOICES = ("none", "auto", "bfloat16", "float16")
OPTIMIZER_CHOICES = ("adam", "adamw", "sgd")
LR_SCHEDULE_CHOICES = ("cosine", "step", "plateau", "constant")
TTA_CHOICES = ("none", "flip", "ten_crop")
FERPLUS_TARGET_CHOICES = ("majority", "distribution")


class ConfigError(UserError, ValueError):
    """A flag value, or a combination of them, that cannot work."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    job_dir: str
    # --- model
    image_size: int | None = None  # the network's side; None: the records' side
    weights: str | None = "vggface2"  # "vggface2", a weight file path, or None (random)
    trainable_from: str = "conv5_3"
    train_top_batchnorm: bool = False
    zero_init_residual: bool = True  # with --weights=none only
    dense_units: int = 256
    dropout: float = 0.5
    # --- schedule and optimizer
    batch_size: int = 32  # per replica
    head_epochs: int = 2
    epochs: int = 10
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    backbone_lr_multiplier: float = 1.0
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    lr_boundaries: tuple[float, ...] = ()  # step schedule: epochs of each phase
    lr_step_factor: float = 0.1
    plateau_factor: float = 0.2
    plateau_patience: int = 2
    min_learning_rate: float = 1e-7
    ema_decay: float = 0.0
    # --- loss
    label_smoothing: float = 0.0
    class_weight: str = "none"
    ferplus_target: str = "majority"
    # --- augmentation (on the device, in the training step)
    augment: bool = True
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.1
    affine_probability: float = 1.0
    crop_scale: float = 1.0  # random resized crop: smallest kept area share (1: off)
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # --- input
    data_in_memory_gb: float = 4.0
    shuffle_buffer: int = 2048
    # --- loop
    steps_per_epoch: int | None = None  # None: one pass over the train split
    steps_per_execution: int = 1
    backup_every_steps: int = 1000
    backup_every_minutes: float = 10.0
    start_over: bool = False
    run_id: str = ""  # with start_over: a rerun of the same run id resumes instead
    # --- where and how it runs
    strategy: str = "auto"
    tpu: str | None = None
    logical_cpu_devices: int = 0
    collective_timeout_seconds: float = 0.0
    mixed_precision: str = "none"
    jit_compile: bool = False
    # --- evaluation
    tta: str = "none"
    tta_crop_fraction: float = 0.875
    # --- cached features
    cache_features: bool = False
    cache_dtype: str = "float16"
    cache_memory_gb: float = 4.0
    seed: int = 0

    def __post_init__(self):
        _validate(self)

    @property
    def total_epochs(self) -> int:
        return self.head_epochs + self.epochs


def _validate(config: TrainConfig) -> None:
    problems = [f"--{name} is required" for name in ("data_dir", "job_dir")
                if not getattr(config, name)]
    problems += _range_problems(config)
    problems += _schedule_problems(config)
    problems += _cache_problems(config)
    if config.strategy == "tpu" and config.logical_cpu_devices > 1:
        problems.append("--logical_cpu_devices cannot be used with --strategy=tpu")
    if config.tpu and config.tpu != "local":
        local = [f"--{name}={getattr(config, name)}" for name in ("data_dir", "job_dir")
                 if getattr(config, name) and not getattr(config, name).startswith("gs://")]
        if local:
            problems.append(f"a remote TPU (--tpu={config.tpu}) reads and writes only Cloud "
                            f"Storage, but {' and '.join(local)} is local: use gs:// paths")
    if problems:
        raise ConfigError("; ".join(problems))


def _range_problems(config: TrainConfig) -> list[str]:
    problems = []
    for name in ("batch_size", "dense_units", "shuffle_buffer", "steps_per_execution",
                 "backup_every_steps", "plateau_patience"):
        if getattr(config, name) < 1:
            problems.append(f"--{name} must be >= 1, got {getattr(config, name)}")
    for name in ("head_epochs", "epochs", "warmup_epochs", "weight_decay", "mixup_alpha",
                 "cutmix_alpha", "data_in_memory_gb", "collective_timeout_seconds",
                 "backup_every_minutes"):
        if getattr(config, name) < 0:
            problems.append(f"--{name} must be >= 0, got {getattr(config, name)}")
    if config.total_epochs == 0:
        problems.append("--head_epochs and --epochs are both 0: nothing to train")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        problems.append(f"--steps_per_epoch must be >= 1, got {config.steps_per_epoch}")
    if config.image_size is not None and config.image_size < 32:
        problems.append(f"--image_size must be >= 32, got {config.image_size}")
    for name in ("learning_rate", "fine_tune_learning_rate", "backbone_lr_multiplier"):
        if getattr(config, name) <= 0:
            problems.append(f"--{name} must be > 0, got {getattr(config, name)}")
    for name, low, high in (("dropout", 0, 1), ("label_smoothing", 0, 1),
                            ("plateau_factor", 0, 1), ("ema_decay", 0, 1),
                            ("lr_step_factor", 0, 1)):
        if not low <= getattr(config, name) < high:
            problems.append(f"--{name} must be in [{low}, {high}), got {getattr(config, name)}")
    for name in ("random_erasing", "affine_probability"):
        if not 0 <= getattr(config, name) <= 1:
            problems.append(f"--{name} is a probability, got {getattr(config, name)}")
    for name in ("crop_scale", "tta_crop_fraction"):
        if not 0 < getattr(config, name) <= 1:
            problems.append(f"--{name} must be in (0, 1], got {getattr(config, name)}")
    return problems


def _schedule_problems(config: TrainConfig) -> list[str]:
    problems = []
    if config.lr_schedule == "step" and not config.lr_boundaries:
        problems.append("--lr_schedule=step needs --lr_boundaries (epochs, e.g. 10,20)")
    if list(config.lr_boundaries) != sorted(config.lr_boundaries) or any(
            b <= 0 for b in config.lr_boundaries):
        problems.append(f"--lr_boundaries must be increasing epochs > 0, got "
                        f"{','.join(f'{b:g}' for b in config.lr_boundaries)}")
    if config.nesterov and config.optimizer != "sgd":
        problems.append("--nesterov is a setting of --optimizer=sgd")
    return problems


def _cache_problems(config: TrainConfig) -> list[str]:
    """--cache_features trains on features computed once per face: only flips (cached as a
    second view) survive; a random rotation, shift, zoom, crop, erasing or mixing would need
    new features every step, so it is refused rather than silently applied once."""
    if not config.cache_features:
        return []
    problems = []
    if config.trainable_from == TRAIN_ALL:
        problems.append("--cache_features needs a frozen part: --trainable_from=all trains "
                        "the whole network")
    uncacheable = [f"--{name}={getattr(config, name):g}" for name in
                   ("rotation_degrees", "shift_fraction", "zoom_fraction", "random_erasing",
                    "mixup_alpha", "cutmix_alpha") if getattr(config, name) > 0]
    if config.crop_scale < 1:
        uncacheable.append(f"--crop_scale={config.crop_scale:g}")
    if config.augment and uncacheable:
        problems.append("--cache_features caches each face (and its mirror image) once, so "
                        f"it cannot apply {', '.join(uncacheable)}: turn them off (flips stay) "
                        "or use --noaugment")
    if config.cache_memory_gb < 0:
        problems.append(f"--cache_memory_gb must be >= 0, got {config.cache_memory_gb}")
    return problems


# --- flags ------------------------------------------------------------------------------------

_FIELDS = TrainConfig.__dataclass_fields__


def _default(name):
    return _FIELDS[name].default


def _define_model_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("data_dir", None, "Output directory of beam_preprocess (has "
                        "manifest.json); local or gs://.", flag_values=fv)
    flags.DEFINE_string("job_dir", None, "Where this run writes checkpoints, backups, logs, "
                        "eval and export; local or gs://. Rerun with the same job_dir to resume.",
                        flag_values=fv)
    flags.DEFINE_integer("image_size", None, "The network's input side (default: the records'"
                         "). Records of another size are resized on the device, e.g. 48 px "
                         "records for a 224 px network.", flag_values=fv)
    flags.DEFINE_string("weights", _default("weights"), "Backbone weights: 'vggface2' "
                        "(download the published notop file), a path to a keras-vggface .h5, "
                        "or 'none'.", flag_values=fv)
    flags.DEFINE_enum("trainable_from", _default("trainable_from"), TRAINABLE_FROM_CHOICES,
                      "Fine-tuning cut: this block and everything above train ('conv5_3' is "
                      "the blog's activation_46 cut); 'all' or 'none' (head only).",
                      flag_values=fv)
    flags.DEFINE_bool("train_top_batchnorm", False, "BatchNorm above the cut uses batch "
                      "statistics in training (default: moving statistics); synchronised "
                      "across replicas when there are several.", flag_values=fv)
    flags.DEFINE_bool("zero_init_residual", _default("zero_init_residual"), "With "
                      "--weights=none: every residual branch starts at zero (its last "
                      "BatchNorm's gamma is 0), so the network starts as its shortcut path and "
                      "learns from scratch in far fewer steps (Goyal et al. 2017).",
                      flag_values=fv)
    flags.DEFINE_integer("dense_units", _default("dense_units"), "Units of the head's hidden "
                         "Dense layer.", flag_values=fv)
    flags.DEFINE_float("dropout", _default("dropout"), "Dropout rate in the head.",
                       flag_values=fv)


def _define_schedule_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("batch_size", _default("batch_size"), "Batch size PER REPLICA; the "
                         "global batch is this times the number of replicas.", flag_values=fv)
    flags.DEFINE_integer("head_epochs", _default("head_epochs"), "Phase 1: epochs training "
                         "the head with the backbone frozen.", flag_values=fv)
    flags.DEFINE_integer("epochs", _default("epochs"), "Phase 2: epochs fine-tuning from "
                         "--trainable_from.", flag_values=fv)
    flags.DEFINE_float("learning_rate", _default("learning_rate"), "Phase 1 learning rate.",
                       flag_values=fv)
    flags.DEFINE_float("fine_tune_learning_rate", _default("fine_tune_learning_rate"),
                       "Phase 2 learning rate of the head (much lower).", flag_values=fv)
    flags.DEFINE_float("backbone_lr_multiplier", _default("backbone_lr_multiplier"),
                       "The trainable backbone layers learn at this times the head's rate "
                       "(Albanie et al.: 0.1).", flag_values=fv)
    flags.DEFINE_enum("optimizer", _default("optimizer"), OPTIMIZER_CHOICES, "adam, adamw "
                      "(decoupled --weight_decay) or sgd (--momentum, --nesterov).",
                      flag_values=fv)
    flags.DEFINE_float("momentum", _default("momentum"), "SGD momentum.", flag_values=fv)
    flags.DEFINE_bool("nesterov", False, "SGD with Nesterov momentum.", flag_values=fv)
    flags.DEFINE_float("weight_decay", _default("weight_decay"), "Decoupled weight decay "
                       "(adamw, sgd).", flag_values=fv)
    flags.DEFINE_enum("lr_schedule", _default("lr_schedule"), LR_SCHEDULE_CHOICES,
                      "cosine: decay to 0 over each phase; step: times --lr_step_factor at "
                      "each of --lr_boundaries; plateau: times --plateau_factor when the "
                      "validation loss stops improving; constant.", flag_values=fv)
    flags.DEFINE_float("warmup_epochs", _default("warmup_epochs"), "Linear warm-up from 0 "
                       "over the first epochs of each phase (cosine and step).",
                       flag_values=fv)
    flags.DEFINE_list("lr_boundaries", [], "Step schedule: epochs (within a phase) after "
                      "which the rate is multiplied by --lr_step_factor.", flag_values=fv)
    flags.DEFINE_float("lr_step_factor", _default("lr_step_factor"), "Step schedule factor.",
                       flag_values=fv)
    flags.DEFINE_float("plateau_factor", _default("plateau_factor"), "Plateau: LR factor.",
                       flag_values=fv)
    flags.DEFINE_integer("plateau_patience", _default("plateau_patience"), "Plateau: epochs "
                         "without improvement before reducing.", flag_values=fv)
    flags.DEFINE_float("min_learning_rate", _default("min_learning_rate"), "Plateau: lower "
                       "bound.", flag_values=fv)
    flags.DEFINE_float("ema_decay", _default("ema_decay"), "Keep an exponential moving "
                       "average of the weights (e.g. 0.999) and evaluate and export it "
                       "(0: off).", flag_values=fv)


def _define_loss_and_augmentation_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_float("label_smoothing", _default("label_smoothing"), "Label smoothing of "
                       "the cross-entropy.", flag_values=fv)
    flags.DEFINE_enum("class_weight", _default("class_weight"), ["none", "balanced"],
                      "balanced: weight each class by N / (C * count) from the manifest's "
                      "train counts.", flag_values=fv)
    flags.DEFINE_enum("ferplus_target", _default("ferplus_target"), FERPLUS_TARGET_CHOICES,
                      "FER+ records: train on the majority label or on the vote distribution "
                      "(soft labels). Evaluation always reports majority-label accuracy.",
                      flag_values=fv)
    flags.DEFINE_bool("augment", _default("augment"), "Augment training faces on the device "
                      "(flip, then the transforms below).", flag_values=fv)
    flags.DEFINE_float("rotation_degrees", _default("rotation_degrees"), "Max random "
                       "rotation.", flag_values=fv)
    flags.DEFINE_float("shift_fraction", _default("shift_fraction"), "Max random shift, as a "
                       "fraction of the image size.", flag_values=fv)
    flags.DEFINE_float("zoom_fraction", _default("zoom_fraction"), "Max random zoom in/out.",
                       flag_values=fv)
    flags.DEFINE_float("affine_probability", _default("affine_probability"), "Share of faces "
                       "that get the rotation/shift/zoom (Albanie et al.: 0.5).",
                       flag_values=fv)
    flags.DEFINE_float("crop_scale", _default("crop_scale"), "Random resized crop: keep a "
                       "random square of at least this share of the area (1: off).",
                       flag_values=fv)
    flags.DEFINE_float("random_erasing", _default("random_erasing"), "Probability of erasing "
                       "a random rectangle of a training face (0: off).", flag_values=fv)
    flags.DEFINE_float("mixup_alpha", _default("mixup_alpha"), "Mixup: Beta(alpha, alpha) "
                       "mixing of face pairs and their targets (0: off).", flag_values=fv)
    flags.DEFINE_float("cutmix_alpha", _default("cutmix_alpha"), "CutMix: a Beta(alpha, "
                       "alpha)-sized patch from another face, targets mixed by area (0: off). "
                       "With --mixup_alpha too, each batch uses one of the two.",
                       flag_values=fv)


def _define_runtime_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_float("data_in_memory_gb", _default("data_in_memory_gb"), "Decode each "
                       "split once into memory (uint8) when this process's share fits, and "
                       "shuffle all of it every epoch; else stream the records (0: stream).",
                       flag_values=fv)
    flags.DEFINE_integer("shuffle_buffer", _default("shuffle_buffer"), "Streaming only: "
                         "records in the training shuffle buffer.", flag_values=fv)
    flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over "
                         "the train split at the global batch size).", flag_values=fv)
    flags.DEFINE_integer("steps_per_execution", _default("steps_per_execution"), "Training "
                         "steps per tf.function call (raise on TPU).", flag_values=fv)
    flags.DEFINE_integer("backup_every_steps", _default("backup_every_steps"), "Save the "
                         "resumable backup every N steps (and at each epoch end).",
                         flag_values=fv)
    flags.DEFINE_float("backup_every_minutes", _default("backup_every_minutes"), "Also save "
                       "it when this long has passed since the last one (0: steps only).",
                       flag_values=fv)
    flags.DEFINE_bool("start_over", False, "Discard the backups, checkpoints and outputs a "
                      "previous run left in --job_dir and train from the start; with --run_id "
                      "only if that run had another run id.", flag_values=fv)
    flags.DEFINE_string("run_id", "", "Names this run for --start_over, so that a restart with "
                        "the same arguments (a Vertex AI preemption) resumes instead of starting "
                        "over again; `launch train` sets it.", flag_values=fv)
    flags.DEFINE_enum("strategy", _default("strategy"), STRATEGY_CHOICES, "auto: TPU if --tpu,"
                      " MirroredStrategy on >1 GPU, else default.", flag_values=fv)
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address ('local' on a TPU VM).",
                        flag_values=fv)
    flags.DEFINE_integer("logical_cpu_devices", 0, "Split the CPU into N logical devices "
                         "(to try --strategy=mirrored without GPUs).", flag_values=fv)
    flags.DEFINE_float("collective_timeout_seconds", 0.0, "Multi-worker: fail a collective "
                       "that waits longer than this for another worker (0: wait forever), "
                       "so a lost worker ends the job instead of hanging it.", flag_values=fv)
    flags.DEFINE_enum("mixed_precision", _default("mixed_precision"), MIXED_PRECISION_CHOICES,
                      "auto: bfloat16 on TPUs and GPUs of compute capability 8+, float16 "
                      "(loss-scaled) on older GPUs, none on CPU.", flag_values=fv)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train and eval steps.",
                      flag_values=fv)
    flags.DEFINE_enum("tta", _default("tta"), TTA_CHOICES, "Test-time augmentation of the "
                      "final evaluation: average each face with its mirror (flip) or over "
                      "4 corner and a centre crop and their mirrors (ten_crop).", flag_values=fv)
    flags.DEFINE_float("tta_crop_fraction", _default("tta_crop_fraction"), "ten_crop: side of "
                       "each crop as a fraction of the face.", flag_values=fv)


def _define_cache_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_bool("cache_features", False, "Run the frozen part below --trainable_from "
                      "once per face (and its mirror image) and train the rest on the cached "
                      "outputs: much faster epochs. Only flip augmentation.", flag_values=fv)
    flags.DEFINE_enum("cache_dtype", _default("cache_dtype"), ["float16", "float32"],
                      "Storage type of cached features (float16 halves memory and disk).",
                      flag_values=fv)
    flags.DEFINE_float("cache_memory_gb", _default("cache_memory_gb"), "Keep the feature "
                       "cache in memory up to this size per process (building it briefly "
                       "takes twice that), else write it to job_dir/cache/ (0: always disk).",
                       flag_values=fv)
    flags.DEFINE_integer("seed", _default("seed"), "Random seed.", flag_values=fv)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the `python -m trainer` flags on `flag_values`."""
    for define in (_define_model_flags, _define_schedule_flags,
                   _define_loss_and_augmentation_flags, _define_runtime_flags,
                   _define_cache_flags):
        define(flag_values)
    flags.mark_flags_as_required(["data_dir", "job_dir"], flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """The TrainConfig of parsed flags; raises ConfigError on impossible values."""
    values = {name: flag_values[name].value for name in _FIELDS}
    weights = values["weights"]
    values["weights"] = None if weights is None or weights.lower() == WEIGHTS_NONE else weights
    try:
        values["lr_boundaries"] = tuple(float(b) for b in values["lr_boundaries"])
    except ValueError:
        raise ConfigError(f"--lr_boundaries must be numbers (epochs), got "
                          f"{','.join(values['lr_boundaries'])}") from None
    return TrainConfig(**values)
