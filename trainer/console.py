"""What the trainer's commands print: readable log lines (no thread ids), library chatter
kept out, and TensorFlow imported without its CPU-machine start-up noise."""

from __future__ import annotations

import logging as std_logging
import os
import sys

from absl import logging

from beam_preprocess.quiet_tensorflow import import_tensorflow

__all__ = ["import_tensorflow", "set_up_logging"]
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def set_up_logging(verbose: bool = True) -> None:
    """absl lines as "time LEVEL message" (no thread ids), INFO and up; libraries' INFO
    chatter (every collective, every checkpoint shard) kept out."""
    handler = logging.get_absl_handler()
    handler.setFormatter(std_logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
    if verbose:
        logging.set_verbosity(logging.INFO)

    def only_warnings_from_libraries(record) -> bool:
        library = any(f"{os.sep}{name}{os.sep}" in record.pathname
                      for name in ("tensorflow", "keras", "absl", "tf2onnx"))
        return record.levelno >= std_logging.WARNING or not library

    handler.addFilter(only_warnings_from_libraries)


def print_provenance(model) -> None:
    """What an ExportedModel was trained on, on stderr, and a warning if that was synthetic
    faces: the first lines of every command that predicts."""
    print(model.describe(), file=sys.stderr)
    if model.synthetic_warning:
        print(model.synthetic_warning, file=sys.stderr)
