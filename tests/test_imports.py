"""xlmr's import graph has no cycle, counting the lazy imports inside functions too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "xlmr"


def module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their __init__)."""
    names = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = f
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The xlmr modules that `name` imports anywhere in its file (top level or inside functions)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package that holds `name`
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import func` imports mod
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import xlmr.tasks.base.x` -> the deepest module that exists
                t = t.rpartition(".")[0]
            # a submodule always runs its parent packages first: an edge to an ancestor is no cycle
            if t and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_find_cycle_finds_lazy_cycles_and_only_cycles(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import g\n")  # lazy import inside a function
    (pkg / "sub" / "__init__.py").write_text("from ..a import f\nfrom . import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    files = {"p": pkg / "__init__.py", "p.a": pkg / "a.py", "p.sub": pkg / "sub" / "__init__.py",
             "p.sub.b": pkg / "sub" / "b.py"}
    graph = {n: imports_of(n, f, files) for n, f in files.items()}
    assert graph == {"p": {"p.a"}, "p.a": {"p.sub"}, "p.sub": {"p.a", "p.sub.b"}, "p.sub.b": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.sub", "p.a"]


def test_xlmr_has_no_import_cycle():
    modules = module_names()
    assert "xlmr.model" in modules and "xlmr.tasks.base" in modules
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph["xlmr.finetune"] >= {"xlmr.checkpoint", "xlmr.train"}  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
