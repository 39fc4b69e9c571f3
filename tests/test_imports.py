"""The package's house rules, read from its source: no import cycle (module level or inside
functions), and imports that point down the layers of docs/contracts.md ("The house")."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "plip_jax"

# Lower layers never import higher ones; folders of one layer do not import each other.
LAYERS = [
    {"core", "config_parts"},
    {"losses", "data"},
    {"models"},
    {"convert"},
    {"evals"},
    {"api"},
    {"trainers", "tools"},
    {"main", "search", "report", "serve", "aot"},   # the commands (`python -m` names of tools/)
    {"__init__"},                   # plip_jax.from_pretrained (a lazy import of api)
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name lives in (itself, or the nearest enclosing module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # every import, also in functions
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if not t.startswith("plip_jax"):
                    continue
                dep = _resolve(t, modules)
                if dep and dep != mod:
                    graph[mod].add(dep)
    return graph


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if parts[-1] == "__main__":   # `python -m plip_jax.convert`: a command
        return "main"
    return "__init__" if len(parts) == 1 else parts[1]


def test_the_walker_sees_function_level_imports():
    graph = _edges(_modules())
    assert "plip_jax.api" in graph["plip_jax"]          # from_pretrained imports api inside a function
    assert "plip_jax.core.checkpoint" in graph["plip_jax.api"]
    assert len(graph) > 50


def test_no_import_cycles():
    graph = _edges(_modules())
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    graph = _edges(_modules())
    unknown = sorted({_layer(m) for m in graph} - set(RANK))
    assert not unknown, f"modules outside the layer table (add them to LAYERS and docs/contracts.md): {unknown}"
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            a, b = _layer(mod), _layer(dep)
            if a != b and RANK[b] >= RANK[a]:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))
