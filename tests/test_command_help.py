"""Every absl command answers --help with its usage and exit 0, and an unknown flag with one
line naming it and exit 2 (absl alone exits 1 for both)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.trainer_data import REPO_ROOT, trainer_env

COMMANDS = ["trainer", "trainer.evaluate", "trainer.predict", "trainer.serve",
            "trainer.export_mobile", "beam_preprocess.synthetic", "beam_preprocess.finish"]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                          env=trainer_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_0_and_an_unknown_flag_exits_2(module):
    helped = run(module, "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "flags:" in helped.stdout + helped.stderr
    refused = run(module, "--no_such_flag=1")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "Unknown command line flag 'no_such_flag'" in refused.stderr
