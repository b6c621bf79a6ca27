"""TensorFlow's fast CPU kernels (oneDNN) on by default, on every CPU.

TensorFlow 2.21 turns its oneDNN kernels on by itself only on CPUs with AVX-512-class
features; on AVX2 CPUs (most laptops, AMD and pre-2019 Intel cloud VMs) they stay off and this
project's training step runs 2.25x slower (bench/train_step_bench.py on a 2-core AMD EPYC: 75.6
faces/s off, 170.1 on). TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, so
the default must be in the environment before the first `import tensorflow`: each of this
project's packages sets it in its __init__. A value the user set is kept (0 turns them off).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def use_onednn_unless_set(env: MutableMapping[str, str] = os.environ) -> None:
    env.setdefault(ONEDNN_VARIABLE, "1")
