"""Splitting argv between our absl flags and Beam's pipeline options, and rejecting the rest.

Beam only logs arguments it does not know ("Discarding unparseable args"), so a mistyped flag
(`--image_szie 48`) would silently run with the default. After absl has taken our flags, every
remaining argument must be one of Beam's pipeline options, checked with the argparse parser Beam
itself builds from all its PipelineOptions classes (the parser `get_all_options` hands to its
public `add_extra_args_fn` hook), so that the check knows exactly the options Beam parses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from beam_preprocess.user_error import UserError


class UnknownFlagError(UserError, flags.Error):
    """An argument that is neither one of our flags nor a Beam pipeline option."""


def check_beam_arguments(beam_args: list[str], our_flags: Iterable[str]) -> None:
    """Raises UnknownFlagError for the first argument Beam would discard."""
    parsers = []
    beam_options = PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    _, unknown = parsers[0].parse_known_args(beam_args)
    if not unknown:
        return
    flag = next((arg for arg in unknown if arg.startswith("-")), None)
    if flag is None:
        raise UnknownFlagError(f"unexpected argument {unknown[0]!r} (flags are --name=value)")
    name = flag.split("=", 1)[0]
    known = [f"--{option}" for option in [*our_flags, *beam_options]]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UnknownFlagError(f"unknown flag {name}{hint}")
