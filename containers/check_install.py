"""Build-time check of an image: fails `docker build`, not a paid job, when an import would fail.

    python containers/check_install.py [--tensorflow VERSION] MODULE...

Imports TensorFlow (and checks its version), then each module, and checks that they come from
the installed distribution, not from the source tree the image was built from.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

DISTRIBUTION = "vggface-emotion"
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tensorflow", help="the TensorFlow version the image must have")
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}; {DISTRIBUTION} "
          f"{importlib.metadata.version(DISTRIBUTION)}")
    if args.tensorflow:
        import tensorflow as tf

        if tf.__version__ != args.tensorflow:
            print(f"error: TensorFlow {tf.__version__} installed, expected {args.tensorflow}",
                  file=sys.stderr)
            return 1
        print(f"TensorFlow {tf.__version__}")
    for name in args.modules:
        module = importlib.import_module(name)
        where = os.path.abspath(module.__file__)
        if where.startswith(SOURCE_ROOT + os.sep):
            print(f"error: {name} was imported from the source tree ({where}), not from the "
                  "installed package", file=sys.stderr)
            return 1
        print(f"{name}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
