"""oneDNN on by default in every package that leads to TensorFlow, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from beam_preprocess.cpu_kernels import ONEDNN_VARIABLE, use_onednn_unless_set
from tests.conftest import REPO_ROOT

ONEDNN_IN_THIS_PROCESS = (
    "import {package}, tensorflow\n"
    "from tensorflow.python.util import _pywrap_util_port\n"
    "print(_pywrap_util_port.IsMklEnabled())\n")


def onednn_enabled(package: str, user_value: str | None) -> bool:
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT))
    if user_value is not None:
        env[ONEDNN_VARIABLE] = user_value
    result = subprocess.run([sys.executable, "-c", ONEDNN_IN_THIS_PROCESS.format(package=package)],
                            env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1] == "True"


def test_default_is_set_only_when_the_user_has_not_chosen():
    env = {}
    use_onednn_unless_set(env)
    assert env == {ONEDNN_VARIABLE: "1"}
    env = {ONEDNN_VARIABLE: "0"}
    use_onednn_unless_set(env)
    assert env == {ONEDNN_VARIABLE: "0"}


@pytest.mark.parametrize("package", ["trainer", "beam_preprocess", "launch"])
def test_importing_a_package_turns_onednn_on_before_tensorflow_loads(package):
    # On an AVX2 CPU TensorFlow would leave it off by itself; on AVX-512 it is on either way.
    assert onednn_enabled(package, user_value=None)


def test_a_user_who_turns_onednn_off_keeps_it_off():
    assert not onednn_enabled("trainer", user_value="0")
