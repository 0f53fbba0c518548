"""The code each stage depends on, derived from the import graph rather than listed by hand.

A stage runs `python -m pipeline.<stage>`: the stage's module, everything it imports inside
pipeline/ (at any depth, imports inside functions included), and the package files those modules
read (a file counts as read by each module whose source names it); a notebook stage adds its
notebook source and what that imports. The Snakefile takes its rule inputs and commands from here,
and dvc.yaml is generated from here (`python -m pipeline dvc-yaml`), so a new import can't be
forgotten by either engine.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).parent.parent
ROOT = PACKAGE.parent


def _module_file(name: str) -> Path | None:
    """pipeline.<name> as a file, if it is one of ours."""
    parts = name.split(".")
    if parts[0] != "pipeline":
        return None
    if len(parts) == 1:
        return PACKAGE / "__init__.py"
    candidate = PACKAGE.joinpath(*parts[1:])
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.exists():
            return path
    return None


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module a `from ... import` in `path` names: `from . import x` in pipeline/a.py is pipeline."""
    if node.level == 0:
        return node.module
    package = ["pipeline", *path.relative_to(PACKAGE).parent.parts]
    return ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))


@cache
def _imports(path: Path) -> frozenset[Path]:
    """The pipeline modules `path` imports, absolutely or relatively, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from pipeline import config` names a module; `from pipeline.x import y` names x.
            module = _absolute(node, path)
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parents = name.split(".")
            found.update(f for f in (_module_file(".".join(parents[:i])) for i in range(1, len(parents) + 1)) if f)
    return frozenset(found)


@cache
def _package_files() -> tuple[Path, ...]:
    return tuple(sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
                        and "__pycache__" not in p.parts and not p.name.startswith(".")))


def closure(*entries: Path) -> list[str]:
    """`entries` and every pipeline module and package file they reach, as sorted project paths."""
    seen: set[Path] = set()
    todo = [Path(e).resolve() for e in entries]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo.extend(_imports(path))
            source = path.read_text()
            todo.extend(f for f in _package_files() if f.name in source)
    return sorted(p.relative_to(ROOT).as_posix() for p in seen)


def command(stage: str, *target: str) -> str:
    """The shell command both engines run for a stage, e.g. command("train", "alexnet-none-s42")."""
    return " ".join(["python", "-m", f"pipeline.{stage}", *target])


def stage_code(stage: str, notebook: str | None = None) -> list[str]:
    """The files a stage's command runs or reads as code, e.g. stage_code("train")."""
    entries = [PACKAGE / f"{stage}.py"]
    if notebook is not None:
        entries.append(ROOT / "notebooks" / f"{notebook}.py")
    return closure(*entries)
