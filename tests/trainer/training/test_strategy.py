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
