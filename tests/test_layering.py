"""The house rules of docs/architecture.md, checked over the package's imports (every `import` /
`from ... import` statement, also those inside functions):

- the trainer (`training/`) and the evaluator (`eval/`) import no method: of `methods/` only the
  registry and the protocol;
- the building blocks (`model/`, `losses/`, `weights/`) import no method, no pipeline, no CLI;
- the core (errors, files, config, sharding, checkpoints, ...) imports nothing but the core;
- datasets import no model and no method; nothing outside `main/` imports the CLI package;
- no import cycles between modules.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jax_refvos"
PKG = "jax_refvos"
CORE = {
    f"{PKG}.{m}"
    for m in (
        "errors",
        "fileio",
        "console",
        "parallel",
        "sharding",
        "config_lib",
        "distributed",
        "checkpoint",
        "token_ids",
    )
}
METHOD_DOORS = {f"{PKG}.methods.registry", f"{PKG}.methods.base", f"{PKG}.methods"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the project modules it imports}; `from a import b` counts as `a.b` when that
    is a module, else as `a`."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join([*here, base] if base else here)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in files else base)
        resolved = set()
        for t in targets:
            if not (t == PKG or t.startswith(PKG + ".")):
                continue
            while t not in files and "." in t:
                t = t.rsplit(".", 1)[0]
            if t != name:
                resolved.add(t)
        graph[name] = resolved
    return graph


GRAPH = import_graph()


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _violations(sources, forbidden, allowed=()) -> list[str]:
    return sorted(
        f"{m} -> {t}"
        for m in GRAPH
        if _in(m, *sources)
        for t in GRAPH[m]
        if _in(t, *forbidden) and t not in allowed
    )


def test_the_graph_sees_the_package():
    assert f"{PKG}.training.loop" in GRAPH and f"{PKG}.methods.registry" in GRAPH
    assert f"{PKG}.methods.registry" in GRAPH[f"{PKG}.training.loop"]
    assert f"{PKG}.methods.virst.model" in GRAPH[f"{PKG}.methods.virst.train_setup"]


def test_trainer_and_evaluator_import_no_method():
    bad = _violations([f"{PKG}.training", f"{PKG}.eval"], [f"{PKG}.methods"], allowed=METHOD_DOORS)
    assert not bad, bad


@pytest.mark.parametrize("block", ["model", "losses", "weights"])
def test_building_blocks_import_no_method_pipeline_or_cli(block):
    bad = _violations(
        [f"{PKG}.{block}"],
        [f"{PKG}.methods", f"{PKG}.pipeline", f"{PKG}.main", f"{PKG}.training", f"{PKG}.eval"],
    )
    assert not bad, bad


def test_core_imports_only_the_core():
    bad = sorted(f"{m} -> {t}" for m in CORE for t in GRAPH[m] if t not in CORE | {PKG})
    assert not bad, bad


def test_datasets_import_no_model_or_method():
    bad = _violations([f"{PKG}.datasets"], [f"{PKG}.model", f"{PKG}.methods", f"{PKG}.pipeline"])
    assert not bad, bad


def test_nothing_imports_the_cli():
    bad = sorted(
        f"{m} -> {t}"
        for m in GRAPH
        if not _in(m, f"{PKG}.main")
        for t in GRAPH[m]
        if _in(t, f"{PKG}.main")
    )
    assert not bad, bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
