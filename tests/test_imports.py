"""No import cycles between steerlab's modules, counting imports inside functions too.

Every ``import steerlab.x`` / ``from steerlab.x import y`` / relative import anywhere in a module (top level, in a
function, under ``if TYPE_CHECKING``) is an edge of the module graph; ``from steerlab.x import y`` points at the
submodule ``steerlab.x.y`` when ``y`` is one, else at ``steerlab.x``. A package's ``__init__`` is the package
itself. The graph must have no cycle (a self-import is no cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import steerlab

SRC = Path(steerlab.__file__).resolve().parent
ROOT = "steerlab"



def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The steerlab modules that module ``name`` (file ``path``) imports anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def nearest_module(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    out.add(nearest_module(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package of this module, one level up per extra dot
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == ROOT or target.startswith(ROOT + ".")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in modules else nearest_module(target))
    out.discard(None)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_function_level_and_from_package_imports():
    g = import_graph()
    assert "steerlab.eval.run" in g["steerlab.data.collect_wm"]  # imported inside collect_world_model
    assert "steerlab.tasks" in g["steerlab.train.loop"]  # `from steerlab import tasks` names the package module
    assert all(m.startswith(ROOT) for deps in g.values() for m in deps)


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, (
        "import cycle between steerlab modules (imports inside functions count): " + " -> ".join(cycle)
        + ". Move the shared code into a module both can import, or pass the dependency in as an argument."
    )
