"""The code's shape rules (docs/architecture.md, "Imports"): checked on the source itself."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

KIT = Path(__file__).resolve().parent.parent / "kit"
# imported where they are used: kit works without these extras, or they must load after a setting
OPTIONAL = {
    "ray",
    "optuna",
    "mlflow",
    "tensorboard",
    "onnxruntime",
    "matplotlib",
    "uvicorn",
    "sqlalchemy",
    "kagglesdk",
    "kaggle",
    "ctypes",
}
LAZY_FILES = {KIT / "cli.py", KIT / "__init__.py"}  # `kit --help` stays light


def modules() -> list[str]:
    names = []
    for path in sorted(KIT.rglob("*.py")):
        parts = path.relative_to(KIT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    found = []

    def visit(node, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, True)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                if inside:
                    name = child.names[0].name if isinstance(child, ast.Import) else child.module
                    found.append((child.lineno, name or ""))
            else:
                visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def test_modules_import_at_their_top_except_optional_extras():
    lazy = [
        f"{path.relative_to(KIT.parent)}:{line} imports {name} inside a function"
        for path in sorted(KIT.rglob("*.py"))
        if path not in LAZY_FILES
        for line, name in function_level_imports(path)
        if name.split(".")[0] not in OPTIONAL
    ]
    assert lazy == []


def module_level_kit_imports(path: Path, module: str) -> set[str]:
    """The kit modules `module` imports when it loads (TYPE_CHECKING blocks excepted)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)  # a submodule, if it is one
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_kit_modules_import_each_other_without_a_cycle():
    paths = {name: path for name, path in zip(modules(), sorted(KIT.rglob("*.py")), strict=True)}
    graph = {}
    for name, path in paths.items():
        edges = {m for m in module_level_kit_imports(path, name) if m in paths and m != name}
        parent = name.rpartition(".")[0]  # importing kit.a.b runs kit/a/__init__.py first
        graph[name] = edges | ({parent} if parent in paths and parent != "kit" else set())
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    cycles = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                walk(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == []


def test_importing_kit_sets_the_offline_switches_first():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_ALBUMENTATIONS_UPDATE", "HF_HUB_OFFLINE")
    }
    code = (
        "import kit.data.transforms, kit.train.model, os; "
        "print(os.environ['NO_ALBUMENTATIONS_UPDATE'], os.environ['HF_HUB_OFFLINE'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.split() == ["1", "1"], done.stderr
