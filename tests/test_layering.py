"""The house rules of docs/architecture.md, checked over the package's imports (every `import` /
`from ... import` statement, also those inside functions):

- the trainer (`training/`), the evaluator (`eval/`) and the CLI (`main/`) import no method: of
  `methods/` only the registry and the protocol, not even through other modules;
- the building blocks (`model/`, `losses/`, `weights/`) import no method, no pipeline, no trainer,
  no evaluator, no CLI, directly or through other modules; nor does `video_io.py`;
- the pipeline imports no model, method, trainer, evaluator or CLI;
- a method imports no other method, nor the trainer's loop, the evaluator's runner or the CLI;
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


def reachable(graph: dict[str, set[str]], start: str, stop=frozenset()) -> set[str]:
    """Every module `start` imports, directly or through others (not through `stop`)."""
    seen, todo = set(), [start]
    while todo:
        for t in graph.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                if t not in stop:
                    todo.append(t)
    return seen


def _violations(sources, forbidden, allowed=(), *, transitive=False) -> list[str]:
    modules = [m for m in GRAPH if _in(m, *sources)]
    assert modules, f"no module in {sources}: the rule would pass vacuously"
    out = set()
    for m in modules:
        targets = reachable(GRAPH, m, frozenset(allowed)) if transitive else GRAPH[m]
        out |= {f"{m} -> {t}" for t in targets if _in(t, *forbidden) and t not in allowed}
    return sorted(out)


def test_the_graph_sees_the_package():
    assert f"{PKG}.training.loop" in GRAPH and f"{PKG}.methods.registry" in GRAPH
    assert f"{PKG}.methods.registry" in GRAPH[f"{PKG}.training.loop"]
    assert f"{PKG}.methods.virst.model" in GRAPH[f"{PKG}.methods.virst.train_setup"]


@pytest.mark.parametrize("layer", ["training", "eval", "main"])
def test_trainer_evaluator_and_cli_import_no_method(layer):
    """Not directly, not through other modules (the registry imports methods by name only)."""
    bad = _violations([f"{PKG}.{layer}"], [f"{PKG}.methods"], allowed=METHOD_DOORS, transitive=True)
    assert not bad, bad


@pytest.mark.parametrize("block", ["model", "losses", "weights", "video_io"])
def test_building_blocks_import_no_method_pipeline_or_cli(block):
    bad = _violations(
        [f"{PKG}.{block}"],
        [f"{PKG}.methods", f"{PKG}.pipeline", f"{PKG}.main", f"{PKG}.training", f"{PKG}.eval"],
        transitive=True,
    )
    assert not bad, bad


def test_the_pipeline_imports_no_model_method_trainer_or_cli():
    forbidden = ["model", "methods", "training", "eval", "main"]
    bad = _violations([f"{PKG}.pipeline"], [f"{PKG}.{f}" for f in forbidden], transitive=True)
    assert not bad, bad


def test_a_method_imports_no_other_method_nor_the_loop_runner_or_cli():
    methods = {m.split(".")[2] for m in GRAPH if m.count(".") >= 2 and _in(m, f"{PKG}.methods")}
    methods -= {"base", "registry"}
    assert "virst" in methods
    for name in methods:
        others = [f"{PKG}.methods.{o}" for o in methods - {name}]
        top = [f"{PKG}.training.loop", f"{PKG}.eval.runner", f"{PKG}.main"]
        bad = _violations([f"{PKG}.methods.{name}"], [*others, *top, f"{PKG}.methods.registry"])
        assert not bad, bad


def test_core_imports_only_the_core():
    assert set(GRAPH) >= CORE
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


def test_the_checks_see_a_violation():
    """A trainer module reaching a method through a building block is caught."""
    graph = {"t": {"b"}, "b": {"m"}, "m": set()}
    assert reachable(graph, "t") == {"b", "m"} and reachable(graph, "t", frozenset({"b"})) == {"b"}


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
