"""The ways the twin differs from production are the ones docs/engine-and-twin.md lists, and only those.

The stack values the twin changes, the programs it puts on a server and the engine versions are read from
the code that makes them and compared with the document; the program itself has no twin mode. (The files a
fresh twin server has are compared in tests/twin/test_servers.py, on a running server.)
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from engine.workspace import PROGRAM_DIRS, PROGRAM_FILES
from twin.serverinit import SHIM_PLACES
from twin.stack import load_prod, production_addresses, twin_stack_document

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "engine-and-twin.md"
TWIN_ADDRESSES = {"server1": "127.0.1.1", "server2": "127.0.1.2", "server3": "127.0.1.3"}


def documented(heading: str) -> list[str]:
    """The first cell's first `code` of each row of the first table after the paragraph starting ``heading``."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows, in_table = [], False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            in_table = True
            first = line.split("|")[1]
            code = re.search(r"`([^`]+)`", first)
            if code and not set(first.strip()) <= {"-"}:
                rows.append(code.group(1))
        elif in_table:
            break
    assert rows, f"no table after {heading!r} in {DOC}"
    return rows


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def test_the_twin_stack_differs_from_prod_only_in_the_documented_values():
    prod = load_prod()
    production = production_addresses(prod["config"])
    twin = twin_stack_document(prod, TWIN_ADDRESSES, metrics_endpoint="http://127.0.1.254:9090")
    before, after = dict(leaves(prod)), dict(leaves(twin))
    assert set(before) == set(after), set(before) ^ set(after)
    moved = {path for path in before if before[path] != after[path]}
    addresses = {path for path in moved
                 if any(before[path] == production[n] and after[path] == TWIN_ADDRESSES[n] for n in production)}
    assert addresses, "no server address was replaced"
    others = {path.removeprefix("config.") for path in moved - addresses}
    rows = documented("**Stack values**")
    assert rows[0] == "bazbii:servers.*.address"  # the address row; every other row is one value
    assert others == set(rows[1:])


def test_the_programs_a_server_runs_in_place_of_the_real_ones_are_the_documented_ones():
    assert set(documented("**Programs on a server**")) == set(SHIM_PLACES)


def _non_docstring_strings(tree: ast.AST) -> Iterator[str]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def program_sources() -> Iterator[Path]:
    for name in PROGRAM_FILES:
        if name.endswith(".py"):
            yield REPO / name
    for directory in PROGRAM_DIRS:
        yield from sorted((REPO / directory).rglob("*.py"))


def test_the_program_has_no_twin_mode():
    """No module of the program imports the twin or names it in a value (a setting, a variable, a path)."""
    offenders = []
    for path in program_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "twin" for a in node.names):
                offenders.append(f"{path.relative_to(REPO)}: import twin")
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "twin":
                offenders.append(f"{path.relative_to(REPO)}: from {node.module} import")
        offenders += [f"{path.relative_to(REPO)}: {text!r}" for text in _non_docstring_strings(tree)
                      if re.search(r"twin", text, re.IGNORECASE)]
    for name in ("Pulumi.yaml", "Pulumi.prod.yaml"):
        if re.search(r"twin", (REPO / name).read_text(), re.IGNORECASE):
            offenders.append(name)
    assert not offenders


def test_the_engine_versions_documented_are_the_pinned_ones():
    pins = tomllib.loads((REPO / "engine" / "versions.toml").read_text())
    text = DOC.read_text()
    expected = [f"`v{pins['pulumi']['version']}`", f"`{pins['kubernetes-provider']['version']}`",
                f"`{pins['kubernetes-provider']['plugin-version']}`", f"`{pins['command-provider']['plugin-version']}`",
                f"`{pins['cloudflare-provider']['plugin-version']}`", f"`{pins['kubernetes']['version']}`",
                f"`{pins['etcd']['version']}`"]
    missing = [version for version in expected if version not in text]
    assert not missing, f"{DOC.name} does not state {missing}"


@pytest.mark.parametrize("heading", ["**Stack values**", "**Programs on a server**", "**Files a fresh twin server has**"])
def test_each_documented_table_is_found(heading):
    assert documented(heading)
