"""The package's layout stays walkable: no import cycle, no private name borrowed across modules,
no grab-bag module or function, and every docstring example in the library runs.

The checks read the source with ``ast`` (imports inside functions count too: hiding an import in a
function does not remove the dependency).
"""
import ast
import doctest
import importlib
import pathlib

import jax
import pytest

from conftest import ROOT

PKG = ROOT / "lrpjax"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}
TREES = {name: ast.parse(p.read_text(encoding="utf-8")) for name, p in MODULES.items()}


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str):
    """``(target module, imported names)`` for every ``import``/``from`` of an lrpjax module."""
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "lrpjax":
                    yield a.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "lrpjax":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                yield (sub, []) if sub in MODULES else (node.module, [a.name])


def _private(n: str) -> bool:
    return n.startswith("_") and not n.startswith("__")


def test_there_are_modules_to_check():
    assert {"lrpjax", "lrpjax.rules", "lrpjax.relevance", "lrpjax._jaxpr", "lrpjax._checks",
            "lrpjax.flax_integration", "lrpjax.jobs"} <= set(MODULES)


def test_import_graph_has_no_cycle():
    graph = {name: {t for t, _ in _imports(name) if t in MODULES and t != name} for name in MODULES}
    state: dict = {}

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_no_private_name_crosses_a_module_boundary():
    offences = []
    for name in MODULES:
        aliases = {}
        for node in ast.walk(TREES[name]):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.startswith("lrpjax"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in MODULES:
                        aliases[a.asname or a.name] = sub
                        # a private submodule is internal to its package: its own modules may use it
                        if _private(a.name) and _package_of(name) != node.module \
                                and not _package_of(name).startswith(node.module + "."):
                            offences.append(f"{name} imports {sub}")
                    elif _private(a.name):
                        offences.append(f"{name} imports {node.module}.{a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES:
                        aliases[a.asname or a.name.split(".")[0]] = a.asname and a.name or "lrpjax"
        for node in ast.walk(TREES[name]):
            if isinstance(node, ast.Attribute) and _private(node.attr) \
                    and isinstance(node.value, ast.Name) and node.value.id in aliases:
                offences.append(f"{name} uses {aliases[node.value.id]}.{node.attr}")
    assert not offences, "private names used across modules:\n" + "\n".join(sorted(set(offences)))


def test_no_grab_bag_modules_or_functions():
    too_long = [f"{n}: {len(p.read_text().splitlines())} lines" for n, p in MODULES.items()
                if len(p.read_text().splitlines()) > MAX_MODULE_LINES]
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {n} lines")
    assert not too_long, "split these:\n" + "\n".join(too_long)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run(name):
    """Each module's doctests, in float32 (the users' default: x64 is on in the rest of the suite)."""
    module = importlib.import_module(name)
    with jax.enable_x64(False):
        res = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0, f"{res.failed} of {res.attempted} docstring examples of {name} failed"
