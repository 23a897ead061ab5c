"""Layering: the environments (``hiper_gym``) and ``hiper_gym.wrappers`` never import the learners.

Two checks: a static scan of every import in every ``.py`` under ``hiper_gym/`` and ``wrappers/``
(only ``hiper_gym/cli.py`` may name ``hiper_gym.agents``, as strings for its lazy dispatch), and a
fresh interpreter that imports every environment and wrapper module and must not end up with
``hiper_gym.agents`` loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> the package name it is imported as.
PACKAGES = {ROOT / "hiper_gym": "hiper_gym", ROOT / "wrappers": "hiper_gym.wrappers"}
FORBIDDEN = "hiper_gym.agents"
#: The dispatcher names learner modules in strings and imports them only when a command runs.
ALLOWED_DYNAMIC = {ROOT / "hiper_gym" / "cli.py"}


def module_name(path: Path) -> str:
    for folder, package in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise ValueError(path)


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of a ``from ... import``, relative ones included."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def is_forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import statement and string-named dynamic import in ``path``."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(node, module, is_package)
            found.append((node.lineno, source))
            # ``from hiper_gym import agents`` imports the subpackage too.
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node) and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.append((node.lineno, argument.value))
    return found


def _is_dynamic_import(call: ast.Call) -> bool:
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return name in {"import_module", "__import__"}


def source_files() -> list[Path]:
    return sorted(path for folder in PACKAGES for path in folder.rglob("*.py"))


def test_the_scan_sees_the_packages():
    files = source_files()
    assert ROOT / "wrappers" / "parsing.py" in files
    assert ROOT / "hiper_gym" / "alfworld" / "env.py" in files
    assert len(files) > 10


@pytest.mark.parametrize(
    ("source", "path", "flagged"),
    [
        ("import hiper_gym.agents.hae", "wrappers/x.py", True),
        ("from hiper_gym.agents import hae", "wrappers/x.py", True),
        ("from hiper_gym import agents", "hiper_gym/x.py", True),
        ("from ..agents import hae", "wrappers/x.py", True),
        ("from .. import agents", "wrappers/x.py", True),
        ("importlib.import_module('hiper_gym.agents.hiper')", "hiper_gym/x.py", True),
        ("from . import parsing", "wrappers/x.py", False),
        ("from hiper_gym.agentsmith import x", "wrappers/x.py", False),
        ("'hiper_gym.agents is named in a string only'", "wrappers/x.py", False),
    ],
)
def test_the_scan_flags_every_form_of_import(tmp_path, monkeypatch, source, path, flagged):
    fake_root = tmp_path
    (fake_root / "hiper_gym").mkdir()
    (fake_root / "wrappers").mkdir()
    file = fake_root / path
    file.write_text(source + "\n")
    monkeypatch.setitem(PACKAGES, fake_root / "hiper_gym", "hiper_gym")
    monkeypatch.setitem(PACKAGES, fake_root / "wrappers", "hiper_gym.wrappers")
    assert any(is_forbidden(name) for _, name in imported_names(file)) is flagged


def test_no_env_or_wrapper_module_imports_the_learners():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in source_files()
        if path not in ALLOWED_DYNAMIC
        for line, name in imported_names(path)
        if is_forbidden(name)
    ]
    assert offenders == []


def test_the_cli_names_the_learners_only_as_strings():
    cli = ROOT / "hiper_gym" / "cli.py"
    static = [
        name
        for node in ast.walk(ast.parse(cli.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        + [alias.name for alias in node.names]
    ]
    assert not any(is_forbidden(name) or name == "agents" for name in static)


IMPORT_EVERYTHING = """
import json, pkgutil, importlib, sys
import hiper_gym, hiper_gym.wrappers
names = ["hiper_gym", "hiper_gym.wrappers"]
for package in (hiper_gym, hiper_gym.wrappers):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.startswith("hiper_gym.agents"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[:2] == ["hiper_gym", "agents"])
print(json.dumps({"imported": names, "agents_loaded": loaded}))
"""


def test_importing_every_env_and_wrapper_module_leaves_the_learners_unloaded():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "hiper_gym.alfworld.env" in report["imported"]
    assert "hiper_gym.wrappers.plan_execute" in report["imported"]
    assert report["agents_loaded"] == []
