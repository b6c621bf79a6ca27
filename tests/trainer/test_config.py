"""The trainer's flags, the TrainConfig they make, and the shipped flagfiles."""

from __future__ import annotations

import subprocess
import sys

import pytest
from absl import flags

from tests.support.trainer_data import REPO_ROOT
from trainer.config import (
    STRATEGY_CHOICES,
    ConfigError,
    TrainConfig,
    config_from_flags,
    define_flags,
)


def parse(*argv):
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["trainer", *argv])
    return config_from_flags(flag_values)


def test_flags_make_a_config_with_weights_none_meaning_random():
    config = parse("--data_dir=d", "--job_dir=j", "--weights=none", "--epochs=3",
                   "--class_weight=balanced", "--mixed_precision=float16",
                   "--lr_schedule=step", "--lr_boundaries=2,4.5")
    assert config.weights is None
    assert (config.epochs, config.class_weight, config.image_size) == (3, "balanced", None)
    assert config.mixed_precision == "float16" and config.lr_boundaries == (2.0, 4.5)
    assert parse("--data_dir=d", "--job_dir=j").weights == "vggface2"


def test_required_flags_are_enforced_by_the_parser():
    with pytest.raises(flags.IllegalFlagValueError, match="data_dir"):
        parse("--job_dir=j")


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "--batch_size must be >= 1"),
    ({"head_epochs": 0, "epochs": 0}, "nothing to train"),
    ({"dropout": 1.0}, "--dropout must be in"),
    ({"random_erasing": 1.5}, "probability"),
    ({"fine_tune_learning_rate": 0.0}, "--fine_tune_learning_rate must be > 0"),
    ({"backbone_lr_multiplier": 0.0}, "--backbone_lr_multiplier must be > 0"),
    ({"cache_features": True}, "cannot apply --rotation_degrees=10, --shift_fraction=0.1"),
    ({"cache_features": True, "rotation_degrees": 0, "shift_fraction": 0, "zoom_fraction": 0,
      "mixup_alpha": 0.2}, "cannot apply --mixup_alpha=0.2"),
    ({"cache_features": True, "augment": False, "trainable_from": "all"},
     "--cache_features needs a frozen part"),
    ({"lr_schedule": "step"}, "--lr_schedule=step needs --lr_boundaries"),
    ({"lr_boundaries": (4.0, 2.0)}, "--lr_boundaries must be increasing"),
    ({"nesterov": True}, "--nesterov is a setting of --optimizer=sgd"),
    ({"crop_scale": 0.0}, "--crop_scale must be in (0, 1]"),
    ({"tpu": "my-tpu", "data_dir": "/local/records"},
     "a remote TPU (--tpu=my-tpu) reads and writes only Cloud Storage, but "
     "--data_dir=/local/records and --job_dir=j is local"),
])
def test_impossible_values_are_rejected_with_the_flag_name(changes, message):
    values = {"data_dir": "d", "job_dir": "j", **changes}
    with pytest.raises(ConfigError, match=_literal(message)):
        TrainConfig(**values)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_a_remote_tpu_with_cloud_storage_paths_is_fine():
    TrainConfig(data_dir="gs://b/records", job_dir="gs://b/run", tpu="my-tpu")


def test_every_shipped_flagfile_parses_into_a_valid_config():
    configs = {path.stem: parse(f"--flagfile={path}", "--data_dir=d", "--job_dir=j")
               for path in sorted((REPO_ROOT / "configs").glob("*.cfg"))
               if not path.stem.startswith(("vertex", "dataflow"))}
    assert {"local_cpu", "local_cpu_cached", "demo", "multi_gpu", "tpu"} <= set(configs)
    assert configs["local_cpu_cached"].cache_features
    assert configs["demo"].weights is None and configs["demo"].trainable_from == "all"
    assert configs["multi_gpu"].mixed_precision == "auto"
    fer2013, ferplus = configs["fer2013_recipe"], configs["ferplus_recipe"]
    assert (fer2013.optimizer, fer2013.nesterov, fer2013.tta) == ("sgd", True, "ten_crop")
    assert fer2013.backbone_lr_multiplier == ferplus.backbone_lr_multiplier == 0.1
    assert ferplus.ferplus_target == "distribution" and ferplus.lr_boundaries == (10.0, 20.0)
    tpu = parse(f"--flagfile={REPO_ROOT / 'configs' / 'tpu.cfg'}", "--data_dir=gs://b/d",
                "--job_dir=gs://b/j")
    assert tpu.strategy == "tpu" and tpu.mixed_precision == "auto" and tpu.batch_size % 8 == 0


def test_strategy_choices_are_what_the_strategy_module_builds():
    from trainer.training.strategy import STRATEGIES

    assert set(STRATEGY_CHOICES) == {"auto", *STRATEGIES}


def test_parsing_flags_imports_no_tensorflow():
    """`python -m trainer --helpfull` must answer at once: flag parsing imports no TF."""
    check = ("import sys, trainer.config; from absl import flags; "
             "trainer.config.define_flags(); flags.FLAGS(['trainer', '--data_dir=d', "
             "'--job_dir=j']); trainer.config.config_from_flags(); "
             "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    helped = subprocess.run([sys.executable, "-m", "trainer", "--helpfull"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    # absl prints the help and exits with status 1.
    assert "--backbone_lr_multiplier" in helped.stdout, helped.stderr[-2000:]
