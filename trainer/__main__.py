"""`python -m trainer --data_dir DIR --job_dir DIR [--flagfile=RECIPE --flagfile=HARDWARE] [flags]`,
e.g. --flagfile=configs/recipes/quick.cfg --flagfile=configs/hardware/cpu.cfg.

Fine-tunes the VGGFace2 ResNet-50 on beam_preprocess output (trainer/job.py;
docs/training.md). Expected errors end in one line on stderr and exit status 2; a job stopped by
SIGTERM saves a backup and exits with 143, and the same command resumes it.
"""

import sys

from absl import app, flags

from beam_preprocess import absl_command
from beam_preprocess.user_error import UserError
from trainer import config
from trainer.config import config_from_flags, define_flags


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from trainer import console

    console.set_up_logging(verbose=not flags.FLAGS["verbosity"].present)
    tf = console.import_tensorflow()
    tf.get_logger().setLevel("WARNING")
    from trainer import job
    from trainer.training.preemption import (
        EXIT_PREEMPTED,
        Preempted,
        StoppedBySigterm,
        stop_on_sigterm_between_steps,
    )

    stop_on_sigterm_between_steps()
    try:
        job.run(config_from_flags())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Preempted, StoppedBySigterm) as e:
        print(str(e), file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(config)  # --help lists the trainer's flags, not only absl's
    absl_command.run(main)
