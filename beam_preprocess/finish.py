"""`python -m beam_preprocess.finish --output_dir DIR [--run_id ID]`: commits a staged run.

The Beam job's driver commits what the pipeline staged in DIR/.staging/RUN_ID/ once the
pipeline is done (beam_preprocess.commit). When the driver died before or during that commit
(a closed laptop, a killed launcher, a job run from a template), this finishes it; running it
again on a committed run changes nothing.
"""

import logging
import sys

from absl import app, flags

from beam_preprocess import absl_command
from beam_preprocess.commit import finish_staged_run
from beam_preprocess.user_error import UserError

flags.DEFINE_string("output_dir", None, "The job's --output_dir (local or gs://).",
                    required=True)
flags.DEFINE_string("run_id", None, "The staged run to commit (default: the only one).")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        finish_staged_run(flags.FLAGS.output_dir.rstrip("/"), flags.FLAGS.run_id)
    except UserError as error:
        print(f"beam_preprocess.finish: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    absl_command.run(main)
