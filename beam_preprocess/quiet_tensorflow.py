"""TensorFlow imported without its start-up noise on machines without a GPU.

Importing TensorFlow where there is no GPU prints lines such as "Could not find cuda drivers"
and "failed call to cuInit: ... CUDA error" from C++ before any Python logging is set up; they
read as failures to a newcomer. `import_tensorflow` imports it (and lets it look for GPUs) with
the process's stderr captured, then passes on every line but those known ones. Both the Beam
job and the trainer's commands use it (the trainer imports this package already).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

# Start-up lines TensorFlow's C++ prints whatever the log level, harmless on a CPU machine.
START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "cudart_stub.cc", "Could not find cuda drivers", "failed call to cuInit",
    "cuda_platform.cc", "cuda_executor.cc", "oneDNN custom operations are on",
    "cpu_feature_guard.cc", "To enable the following instructions",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory", "computation placer already registered",
    "TF-TRT Warning",
)


@contextlib.contextmanager
def _filtered_native_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in START_UP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_tensorflow():
    """TensorFlow, imported and its devices listed, without its CPU-machine start-up noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _filtered_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
