"""Print an installed distribution's requirements (no extras), leaving out some, one per line.

    python containers/requirements.py [--exclude NAME ...] [DISTRIBUTION]

For the TPU image: this package requires `tensorflow`, but a TPU runs the `tensorflow-tpu` build,
which installs the same `tensorflow` Python package under another distribution name. Installing
our package with its dependencies would pull the CPU/GPU `tensorflow` wheel over it, so the image
installs it with --no-deps and then the requirements this prints. Standard library only: the
base image may have no `packaging` module.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(distribution: str, exclude: set[str]) -> list[str]:
    kept = []
    for requirement in importlib.metadata.requires(distribution) or []:
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue  # only what a plain `pip install <distribution>` installs
        match = _NAME.match(spec)
        if match and canonical(match.group(1)) in exclude:
            continue
        kept.append(requirement.strip())
    return kept


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("distribution", nargs="?", default="vggface-emotion")
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.distribution, {canonical(n) for n in args.exclude})))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
