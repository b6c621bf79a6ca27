"""The build context of our container images: this checkout minus what .dockerignore excludes.

`docker build` and Cloud Build read the same root .dockerignore; `launch image` also applies it
itself before uploading, so the tarball sent to Cloud Build is the context docker would see (no
.venv, no .git, no test outputs) and stays small.

Pattern rules are Docker's (docs.docker.com/build/concepts/context/#dockerignore-files):
comments start with `#`; `*` and `?` match within one path component, `**` any number of
components; a pattern matches a path or any directory above it; `!` re-includes; the last
matching pattern wins; a leading `/` and `./` are ignored.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

DOCKERIGNORE = ".dockerignore"


@dataclasses.dataclass(frozen=True)
class Pattern:
    text: str
    exclude: bool  # False for a `!` exception
    regex: re.Pattern

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _translate(pattern: str) -> str:
    """A Docker ignore pattern as a regular expression over '/'-separated relative paths."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    # A pattern that matches a directory excludes everything below it.
    return "".join(out) + r"(?:/.*)?\Z"


def parse(text: str) -> list[Pattern]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        body = line if exclude else line[1:].strip()
        body = os.path.normpath(body).replace(os.sep, "/").lstrip("/")
        body = body.removeprefix("./")
        if body in ("", "."):
            continue
        patterns.append(Pattern(line, exclude, re.compile(_translate(body))))
    return patterns


def read_patterns(root: Path) -> list[Pattern]:
    path = root / DOCKERIGNORE
    return parse(path.read_text()) if path.is_file() else []


def is_excluded(path: str, patterns: list[Pattern]) -> bool:
    excluded = False
    for pattern in patterns:
        if pattern.matches(path):
            excluded = pattern.exclude
    return excluded


def _may_reinclude_below(directory: str, patterns: list[Pattern]) -> bool:
    """Whether some `!` pattern could match a path inside `directory` (then walk into it)."""
    for pattern in patterns:
        if pattern.exclude:
            continue
        literal = re.split(r"[*?\[\\]", pattern.text.lstrip("!").strip().lstrip("/"), maxsplit=1)[0]
        literal = literal.removeprefix("./")
        if literal.startswith(directory + "/") or (directory + "/").startswith(literal):
            return True
    return False


def context_files(root: Path) -> list[str]:
    """Relative '/'-separated paths of the files (and symlinks) in the build context, sorted."""
    patterns = read_patterns(root)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for name in sorted(dirnames):
            rel = rel_dir + name
            if os.path.islink(os.path.join(dirpath, name)):
                if not is_excluded(rel, patterns):
                    files.append(rel)
            elif not is_excluded(rel, patterns) or _may_reinclude_below(rel, patterns):
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            rel = rel_dir + name
            if not is_excluded(rel, patterns):
                files.append(rel)
    return sorted(files)


@dataclasses.dataclass(frozen=True)
class SourceArchive:
    """The gzipped tarball of the build context."""

    data: bytes
    files: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build_archive(root: Path) -> SourceArchive:
    """The context as a .tar.gz in memory; the same bytes for the same files (no timestamps)."""
    files = context_files(root)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isreg():
                with open(root / rel, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return SourceArchive(buffer.getvalue(), tuple(files))


def iter_excluded_top_level(root: Path) -> Iterator[str]:
    """Top-level entries of root that the context leaves out (for the dry run's summary)."""
    patterns = read_patterns(root)
    for entry in sorted(os.listdir(root)):
        if is_excluded(entry, patterns):
            yield entry
