"""The trainer's flags, the TrainConfig they make, and the shipped flagfiles."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from absl import flags

from tests.support.trainer_data import REPO_ROOT
from trainer.config import (
    FIELD_PARTS,
    PARTS,
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
    assert config.model.weights is None
    assert (config.schedule.epochs, config.loss.class_weight, config.model.image_size) == (
        3, "balanced", None)
    assert config.runtime.mixed_precision == "float16"
    assert config.schedule.lr_boundaries == (2.0, 4.5)
    assert parse("--data_dir=d", "--job_dir=j").model.weights == "vggface2"


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
        TrainConfig.of(**values)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_a_remote_tpu_with_cloud_storage_paths_is_fine():
    TrainConfig.of(data_dir="gs://b/records", job_dir="gs://b/run", tpu="my-tpu")


RECIPES = REPO_ROOT / "configs" / "recipes"
HARDWARE = REPO_ROOT / "configs" / "hardware"
TRAINER_HARDWARE = ("cpu", "gpu", "multi_gpu", "tpu")  # the rest configure `launch train`


def test_every_recipe_on_every_kind_of_hardware_parses_into_a_valid_config():
    recipes = sorted(path.stem for path in RECIPES.glob("*.cfg"))
    assert {"demo", "demo_pretrained", "fer2013", "ferplus", "quick"} <= set(recipes)
    assert {p.stem for p in HARDWARE.glob("*.cfg")} - set(TRAINER_HARDWARE) == {
        "vertex_gpu", "vertex_multiworker", "vertex_tpu"}
    configs = {(recipe, hardware): parse(f"--flagfile={RECIPES / recipe}.cfg",
                                         f"--flagfile={HARDWARE / hardware}.cfg",
                                         "--data_dir=gs://b/d", "--job_dir=gs://b/j")
               for recipe in recipes for hardware in TRAINER_HARDWARE}
    assert configs["fer2013_cached", "cpu"].cache.cache_features
    demo = configs["demo", "cpu"]
    assert demo.model.weights is None and demo.model.trainable_from == "all"
    assert demo.runtime.strategy == "default"
    fer2013, ferplus = configs["fer2013", "gpu"], configs["ferplus", "gpu"]
    assert (fer2013.optimizer.optimizer, fer2013.optimizer.nesterov, fer2013.evaluation.tta) == (
        "sgd", True, "ten_crop")
    assert (fer2013.optimizer.backbone_lr_multiplier
            == ferplus.optimizer.backbone_lr_multiplier == 0.1)
    assert fer2013.runtime.mixed_precision == ferplus.runtime.mixed_precision == "auto"
    assert ferplus.loss.ferplus_target == "distribution"
    assert ferplus.schedule.lr_boundaries == (10.0, 20.0)
    assert configs["fer2013_conv5", "multi_gpu"].runtime.strategy == "mirrored"
    tpu = configs["fer2013_conv5", "tpu"]
    assert tpu.runtime.strategy == "tpu" and tpu.runtime.mixed_precision == "auto"
    assert tpu.loop.batch_size % 8 == 0


@pytest.mark.parametrize("flagfile", sorted(
    [*RECIPES.glob("*.cfg"), *(HARDWARE / f"{name}.cfg" for name in TRAINER_HARDWARE)]),
    ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_flagfile_restates_a_default_or_mixes_recipe_and_hardware(flagfile):
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["trainer", f"--flagfile={flagfile}", "--data_dir=d", "--job_dir=j"])
    given = {name for name in FIELD_PARTS
             if flag_values[name].present and name not in ("data_dir", "job_dir")}
    assert given
    restated = {name for name in given if flag_values[name].value == flag_values[name].default}
    assert not restated, f"{flagfile.name} restates the defaults of {sorted(restated)}"
    # A recipe says what is learnt; hardware says where it runs (and, with it, how many steps
    # a call takes and how often a backup pays).
    hardware_flags = {name for name, part in FIELD_PARTS.items() if part == "runtime"} | {
        "steps_per_execution", "backup_every_steps"}
    if flagfile.parent == RECIPES:
        assert not given & (hardware_flags - {"backup_every_steps"}), flagfile.name
    else:
        assert given <= hardware_flags, flagfile.name


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


def test_every_field_of_the_schema_is_one_flag_with_its_default_and_help():
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    for part_name, part in PARTS.items():
        for field in dataclasses.fields(part):
            flag = flag_values[field.name]
            assert field.metadata["help"] and flag.help.endswith(field.metadata["help"])
            expected = list(field.default) if isinstance(field.default, tuple) else field.default
            assert flag.default == expected, field.name
            assert FIELD_PARTS[field.name] == part_name
    assert set(flag_values) == set(FIELD_PARTS)  # nothing defined beside the schema
    flag_values(["trainer", "--data_dir=d", "--job_dir=j"])
    assert config_from_flags(flag_values) == TrainConfig.of(data_dir="d", job_dir="j")


def test_problems_of_several_parts_come_in_one_error_naming_each_flag():
    with pytest.raises(ConfigError) as refused:
        TrainConfig.of(data_dir="d", job_dir="j", image_size=16, dropout=1.5, epochs=-1,
                       tta_crop_fraction=0.0)
    assert str(refused.value).split("; ") == [
        "--image_size must be >= 32, got 16", "--dropout must be in [0, 1), got 1.5",
        "--epochs must be >= 0, got -1", "--tta_crop_fraction must be in (0, 1], got 0"]
    with pytest.raises(ConfigError, match="no such setting: batchsize"):
        TrainConfig.of(data_dir="d", job_dir="j", batchsize=3)


def test_replace_changes_the_named_settings_and_checks_them_again():
    config = TrainConfig.of(data_dir="d", job_dir="j", epochs=3)
    changed = config.replace(jit_compile=True, weights=None)
    assert (changed.runtime.jit_compile, changed.model.weights) == (True, None)
    assert changed.schedule.epochs == 3 and config.runtime.jit_compile is False
    assert changed.flag_values() == {**config.flag_values(), "jit_compile": True,
                                     "weights": None}
    with pytest.raises(ConfigError, match="nothing to train"):
        config.replace(head_epochs=0, epochs=0)
