"""The job's trainer command line, checked here with the trainer's own flags.

A typo after `--` would otherwise be refused only by the trainer on the provisioned (billed)
machine. trainer.config imports no TensorFlow, so the check costs nothing.
"""

from __future__ import annotations

import uuid

from absl import flags

from trainer.config import ConfigError, TrainConfig, config_from_flags, define_flags


def parse_trainer_args(args: list[str]) -> TrainConfig:
    """The TrainConfig the job's `python -m trainer ARGS` would run with; flags.ValidationError
    naming the bad flag otherwise (an unknown flag, a bad value, an impossible combination)."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        leftover = fv(["trainer", *args])
        if len(leftover) > 1:
            raise ConfigError(f"unexpected arguments: {' '.join(leftover[1:])}")
        return config_from_flags(fv)
    except (flags.Error, ConfigError) as error:
        raise flags.ValidationError(f"trainer flags: {error}") from None


def new_run_id(display_name: str) -> str:
    """A name for one submission, the same in each of its restarts."""
    return f"{display_name}-{uuid.uuid4().hex[:8]}"
