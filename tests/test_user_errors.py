"""Every expected failure is a UserError, and the commands catch that one class (and the
training loop's stop events), not lists of builtin exceptions.

The behaviour (one line on stderr, exit 2) is tested per command beside it; this keeps a new
error class or command from slipping back into the lists issue 27 removed.
"""

from __future__ import annotations

import ast
import importlib

import pytest

from beam_preprocess.user_error import UserError, first_line
from tests.test_import_graph import module_files

# launch/local_cloud stands in for Vertex AI in tests: its errors are the cloud's, not a user's.
NOT_COMMANDS = ("launch.local_cloud",)
COMMANDS = ("beam_preprocess.__main__", "beam_preprocess.finish", "trainer.__main__",
            "trainer.evaluate", "trainer.export_mobile", "trainer.predict", "trainer.serve",
            "launch.__main__", "trainer.inference.prediction_server")
BUILTIN_ERRORS = {"Exception", "OSError", "IOError", "ValueError", "RuntimeError",
                  "FileNotFoundError", "KeyError", "TypeError"}


def error_classes() -> list[tuple[str, str]]:
    """(module, class) of each class named *Error the project defines."""
    return [(module, node.name) for module, path in module_files().items()
            if not module.startswith(NOT_COMMANDS)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]


def test_the_scan_finds_the_error_classes():
    found = error_classes()
    assert ("trainer.config", "ConfigError") in found
    assert ("beam_preprocess.csv_rows", "HeaderError") in found
    assert len(found) >= 20


@pytest.mark.parametrize("module, name", error_classes())
def test_every_error_class_is_a_user_error(module, name):
    assert issubclass(getattr(importlib.import_module(module), name), UserError)


def caught_names(handler: ast.ExceptHandler) -> set[str]:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {ast.unparse(kind).split(".")[-1] for kind in kinds if kind is not None}


def reporting_handlers(command: str) -> list[ast.ExceptHandler]:
    """The command's except clauses that end it with a message on stderr."""
    tree = ast.parse(module_files()[command].read_text())
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.ExceptHandler) and "sys.stderr" in ast.unparse(node)]


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_catch_user_error_not_builtin_lists(command):
    handlers = reporting_handlers(command)
    caught = set().union(*(caught_names(h) for h in handlers))
    # Beam's runners re-raise a worker's error wrapped in their own: beam_preprocess catches
    # everything and lets user_facing_message find a UserError inside (or re-raise).
    unwraps = any("user_facing_message" in ast.unparse(h) for h in handlers)
    assert "UserError" in caught or unwraps
    assert not caught & BUILTIN_ERRORS or unwraps, caught
    assert not any("errors." in ast.unparse(h.type) for h in handlers if h.type)  # tf.errors


class _LibraryError(Exception):
    """An error as TensorFlow's and Google's clients raise them: a `message` attribute."""

    def __init__(self, message):
        super().__init__(f"{message}\n[[long trace]]")
        self.message = message


@pytest.mark.parametrize("error, quoted", [
    (OSError("Permission denied\n  at line 3"), "Permission denied"),
    (_LibraryError("Not found: gs://b/model\nStack trace..."), "Not found: gs://b/model"),
    (ValueError("  \n"), "ValueError"),
])
def test_a_user_error_quotes_one_line_of_the_failure_that_caused_it(error, quoted):
    assert first_line(error) == quoted
