"""absl's app.run for our commands: `--help` exits 0 and a bad flag exits 2, as in other tools.

absl prints the usage for --help (and --helpshort, --helpfull) and then exits 1, which a script
or a Makefile reads as a failure, and exits 1 on an unknown or malformed flag too, where this
project's commands exit 2 for every usage error. The trainer's commands use this as well
(imports flow from the trainer to the Beam job, never back).
"""

from __future__ import annotations

import sys

from absl import app

HELP_FLAGS = {"-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml"}
EXIT_USAGE = 2


def run(main) -> None:
    """app.run(main), with the exit codes above for what absl decides before `main` runs."""
    started = False

    def started_main(argv):
        nonlocal started
        started = True
        return main(argv)

    try:
        app.run(started_main)
    except SystemExit as exit_:
        if exit_.code == 1 and not started:
            sys.exit(0 if _asks_for_help(sys.argv[1:]) else EXIT_USAGE)
        raise


def _asks_for_help(argv: list[str]) -> bool:
    options = argv[:argv.index("--")] if "--" in argv else argv
    return any(arg in HELP_FLAGS for arg in options)
