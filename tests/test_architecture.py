"""The layers of ARCHITECTURE.md, checked over dessam's import graph.

The graph is read from the source (every `import` and `from ... import`, also those inside
functions, which dessam uses to load heavy libraries only when needed). No module may import a
module of a higher layer, and no two modules may import each other, directly or around a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dessam"

# The layers, lowest first: (name, the modules and packages it holds, relative to `dessam`). A module
# may import from its own layer and the layers below it, never from a layer above.
LAYERS = (
    ("foundations", ("errors", "atomic", "yaml_file", "devices", "home", "digests", "licences")),
    ("config", ("config",)),
    ("data", ("data", "metrics")),
    ("geometry", ("geometry",)),
    ("models", ("models",)),
    ("inference", ("inference",)),
    ("training", ("training",)),
    ("evaluation / outputs", ("evaluation", "outputs", "labeling")),
    ("leaves", ("commands", "__main__", "workflows", "pretrain", "napari", "")),
)


def layer_of(module: str) -> int:
    """The index in `LAYERS` of a module named relative to `dessam` ("" is the package itself)."""
    best, best_length = None, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if (module == member or (member and module.startswith(member + "."))) and len(member) > best_length:
                best, best_length = index, len(member)
    if best is None:
        raise KeyError(f"dessam.{module} belongs to no layer; add it to LAYERS")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set) -> set:
    """The dessam modules `path` imports (relative to `dessam`), wherever the import statement is."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name[len("dessam."):] for alias in node.names if alias.name.startswith("dessam.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == "dessam" or node.module.startswith("dessam.")):
                base = node.module.split(".")[1:]
            else:
                continue
            base = ".".join(base)
            targets = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
            targets = [t if t in modules else base for t in targets]  # `from . import x` of a module x
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target != name:
                found.add(target)
    return found


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules) for path in paths}


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_import_from_a_higher_layer():
    upward = [f"dessam.{module} ({LAYERS[layer_of(module)][0]}) imports dessam.{target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(import_graph().items()) for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def test_the_checks_see_upward_imports_and_cycles():
    graph = {"data.coco": {"inference.predictor"}, "inference.predictor": {"data.coco"}}
    assert cycles(graph) == [["data.coco", "inference.predictor"]]
    assert layer_of("data.coco") < layer_of("inference.predictor") < layer_of("commands")


def test_each_sub_command_lives_in_the_module_the_registry_names():
    from dessam.commands import COMMANDS, build_parser, command_module

    for name in COMMANDS:
        assert command_module(name).NAME == name
    full = build_parser()
    assert set(full._subparsers._group_actions[0].choices) == set(COMMANDS)
    one = build_parser("predict")
    assert set(one._subparsers._group_actions[0].choices) == {"predict"}
