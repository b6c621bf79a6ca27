"""The trainer's configuration schema, the flags generated from it, and the TrainConfig they
make.

Each knob is one field of one part (model, data, loss, augmentation, optimizer, schedule,
loop, runtime, evaluation, cache), declared with `knob`: its default, its help text and its
range sit beside it. `define_flags` makes one absl flag per field, named as the field (so every
flagfile in configs/ keeps its meaning), and `config_from_flags` reads them back; each part
checks its own ranges and TrainConfig the rules that span parts. Adding a knob is one field
plus the code that uses it, in the manner of TF Model Garden's config_definitions.

Flags are defined by `define_flags` (called by `python -m trainer`), not at import, so that
other entry points and tests can import this module without taking over the global flags.
This module imports no TensorFlow: `python -m trainer --helpfull` answers at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

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
class Range:
    """The values a numeric knob accepts; `low_open`/`high_open` exclude the bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, name: str, value) -> str | None:
        if value is None or self._holds(value):
            return None
        return f"--{name} {self._wording()}, got {value:g}"

    def _holds(self, value) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open
                                      else value <= self.high)
        return above and below

    def _wording(self) -> str:
        if self.high is None:
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if (self.low, self.high, self.low_open, self.high_open) == (0, 1, False, False):
            return "is a probability"
        return (f"must be in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1, high_open=True)  # [0, 1)
PROBABILITY = Range(0, 1)
SHARE = Range(0, 1, low_open=True)  # (0, 1]


def knob(default, help: str, *, choices: tuple[str, ...] | None = None,  # noqa: A002
         valid: Range | None = None, kind: type | None = None, required: bool = False):
    """A config field that is also a flag of the same name. `kind` is the flag's type when
    the default (None) does not say it; tuples are comma-separated lists."""
    metadata = {"help": help, "choices": choices, "valid": valid,
                "kind": kind or type(default), "required": required}
    return dataclasses.field(default=default, metadata=metadata)


class _Part:
    """A part of the config: checks each of its fields' range and choices when made (the rules
    that combine fields are TrainConfig's)."""

    def __post_init__(self):
        problems = list(self.field_problems())
        if problems:
            raise ConfigError("; ".join(problems))

    def field_problems(self) -> Iterator[str]:
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            if meta["required"] and not value:
                yield f"--{field.name} is required"
            elif meta["valid"] and (problem := meta["valid"].problem(field.name, value)):
                yield problem
            elif meta["choices"] and value not in meta["choices"]:
                yield f"--{field.name} must be one of {', '.join(meta['choices'])}, got {value}"


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Part):
    image_size: int | None = knob(
        None, "The network's input side (default: the records'). Records of another size are "
        "resized on the device, e.g. 48 px records for a 224 px network.", kind=int,
        valid=Range(32))
    weights: str | None = knob(
        "vggface2", "Backbone weights: 'vggface2' (download the published notop file), a path "
        "to a keras-vggface .h5, or 'none'.")
    trainable_from: str = knob(
        "conv5_3", "Fine-tuning cut: this block and everything above train ('conv5_3' is the "
        "blog's activation_46 cut); 'all' or 'none' (head only).",
        choices=TRAINABLE_FROM_CHOICES)
    train_top_batchnorm: bool = knob(
        False, "BatchNorm above the cut uses batch statistics in training (default: moving "
        "statistics); synchronised across replicas when there are several.")
    zero_init_residual: bool = knob(
        True, "With --weights=none: every residual branch starts at zero (its last "
        "BatchNorm's gamma is 0), so the network starts as its shortcut path and learns from "
        "scratch in far fewer steps (Goyal et al. 2017).")
    dense_units: int = knob(256, "Units of the head's hidden Dense layer.", valid=AT_LEAST_1)
    dropout: float = knob(0.5, "Dropout rate in the head.", valid=FRACTION)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Part):
    data_dir: str | None = knob(
        None, "Output directory of beam_preprocess (has manifest.json); local or gs://.",
        kind=str, required=True)
    data_in_memory_gb: float = knob(
        4.0, "Decode each split once into memory (uint8) when this process's share fits, and "
        "shuffle all of it every epoch; else stream the records (0: stream).",
        valid=NOT_NEGATIVE)
    shuffle_buffer: int = knob(2048, "Streaming only: records in the training shuffle "
                               "buffer.", valid=AT_LEAST_1)


@dataclasses.dataclass(frozen=True)
class LossConfig(_Part):
    label_smoothing: float = knob(0.0, "Label smoothing of the cross-entropy.", valid=FRACTION)
    class_weight: str = knob(
        "none", "balanced: weight each class by N / (C * count) from the manifest's train "
        "counts.", choices=("none", "balanced"))
    ferplus_target: str = knob(
        "majority", "FER+ records: train on the majority label or on the vote distribution "
        "(soft labels). Evaluation always reports majority-label accuracy.",
        choices=FERPLUS_TARGET_CHOICES)


@dataclasses.dataclass(frozen=True)
class AugmentationConfig(_Part):
    """On the device, in the training step."""

    augment: bool = knob(True, "Augment training faces on the device (flip, then the "
                         "transforms below).")
    rotation_degrees: float = knob(10.0, "Max random rotation.", valid=NOT_NEGATIVE)
    shift_fraction: float = knob(0.1, "Max random shift, as a fraction of the image size.",
                                 valid=NOT_NEGATIVE)
    zoom_fraction: float = knob(0.1, "Max random zoom in/out.", valid=NOT_NEGATIVE)
    affine_probability: float = knob(
        1.0, "Share of faces that get the rotation/shift/zoom (Albanie et al.: 0.5).",
        valid=PROBABILITY)
    crop_scale: float = knob(1.0, "Random resized crop: keep a random square of at least this "
                             "share of the area (1: off).", valid=SHARE)
    random_erasing: float = knob(0.0, "Probability of erasing a random rectangle of a "
                                 "training face (0: off).", valid=PROBABILITY)
    mixup_alpha: float = knob(0.0, "Mixup: Beta(alpha, alpha) mixing of face pairs and their "
                              "targets (0: off).", valid=NOT_NEGATIVE)
    cutmix_alpha: float = knob(
        0.0, "CutMix: a Beta(alpha, alpha)-sized patch from another face, targets mixed by "
        "area (0: off). With --mixup_alpha too, each batch uses one of the two.",
        valid=NOT_NEGATIVE)

    def uncacheable(self) -> list[str]:
        """The settings that would need new features every step, as flags."""
        settings = [f"--{name}={getattr(self, name):g}" for name in
                    ("rotation_degrees", "shift_fraction", "zoom_fraction", "random_erasing",
                     "mixup_alpha", "cutmix_alpha") if getattr(self, name) > 0]
        if self.crop_scale < 1:
            settings.append(f"--crop_scale={self.crop_scale:g}")
        return settings if self.augment else []


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(_Part):
    optimizer: str = knob("adam", "adam, adamw (decoupled --weight_decay) or sgd (--momentum, "
                          "--nesterov).", choices=OPTIMIZER_CHOICES)
    momentum: float = knob(0.9, "SGD momentum.")
    nesterov: bool = knob(False, "SGD with Nesterov momentum.")
    weight_decay: float = knob(0.0, "Decoupled weight decay (adamw, sgd).", valid=NOT_NEGATIVE)
    backbone_lr_multiplier: float = knob(
        1.0, "The trainable backbone layers learn at this times the head's rate (Albanie et "
        "al.: 0.1).", valid=POSITIVE)
    ema_decay: float = knob(0.0, "Keep an exponential moving average of the weights (e.g. "
                            "0.999) and evaluate and export it (0: off).", valid=FRACTION)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(_Part):
    head_epochs: int = knob(2, "Phase 1: epochs training the head with the backbone frozen.",
                            valid=NOT_NEGATIVE)
    epochs: int = knob(10, "Phase 2: epochs fine-tuning from --trainable_from.",
                       valid=NOT_NEGATIVE)
    learning_rate: float = knob(1e-3, "Phase 1 learning rate.", valid=POSITIVE)
    fine_tune_learning_rate: float = knob(1e-5, "Phase 2 learning rate of the head (much "
                                          "lower).", valid=POSITIVE)
    lr_schedule: str = knob(
        "cosine", "cosine: decay to 0 over each phase; step: times --lr_step_factor at each "
        "of --lr_boundaries; plateau: times --plateau_factor when the validation loss stops "
        "improving; constant.", choices=LR_SCHEDULE_CHOICES)
    warmup_epochs: float = knob(0.0, "Linear warm-up from 0 over the first epochs of each "
                                "phase (cosine and step).", valid=NOT_NEGATIVE)
    lr_boundaries: tuple[float, ...] = knob(
        (), "Step schedule: epochs (within a phase) after which the rate is multiplied by "
        "--lr_step_factor.")
    lr_step_factor: float = knob(0.1, "Step schedule factor.", valid=FRACTION)
    plateau_factor: float = knob(0.2, "Plateau: LR factor.", valid=FRACTION)
    plateau_patience: int = knob(2, "Plateau: epochs without improvement before reducing.",
                                 valid=AT_LEAST_1)
    min_learning_rate: float = knob(1e-7, "Plateau: lower bound.")

    @property
    def total_epochs(self) -> int:
        return self.head_epochs + self.epochs

    @property
    def plateau(self) -> tuple[float, int, float] | None:
        """(factor, patience, lowest rate) of the plateau schedule; None under the others."""
        if self.lr_schedule != "plateau":
            return None
        return self.plateau_factor, self.plateau_patience, self.min_learning_rate


@dataclasses.dataclass(frozen=True)
class LoopConfig(_Part):
    job_dir: str | None = knob(
        None, "Where this run writes checkpoints, backups, logs, eval and export; local or "
        "gs://. Rerun with the same job_dir to resume.", kind=str, required=True)
    batch_size: int = knob(32, "Batch size PER REPLICA; the global batch is this times the "
                           "number of replicas.", valid=AT_LEAST_1)
    steps_per_epoch: int | None = knob(None, "Steps per epoch (default: one pass over the "
                                       "train split at the global batch size).", kind=int,
                                       valid=AT_LEAST_1)
    steps_per_execution: int = knob(1, "Training steps per tf.function call (raise on TPU).",
                                    valid=AT_LEAST_1)
    backup_every_steps: int = knob(1000, "Save the resumable backup every N steps (and at "
                                   "each epoch end).", valid=AT_LEAST_1)
    backup_every_minutes: float = knob(10.0, "Also save it when this long has passed since "
                                       "the last one (0: steps only).", valid=NOT_NEGATIVE)
    start_over: bool = knob(
        False, "Discard the backups, checkpoints and outputs a previous run left in --job_dir "
        "and train from the start; with --run_id only if that run had another run id.")
    run_id: str = knob(
        "", "Names this run for --start_over, so that a restart with the same arguments (a "
        "Vertex AI preemption) resumes instead of starting over again; `launch train` sets "
        "it.")
    seed: int = knob(0, "Random seed.")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(_Part):
    """Where and how it runs."""

    strategy: str = knob("auto", "auto: TPU if --tpu, MirroredStrategy on >1 GPU, else "
                         "default.", choices=STRATEGY_CHOICES)
    tpu: str | None = knob(None, "TPU name or grpc:// address ('local' on a TPU VM).",
                           kind=str)
    logical_cpu_devices: int = knob(0, "Split the CPU into N logical devices (to try "
                                    "--strategy=mirrored without GPUs).")
    collective_timeout_seconds: float = knob(
        0.0, "Multi-worker: fail a collective that waits longer than this for another worker "
        "(0: wait forever), so a lost worker ends the job instead of hanging it.",
        valid=NOT_NEGATIVE)
    mixed_precision: str = knob(
        "none", "auto: bfloat16 on TPUs and GPUs of compute capability 8+, float16 "
        "(loss-scaled) on older GPUs, none on CPU.", choices=MIXED_PRECISION_CHOICES)
    jit_compile: bool = knob(False, "XLA-compile the train and eval steps.")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(_Part):
    tta: str = knob(
        "none", "Test-time augmentation of the final evaluation: average each face with its "
        "mirror (flip) or over 4 corner and a centre crop and their mirrors (ten_crop).",
        choices=TTA_CHOICES)
    tta_crop_fraction: float = knob(0.875, "ten_crop: side of each crop as a fraction of the "
                                    "face.", valid=SHARE)


@dataclasses.dataclass(frozen=True)
class CacheConfig(_Part):
    cache_features: bool = knob(
        False, "Run the frozen part below --trainable_from once per face (and its mirror "
        "image) and train the rest on the cached outputs: much faster epochs. Only flip "
        "augmentation.")
    cache_dtype: str = knob("float16", "Storage type of cached features (float16 halves "
                            "memory and disk).", choices=("float16", "float32"))
    cache_memory_gb: float = knob(
        4.0, "Keep the feature cache in memory up to this size per process (building it "
        "briefly takes twice that), else write it to job_dir/cache/ (0: always disk).",
        valid=NOT_NEGATIVE)


PARTS = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig,
         "augmentation": AugmentationConfig, "optimizer": OptimizerConfig,
         "schedule": ScheduleConfig, "loop": LoopConfig, "runtime": RuntimeConfig,
         "evaluation": EvaluationConfig, "cache": CacheConfig}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training job's configuration: its parts, and the rules that span them."""

    data: DataConfig
    loop: LoopConfig
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)

    def __post_init__(self):
        problems = self._rule_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def of(cls, **values) -> TrainConfig:
        """The config whose flags have `values` (by flag name) and the defaults elsewhere;
        every impossible value and combination in one ConfigError."""
        unknown = set(values) - set(FIELD_PARTS)
        if unknown:
            raise ConfigError(f"no such setting: {', '.join(sorted(unknown))}")
        parts, problems = {}, []
        for part_name, part in PARTS.items():
            try:
                parts[part_name] = part(**{name: value for name, value in values.items()
                                           if FIELD_PARTS[name] == part_name})
            except ConfigError as error:
                problems.append(str(error))
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**parts)

    def replace(self, **values) -> TrainConfig:
        """This config with `values` (by flag name) changed."""
        return TrainConfig.of(**{**self.flag_values(), **values})

    def flag_values(self) -> dict:
        """Every setting by its flag name (lists as tuples)."""
        return {name: getattr(getattr(self, part), name) for name, part in FIELD_PARTS.items()}

    def _rule_problems(self) -> list[str]:
        """The combinations of settings that cannot work: every rule that involves more than
        one field is here."""
        schedule, runtime = self.schedule, self.runtime
        problems = []
        if schedule.total_epochs == 0:
            problems.append("--head_epochs and --epochs are both 0: nothing to train")
        if schedule.lr_schedule == "step" and not schedule.lr_boundaries:
            problems.append("--lr_schedule=step needs --lr_boundaries (epochs, e.g. 10,20)")
        boundaries = schedule.lr_boundaries
        if list(boundaries) != sorted(boundaries) or any(b <= 0 for b in boundaries):
            problems.append(f"--lr_boundaries must be increasing epochs > 0, got "
                            f"{','.join(f'{b:g}' for b in boundaries)}")
        if self.optimizer.nesterov and self.optimizer.optimizer != "sgd":
            problems.append("--nesterov is a setting of --optimizer=sgd")
        if runtime.strategy == "tpu" and runtime.logical_cpu_devices > 1:
            problems.append("--logical_cpu_devices cannot be used with --strategy=tpu")
        if runtime.tpu and runtime.tpu != "local":
            paths = {"data_dir": self.data.data_dir, "job_dir": self.loop.job_dir}
            local = [f"--{name}={path}" for name, path in paths.items()
                     if not path.startswith("gs://")]
            if local:
                problems.append(f"a remote TPU (--tpu={runtime.tpu}) reads and writes only "
                                f"Cloud Storage, but {' and '.join(local)} is local: use gs:// "
                                "paths")
        return problems + self._cache_problems()

    def _cache_problems(self) -> list[str]:
        """--cache_features trains on features computed once per face: only flips (cached as
        a second view) survive; a random rotation, shift, zoom, crop, erasing or mixing would
        need new features every step, so it is refused rather than silently applied once."""
        if not self.cache.cache_features:
            return []
        problems = []
        if self.model.trainable_from == TRAIN_ALL:
            problems.append("--cache_features needs a frozen part: --trainable_from=all "
                            "trains the whole network")
        uncacheable = self.augmentation.uncacheable()
        if uncacheable:
            problems.append("--cache_features caches each face (and its mirror image) once, "
                            f"so it cannot apply {', '.join(uncacheable)}: turn them off "
                            "(flips stay) or use --noaugment")
        return problems


FIELD_PARTS = {field.name: part_name for part_name, part in PARTS.items()
               for field in dataclasses.fields(part)}  # flag name -> its part
FLAG_DEFAULTS = {field.name: field.default for part in PARTS.values()
                 for field in dataclasses.fields(part)}


# --- flags ------------------------------------------------------------------------------------

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string, tuple: flags.DEFINE_list}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the `python -m trainer` flags on `flag_values`: one per field of the schema."""
    required = []
    for part in PARTS.values():
        for field in dataclasses.fields(part):
            meta = field.metadata
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            if meta["choices"]:
                flags.DEFINE_enum(field.name, default, meta["choices"], meta["help"],
                                  flag_values=flag_values)
            else:
                _DEFINE[meta["kind"]](field.name, default, meta["help"],
                                      flag_values=flag_values)
            if meta["required"]:
                required.append(field.name)
    flags.mark_flags_as_required(required, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """The TrainConfig of parsed flags; raises ConfigError on impossible values."""
    return TrainConfig.of(**{name: _typed(name, flag_values[name].value)
                             for name in FIELD_PARTS})


def _typed(name: str, value):
    """A flag's value as its field holds it: 'none' weights are None, lists are tuples."""
    if name == "weights":
        return None if value is None or value.lower() == WEIGHTS_NONE else value
    if name == "lr_boundaries":
        try:
            return tuple(float(b) for b in value)
        except ValueError:
            raise ConfigError(f"--lr_boundaries must be numbers (epochs), got "
                              f"{','.join(value)}") from None
    return value
