"""Modules that need the `cloud` extra (google-cloud-aiplatform), imported with a clear message."""

from __future__ import annotations

import importlib

from launch.common.errors import LaunchError


def require(module: str, command: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if "aiplatform" not in str(error):
            raise
        raise LaunchError(f"`launch {command}` needs google-cloud-aiplatform: "
                          "pip install -c constraints.txt -e '.[cloud]'") from None
