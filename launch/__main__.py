"""`python -m launch image|preprocess|train|deploy|predict ...`: our code on Google Cloud.

A problem the user can fix (a UserError) ends in one message on stderr and exit code 1 for
the cloud's refusals (LaunchError), 2 for bad flags and inputs, never a stack trace.
"""

import importlib
import logging
import sys

from absl import flags

from beam_preprocess.user_error import UserError
from launch.common.errors import LaunchError

COMMANDS = {
    "image": "launch.image.cli",  # the container images, built by Cloud Build
    "preprocess": "launch.preprocess.cli",  # beam_preprocess on Dataflow
    "train": "launch.train.cli",  # the trainer as a Vertex AI custom job
    "deploy": "launch.endpoint.deploy_cli",  # an export on a Vertex AI endpoint
    "predict": "launch.endpoint.predict_cli",  # faces in photos, read by the endpoint
}
USAGE = """\
usage: python -m launch {image,preprocess,train,deploy,predict} [flags]
       (--help after a command lists its flags)
  image       build and push the container images with Cloud Build (once per version)
  preprocess  run beam_preprocess on Dataflow
  train       run the trainer as a Vertex AI custom job
  deploy      serve an exported model on a Vertex AI endpoint
  predict     send the faces in photos to a deployed model"""


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        asked_for_help = len(argv) >= 2 and argv[1] in ("-h", "--help", "help")
        print(USAGE, file=sys.stdout if asked_for_help else sys.stderr)
        return 0 if asked_for_help else 2
    command = argv[1]
    # Commands are imported on use: `preprocess` must work without the cloud extra.
    cli = importlib.import_module(COMMANDS[command])
    try:
        return cli.main(argv[1:])
    except flags.Error as error:
        print(f"launch {command}: error: {error}\nSee `python -m launch {command} --help`.",
              file=sys.stderr)
        return 2
    except UserError as error:
        print(f"launch {command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, LaunchError) else 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main(sys.argv))
