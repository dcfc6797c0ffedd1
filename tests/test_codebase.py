"""The shape the README promises, checked on the source: short functions and modules, Ray only in the
orchestration, imports that point one way."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imdb_ray"
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 80, 400


def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def runtime_nodes(tree: ast.AST):
    """ast.walk, less `if TYPE_CHECKING:` blocks (imports for annotations only: never run, no cycle)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imported(tree: ast.Module) -> set[str]:
    """Every module named in an import statement that runs, at the top or inside a function."""
    names = set()
    for node in runtime_nodes(tree):
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


def test_every_public_module_level_function_has_type_hints():
    """Every argument and the return of each public function a module defines (methods follow the Tune, torch and
    MLflow interfaces they override); types used only in hints are imported under `if TYPE_CHECKING:`."""
    unhinted = []
    for path, tree in modules().items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if node.returns is None or any(a.annotation is None for a in args):
                    unhinted.append(f"{path}: {node.name}")
    assert not unhinted, unhinted


def test_only_the_sweep_package_imports_ray():
    """Everything below the orchestration (the loop, models, data, tracking) runs and is tested without Ray."""
    users = {path for path, tree in modules().items() if any(m == "ray" or m.startswith("ray.") for m in imported(tree))}
    assert users and all(path.startswith("imdb_ray/sweep/") for path in users), users


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (top level or inside a function), including
    `from imdb_ray import contracts`-style imports of a module by name."""
    names = {path.removesuffix(".py").replace("/", ".").removesuffix(".__init__"): tree for path, tree in trees.items()}
    graph = {}
    for name, tree in names.items():
        found = imported(tree) | {f"{n.module}.{a.name}" for n in runtime_nodes(tree) if isinstance(n, ast.ImportFrom) and n.module
                                  for a in n.names}
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): every import cycle, of any length."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# The one allowed loop (timm's pattern): the registry imports the model modules whose decorators fill it.
# (`from imdb_ray.models import baselines, classic, hf` in registry.py: the package and the three modules)
REGISTRY_LOOP = {("imdb_ray.models.registry", m) for m in ("imdb_ray.models", "imdb_ray.models.baselines", "imdb_ray.models.classic",
                                                             "imdb_ray.models.hf")}


def test_the_cycle_finder_catches_a_planted_three_module_cycle():
    trees = {"imdb_ray/a.py": ast.parse("import imdb_ray.b"), "imdb_ray/b.py": ast.parse("def f():\n    from imdb_ray import c"),
             "imdb_ray/c.py": ast.parse("from imdb_ray.a import x"), "imdb_ray/d.py": ast.parse("import imdb_ray.a")}
    assert cycles(import_graph(trees)) == [["imdb_ray.a", "imdb_ray.b", "imdb_ray.c"]]


def test_no_import_cycles():
    """No cycle of any length, local imports included, except the registry's import of its models."""
    graph = import_graph(modules())
    for a, b in REGISTRY_LOOP:
        assert b in graph[a], f"{a} no longer imports {b}: update REGISTRY_LOOP"
        graph[a].discard(b)
    assert not cycles(graph), cycles(graph)


def test_imports_point_one_way():
    """The core never imports the orchestration or the CLI."""
    graph = import_graph(modules())
    core = ("imdb_ray.train", "imdb_ray.models", "imdb_ray.data", "imdb_ray.text", "imdb_ray.embeddings", "imdb_ray.losses",
            "imdb_ray.tracking", "imdb_ray.config", "imdb_ray.bundle")
    upward = {(a, b) for a, deps in graph.items() if a.startswith(core) for b in deps
              if b.startswith(("imdb_ray.sweep", "imdb_ray.__main__", "imdb_ray.report"))}
    assert not upward, upward


def test_mlflow_is_read_and_written_only_in_tracking():
    """Every MLflow call lives in imdb_ray/tracking/; the pyfunc modules are the MLflow model flavour itself."""
    users = {path for path, tree in modules().items() if any(m == "mlflow" or m.startswith("mlflow.") for m in imported(tree))}
    assert users and all(p.startswith("imdb_ray/tracking/") or p in ("imdb_ray/pyfunc.py", "imdb_ray/pyfunc_model.py")
                         for p in users), users


def test_a_duplicate_model_name_is_an_error():
    import pytest

    from imdb_ray.models import get_model, register_model

    get_model("gru")  # the built-in models are registered

    class Impostor:
        def __init__(self, *, hidden: int = 1):
            pass

    with pytest.raises(ValueError, match="model name 'gru' is already registered by imdb_ray.models.classic.GRUClassifier"):
        register_model("gru")(Impostor)
    assert get_model("gru").origin == "imdb_ray.models.classic.GRUClassifier"


def test_plain_make_lists_the_targets_and_builds_nothing():
    """`make` alone shows the README's two commands and the rest; it would otherwise run the first target in the
    Makefile, the .venv build (minutes, and a venv in the wrong place for a user who only looked)."""
    import subprocess

    dry = subprocess.run(["make", "-n"], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "pip install" not in dry.stdout and "venv" not in dry.stdout.replace(".venv", ""), dry.stdout
    shown = subprocess.run(["make", "-s"], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "make quickstart" in shown.stdout and "make test " in shown.stdout, shown.stdout
