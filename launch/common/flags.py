"""The flags every launcher command has: where it runs in Google Cloud, and a dry run."""

from __future__ import annotations

from absl import flags


def cloud_flags(region: str, dry_run: str) -> flags.FlagValues:
    """A fresh set of flags (so that each call of a command's main starts from defaults) with
    --project, --region (`region`: what the region is of) and --dry_run (`dry_run`: what it
    prints instead of contacting Google Cloud)."""
    fv = flags.FlagValues()
    flags.DEFINE_string("project", None, "Google Cloud project ID.", flag_values=fv)
    flags.DEFINE_string("region", None, f"Region of {region}, e.g. us-central1.",
                        flag_values=fv)
    flags.DEFINE_bool("dry_run", False, f"Print {dry_run}; contact nothing, write nothing.",
                      flag_values=fv)
    return fv
