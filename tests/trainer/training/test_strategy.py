"""Strategy, chief and precision on this CPU-only machine."""

import pytest

from trainer.training.strategy import (
    StrategyError,
    any_worker,
    create_strategy,
    current_task,
    precision_policy,
)


def test_default_strategy_process_is_chief_and_agrees_with_itself():
    strategy = create_strategy("default")
    assert current_task(strategy).is_chief
    assert any_worker(strategy, True, False) == (True, False)
    with pytest.raises(StrategyError, match="unknown strategy 'parameter_server'"):
        create_strategy("parameter_server")


@pytest.mark.parametrize("mode, policy", [
    ("none", "float32"), ("auto", "float32"),  # auto on a CPU: neither half type is fast here
    ("bfloat16", "mixed_bfloat16"), ("float16", "mixed_float16")])
def test_mixed_precision_modes_on_a_cpu(mode, policy):
    assert precision_policy(mode, create_strategy("default")) == policy


def test_nvidia_gpus_that_tensorflow_cannot_see_are_named_in_one_line(tmp_path):
    """A `pip install` without the [gpu] extra gives TensorFlow without CUDA: on a machine
    whose NVIDIA driver runs GPUs (here: a stand-in for /proc/driver/nvidia/gpus; this
    machine's TensorFlow sees no GPU) the trainer says so instead of training on the CPU
    silently."""
    from trainer.training.strategy import unseen_gpus_warning

    assert unseen_gpus_warning(str(tmp_path / "no_driver")) is None
    assert unseen_gpus_warning(str(tmp_path)) is None  # a driver without GPUs
    for bus_id in ("0000:3b:00.0", "0000:5e:00.0"):
        (tmp_path / bus_id).mkdir()
    warning = unseen_gpus_warning(str(tmp_path))
    assert warning.startswith(f"2 NVIDIA GPU(s) found ({tmp_path}) but TensorFlow sees none")
    assert 'pip install -c constraints.txt -c containers/cuda-constraints.txt ".[gpu]"' in warning
