"""`python -m trainer --data_dir DIR --job_dir DIR [--flagfile=configs/local_cpu.cfg] [flags]`.

Fine-tunes the VGGFace2 ResNet-50 on beam_preprocess output; see trainer/train.py and the
README "Training" section. Configuration errors exit with status 2 and a one-line message.
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging

from beam_preprocess.record_format import ManifestError
from trainer.config import ConfigError, config_from_flags, define_flags
from trainer.data.input_pipeline import CorruptRecordError
from trainer.training.strategy import StrategyError
from trainer.vggface.download import WeightsUnavailableError
from trainer.vggface.weight_files import WeightFileError

EXPECTED_ERRORS = (ConfigError, ManifestError, StrategyError, CorruptRecordError,
                   WeightFileError, WeightsUnavailableError, FileNotFoundError)


def _only_warnings_from_libraries(record) -> bool:
    library = any(f"{os.sep}{name}{os.sep}" in record.pathname
                  for name in ("tensorflow", "keras", "absl"))
    return record.levelno >= std_logging.WARNING or not library


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.INFO)
    import tensorflow as tf

    from trainer.training import loop as train

    # TensorFlow logs every collective and checkpoint shard at INFO; keep the job's own lines.
    tf.get_logger().setLevel("WARNING")
    logging.get_absl_handler().addFilter(_only_warnings_from_libraries)

    try:
        config = config_from_flags()
        train.run(config)
    except EXPECTED_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
