"""The shape the README promises, checked on the source: short functions and modules, Ray only in the
orchestration, imports that point one way."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imdb_ray"
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 80, 400


def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.Module) -> set[str]:
    """Every module named in an import statement, at the top or inside a function."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_no_function_over_80_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for path, tree in modules().items():
        if tree.body and tree.body[-1].end_lineno > MAX_MODULE_LINES:
            long_modules.append((path, tree.body[-1].end_lineno))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= MAX_FUNCTION_LINES:
                long_functions.append((path, node.name, node.end_lineno - node.lineno + 1))
    assert not long_functions and not long_modules, (long_functions, long_modules)


def test_only_the_sweep_package_imports_ray():
    """Everything below the orchestration (the loop, models, data, tracking) runs and is tested without Ray."""
    users = {path for path, tree in modules().items() if any(m == "ray" or m.startswith("ray.") for m in imported(tree))}
    assert users and all(path.startswith("imdb_ray/sweep/") for path in users), users


def test_imports_point_one_way():
    """No two modules import each other (the registry's import of the model modules it fills is the
    one exception: timm's pattern), and the core never imports the orchestration or the CLI."""
    graph = {path.removesuffix(".py").replace("/", ".").removesuffix(".__init__"): {m for m in imported(tree) if m.startswith("imdb_ray")}
             for path, tree in modules().items()}
    pairs = {tuple(sorted((a, b))) for a, deps in graph.items() for b in deps if a in graph.get(b, set()) and a != b}
    assert pairs <= {("imdb_ray.models", "imdb_ray.models.registry")}, pairs
    core = ("imdb_ray.train", "imdb_ray.models", "imdb_ray.data", "imdb_ray.text", "imdb_ray.embeddings", "imdb_ray.losses",
            "imdb_ray.tracking", "imdb_ray.config", "imdb_ray.bundle")
    upward = {(a, b) for a, deps in graph.items() if a.startswith(core) for b in deps
              if b.startswith(("imdb_ray.sweep", "imdb_ray.__main__", "imdb_ray.report"))}
    assert not upward, upward
