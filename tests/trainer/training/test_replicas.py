"""What only several replicas show, on two logical CPUs (each check in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.trainer_data import REPO_ROOT, trainer_env


def run_check(name: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.support.replica_checks", name],
                            cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_float16_overflow_on_one_replica_skips_the_step_everywhere_and_halves_the_scale():
    """Keras' LossScaleOptimizer alone let replica 1's inf into the weights (-inf, scale
    unchanged); the replicas now agree on finiteness before applying."""
    result = run_check("float16_overflow_on_one_replica")
    assert result["weights_unchanged"] and result["weights_finite"]
    assert result["scale_after"] == result["scale_before"] / 2
    assert result["loss_end"] < 0.7 * result["loss_start"], result  # and it goes on learning


@pytest.mark.slow
def test_batchnorm_statistics_are_synchronised_across_replicas():
    result = run_check("synchronized_batchnorm")
    replica0, replica1 = result["synchronized"]
    assert replica0 == replica1 == pytest.approx([5.0, 5.0, 5.0])  # the global batch's mean
    per_replica = result["per_replica"]
    assert per_replica[0] != per_replica[1]  # what Keras does without the switch


@pytest.mark.slow
def test_augmentation_draws_differ_across_replicas_and_steps_and_repeat_for_a_step():
    result = run_check("augmentation_differs_across_replicas")
    assert result == {"replicas_differ": True, "repeatable": True, "steps_differ": True}
