"""The packages' modules import one another without circles, counting the imports inside
functions too (such an import can hide a circle that breaks as soon as it moves to the top)."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

PACKAGES = ("beam_preprocess", "trainer", "launch")


def module_files() -> dict[str, object]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its file."""
    modules = module_files()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle as the path that closes it (depth-first search)."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_search_finds_a_circle_where_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_project_imports_itself_through_others():
    graph = import_graph()
    assert "trainer.inference.faces.detection" in graph  # the walk found the packages
    assert circles(graph) == []


# README's "Imports flow one way": each package imports only those listed after it, and the
# trainer's top-level modules (the commands, job, task, model) import everything but are
# imported by none of the packages, except the shared base modules.
LAYERS = ("launch", "trainer.inference", "trainer.training", "trainer.evaluation",
          "trainer.export", "trainer.data", "trainer.vggface", "beam_preprocess")
SHARED = {"trainer.config", "trainer.training.preemption"}


def layer_of(module: str) -> int | None:
    """The index of `module`'s package in LAYERS; None for the trainer's top-level modules."""
    for index, package in enumerate(LAYERS):
        if module == package or module.startswith(package + "."):
            return index
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a package's module to a package listed before it, or to a top-level
    module of the trainer, as "module -> target"."""
    upward = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        if here is None:
            continue
        for target in sorted(targets - SHARED - {"trainer"}):
            there = layer_of(target)
            if there is None or there < here:
                upward.append(f"{module} -> {target}")
    return upward


def test_the_layer_check_finds_an_upward_import():
    graph = {"trainer.export.loader": {"trainer.inference.photos", "trainer.data.manifest",
                                       "trainer.config"},
             "trainer.data.manifest": {"trainer.job"}, "trainer.job": {"launch.train.cli"}}
    assert upward_imports(graph) == ["trainer.data.manifest -> trainer.job",
                                     "trainer.export.loader -> trainer.inference.photos"]


def test_imports_flow_down_the_layers():
    assert upward_imports(import_graph()) == []
