"""`python -m beam_preprocess --input ... --output_dir ... [Beam options]`."""

import logging
import sys

from absl import flags

from beam_preprocess import pipeline
from beam_preprocess.errors import user_facing_message


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
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
