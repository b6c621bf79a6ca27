"""gs://BUCKET/PATH as ROOT/BUCKET/PATH: Cloud Storage for the local stand-ins."""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import Path

GCS_PREFIX = "gs://"


@dataclasses.dataclass(frozen=True)
class LocalBuckets:
    root: Path

    def path(self, uri: str) -> Path:
        """The local folder or file of a gs:// URI."""
        if not uri.startswith(GCS_PREFIX):
            raise ValueError(f"not a gs:// URI: {uri}")
        name = posixpath.normpath(uri[len(GCS_PREFIX):])
        if name.startswith(("..", "/")):
            raise ValueError(f"{uri} points outside its bucket")
        return self.root / name

    def localize(self, text: str) -> str:
        """text with every gs:// URI in it (a flag value, an environment value) made local."""
        head, found, uri = text.partition(GCS_PREFIX)
        if not found:
            return text
        ending = "/" if uri.endswith("/") else ""
        return head + str(self.path(GCS_PREFIX + uri)) + ending
