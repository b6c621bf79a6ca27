"""Prints the path of the VGGFace2 ResNet-50 notop weights if they can be had, else nothing.

    python scripts/find_weights.py [PATH] [--timeout SECONDS]

Looks at PATH (if given), then the Keras cache, then tries the download with a short timeout.
Used by scripts/demo.sh to choose between the pretrained and the from-scratch demo.
"""

import argparse
import sys

from beam_preprocess.user_error import UserError
from trainer.vggface.download import locate_vggface_weights

parser = argparse.ArgumentParser()
parser.add_argument("path", nargs="?")
parser.add_argument("--timeout", type=float, default=10.0)
args = parser.parse_args()
try:
    found = locate_vggface_weights(args.path, timeout=args.timeout)
except UserError as error:
    print(f"demo: {args.path} is not usable: {str(error).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)
print(found or "")
