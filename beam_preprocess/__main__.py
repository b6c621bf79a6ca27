"""`python -m beam_preprocess --input ... --output_dir ... [Beam options]`."""

import logging
import sys

from absl import flags

from beam_preprocess import pipeline
from beam_preprocess.errors import user_facing_message
from beam_preprocess.quiet_tensorflow import import_tensorflow


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Beam's INFO lines (type hints, write bundles, the runner it tries first) bury the job's.
    for library in ("apache_beam", "absl"):
        logging.getLogger(library).setLevel(logging.WARNING)
    # The in-process runner imports TensorFlow in this process: do it once, quietly.
    import_tensorflow()
    try:
        pipeline.run(sys.argv)
    except (flags.Error, Exception) as error:  # noqa: BLE001 - every failure ends in one message
        message = user_facing_message(error)
        if message is None:
            raise
        print(f"beam_preprocess: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
