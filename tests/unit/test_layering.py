"""The import graph keeps its layers: no module-level import cycle, `shared/` imports neither party,
the client never imports the server, nothing below the web app imports `app/` (only the command
lines above it do), the ML code imports no web framework, and only `benchmarks/` (which plays both
parties) imports both the server and the client, while no product package imports `benchmarks/`.
Every import counts, also the ones inside functions (a deferred import is still a dependency);
`if TYPE_CHECKING:` blocks do not."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "model_owner_server", "data_owner_client", "benchmarks")
PRODUCT = ("shared", "model_owner_server", "data_owner_client")
BENCH = "benchmarks"
APP = "model_owner_server.app"
ABOVE_APP = ("model_owner_server.cli", BENCH)  # command lines that start the service
WEB = ("fastapi", "starlette", "uvicorn")
ML = ("shared", "data_owner_client", "model_owner_server.emulators", "model_owner_server.evaluation",
      "model_owner_server.plug_in", "model_owner_server.adapter_checks", "model_owner_server.base_models")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


def _imported_names(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    names: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> project modules it imports, module -> every top-level package it imports)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    externals: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = _imported_names(module, path)
        edges[module] = {t for t in map(owner, names) if t and t != module and not module.startswith(f"{t}.")}
        externals[module] = {n.split(".")[0] for n in names if n}
    return edges, externals


def _within(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


def test_no_import_cycle() -> None:
    edges, _ = _graph()
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_layers_point_one_way() -> None:
    edges, externals = _graph()
    problems = []
    for module, targets in edges.items():
        for target in targets:
            if _within(module, "shared") and not _within(target, "shared"):
                problems.append(f"{module} -> {target}: shared/ imports a party")
            if _within(module, "data_owner_client") and _within(target, "model_owner_server"):
                problems.append(f"{module} -> {target}: the client imports the server")
            if _within(target, APP) and not _within(module, (APP, *ABOVE_APP)):
                problems.append(f"{module} -> {target}: a lower layer imports the web app")
            if _within(target, BENCH) and _within(module, PRODUCT):
                problems.append(f"{module} -> {target}: the product imports the benchmarks")
    for module, packages in externals.items():
        if _within(module, ML) and packages & set(WEB):
            problems.append(f"{module} imports a web framework ({', '.join(sorted(packages & set(WEB)))})")
    for package in PRODUCT:  # the server never imports the client either: only the benchmarks play both parties
        reached = {party for m, ts in edges.items() if _within(m, package) for t in ts
                   for party in ("model_owner_server", "data_owner_client") if _within(t, party) and party != package}
        if reached:
            problems.append(f"{package} imports {', '.join(sorted(reached))}: only {BENCH}/ imports both parties")
    assert not problems, "\n".join(sorted(problems))


def test_the_check_sees_the_project() -> None:
    """Guards the guard: a check that found no modules or no edges would pass vacuously."""
    edges, _ = _graph()
    assert len(edges) > 100
    assert "model_owner_server.settings" in edges["model_owner_server.jobs.worker"]
    assert "shared.manifest" in edges["model_owner_server.emulators.build"]
    assert any(_within(t, APP) for t in edges["model_owner_server.cli"])  # deferred imports count
    bench_targets = {t for m, ts in edges.items() if _within(m, BENCH) for t in ts}
    assert any(_within(t, "data_owner_client") for t in bench_targets)  # the one module set allowed both parties
    assert any(_within(t, "model_owner_server") for t in bench_targets)
