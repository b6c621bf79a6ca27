"""Reading containers/*.Dockerfile, and running their install steps without a container runtime.

`parse` turns a Dockerfile into its instructions. `Emulation` runs an image's steps in a Python
environment that stands in for the base image: COPY copies the build context (.dockerignore
applied by the same code `launch image` uses) into a directory that stands for WORKDIR, ENV and
ARG become the environment of each RUN, and each RUN is the Dockerfile's own shell command, with
`python`/`pip` resolving to the stand-in environment. Commands must use paths relative to
WORKDIR (checked), so no step can touch this machine outside the emulation's directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from launch.image import dockerignore

_ABSOLUTE = re.compile(r"(?<![\w$}.])/(?!dev/(?:null|stdin|stdout|stderr)\b)[\w.-]")


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """The instructions, with continuation lines joined and comment lines dropped (as Docker
    does, also inside a continued instruction)."""
    instructions, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, args = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    return instructions


def env_pairs(args: str) -> dict[str, str]:
    """ENV a=1 b="two words" -> {'a': '1', 'b': 'two words'} (the key=value form only)."""
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"ENV {args!r}: only the key=value form is supported")
        pairs[key] = value
    return pairs


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def dockerfile(path: Path) -> list[Instruction]:
    return parse(path.read_text())


def base_image(instructions: list[Instruction]) -> str:
    [image] = [i.args for i in instructions if i.keyword == "FROM"]
    return image


def entrypoint(instructions: list[Instruction]) -> list[str] | None:
    points = [exec_form(i.args) for i in instructions if i.keyword == "ENTRYPOINT"]
    return points[-1] if points else None


def run_commands(instructions: list[Instruction]) -> list[str]:
    return [i.args for i in instructions if i.keyword == "RUN"]


def check_relative(command: str) -> None:
    match = _ABSOLUTE.search(command)
    if match:
        raise AssertionError(f"RUN {command!r} uses an absolute path ({match.group(0)}...): "
                             "the emulation can only run commands relative to WORKDIR")


# --- stand-ins for base images -----------------------------------------------------------------

def clone_environment(source_prefix: Path, target: Path) -> Path:
    """A copy of the virtualenv at source_prefix, hard-linked where possible (seconds, not
    minutes, for 3 GB). pip unlinks a file before writing one in its place, so installing into
    the copy never changes the original; scripts get their own interpreter line."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source_prefix, target, symlinks=True, copy_function=link_or_copy)
    python = target / "bin" / "python"
    for script in (target / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        head = script.read_bytes()[:200]
        if head.startswith(b"#!") and str(source_prefix).encode() in head.split(b"\n", 1)[0]:
            body = script.read_bytes().split(b"\n", 1)[1]
            fresh = script.with_name(script.name + ".new")
            fresh.write_bytes(f"#!{python}\n".encode() + body)
            fresh.chmod(script.stat().st_mode)
            os.replace(fresh, script)  # a new file: the original's link is untouched
    return target


def pip(environment: Path, *args: str, timeout: float = 900) -> None:
    subprocess.run([str(environment / "bin" / "python"), "-m", "pip", *args], check=True,
                   timeout=timeout, stdout=subprocess.DEVNULL)


def stand_in_wheel(directory: Path, name: str, version: str) -> Path:
    """An empty wheel of distribution `name`==`version` (installs metadata only)."""
    dist = re.sub(r"[-.]+", "_", name)
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            "Summary: empty stand-in for a test\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        for arcname, text in files.items():
            wheel.writestr(arcname, text)
        wheel.writestr(f"{info}/RECORD", "".join(f"{a},,\n" for a in [*files, f"{info}/RECORD"]))
    return path


def pins(constraints: Path) -> dict[str, str]:
    found = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name.strip()] = version.strip()
    return found


# --- running an image's steps ------------------------------------------------------------------

@dataclasses.dataclass
class Emulation:
    """The steps of one Dockerfile, run against `environment` (the base image's Python)."""

    dockerfile: Path
    context: Path
    root: Path  # stands for the image's filesystem root
    environment: Path
    log: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.instructions = dockerfile(self.dockerfile)
        self.env: dict[str, str] = {}
        self.workdir = self.root
        self.shims = self.root / ".shims"
        self.shims.mkdir(parents=True, exist_ok=True)
        python = self.environment / "bin" / "python"
        for name, target in (("python", f'"{python}"'), ("python3", f'"{python}"'),
                             ("python3.11", f'"{python}"'), ("pip", f'"{python}" -m pip'),
                             ("pip3", f'"{python}" -m pip')):
            shim = self.shims / name
            shim.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
            shim.chmod(0o755)

    def _path(self, image_path: str) -> Path:
        if not image_path.startswith("/"):
            return self.workdir / image_path
        return self.root / image_path.lstrip("/")

    def process_env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CERT", "PIP_INDEX_URL",
                         "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT",
                         "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CONFIG_FILE")}
        return {**keep, **self.env, "PATH": f"{self.shims}:/usr/bin:/bin",
                "VIRTUAL_ENV": str(self.environment)}

    def run(self, build_args: dict[str, str] | None = None, timeout: float = 900) -> None:
        build_args = build_args or {}
        for step in self.instructions:
            if step.keyword == "ARG":
                name, _, default = step.args.partition("=")
                self.env[name] = build_args.get(name, default)
            elif step.keyword == "ENV":
                self.env.update(env_pairs(step.args))
            elif step.keyword == "WORKDIR":
                self.workdir = self._path(step.args)
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif step.keyword == "COPY":
                sources = shlex.split(step.args)
                assert sources == [".", "."], f"only `COPY . .` is emulated, not {step.args}"
                for rel in dockerignore.context_files(self.context):
                    target = self.workdir / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(self.context / rel, target, follow_symlinks=False)
            elif step.keyword == "RUN":
                check_relative(step.args)
                self.log.append(step.args)
                result = subprocess.run(["/bin/sh", "-c", step.args], cwd=self.workdir,
                                        env=self.process_env(), capture_output=True,
                                        text=True, timeout=timeout)
                if result.returncode:
                    raise AssertionError(
                        f"{self.dockerfile.name}:{step.line}: RUN failed "
                        f"({result.returncode}):\n{step.args}\n{result.stdout[-3000:]}\n"
                        f"{result.stderr[-3000:]}")
            elif step.keyword not in ("FROM", "ENTRYPOINT", "CMD", "EXPOSE", "LABEL"):
                raise AssertionError(f"{self.dockerfile.name}:{step.line}: {step.keyword} is "
                                     "not emulated")

    def python(self, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """`python ARGS` in the image's final WORKDIR and environment."""
        return subprocess.run([str(self.shims / "python"), *args], cwd=self.workdir,
                              env={**self.process_env(), **kwargs.pop("env", {})},
                              capture_output=True, text=True, timeout=timeout, **kwargs)


def site_packages(environment: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return environment / "lib" / version / "site-packages"
