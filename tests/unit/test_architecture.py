"""``domain/`` imports only the standard library, ``eventsourcing``, ``msgspec`` and itself; never
an I/O library nor another package of ours (``api``, ``projections``, ``realtime``).

The checker reads the source with ``ast`` (nothing is imported), so an import inside a function
or an ``if TYPE_CHECKING:`` block is caught as well; ``importlib.import_module("x")`` and
``__import__("x")`` with a literal name are treated as imports of ``x``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "domain"

ALLOWED_THIRD_PARTY = frozenset({"eventsourcing", "msgspec", "domain"})
# Checked before the standard-library allowance: most of these *are* in the standard library.
FORBIDDEN = (
    "socket",
    "ssl",
    "select",
    "selectors",
    "asyncio",
    "psycopg",
    "psycopg2",
    "psycopg_pool",
    "httpx",
    "urllib",
    "http",
    "sqlite3",
    "subprocess",
    "nats",
    "litestar",
    "requests",
    "eventsourcing.postgres",  # the library's own I/O adapters
    "eventsourcing.sqlite",
)
OUR_OTHER_PACKAGES = ("api", "projections", "realtime")


@dataclass(frozen=True)
class Violation:
    where: str
    line: int
    module: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: imports {self.module!r} ({self.why})"


def imported_modules(source: str) -> list[tuple[int, str]]:
    """``(line, absolute dotted module name)`` of every import in ``source``.

    Relative imports (``from . import x``) stay inside the package and are reported as
    ``domain``.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "domain"))
            elif node.module:
                found.append((node.lineno, node.module))
                # ``from eventsourcing import postgres`` imports eventsourcing.postgres
                found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and _is_dynamic_import(node.func)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(source: str, where: str = "<string>") -> list[Violation]:
    """Every import in ``source`` that ``domain/`` must not make."""
    found = []
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if any(_matches(module, f) for f in FORBIDDEN):
            found.append(Violation(where, line, module, "I/O library"))
        elif top in OUR_OTHER_PACKAGES:
            found.append(Violation(where, line, module, "domain must not depend on it"))
        elif top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
            found.append(Violation(where, line, module, "not stdlib/eventsourcing/msgspec"))
    return found


DOMAIN_FILES = sorted(DOMAIN.rglob("*.py"))


def test_the_domain_package_is_where_we_expect_it() -> None:
    names = {p.name for p in DOMAIN_FILES}
    assert {
        "__init__.py",
        "errors.py",
        "reader.py",
        "book.py",
        "loan.py",
        "commands.py",
        "library.py",
    } <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_module_imports_only_what_it_may(path: Path) -> None:
    found = violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))

    assert not found, "\n".join(map(str, found))


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_module_does_not_import_our_other_packages(path: Path) -> None:
    tops = {m.split(".")[0] for _, m in imported_modules(path.read_text(encoding="utf-8"))}

    assert not tops & set(OUR_OTHER_PACKAGES)


# -- the checker itself can fail ----------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import psycopg",
        "import psycopg.rows",
        "from psycopg_pool import ConnectionPool",
        "import socket",
        "import asyncio",
        "from urllib.request import urlopen",
        "import http.client",
        "import sqlite3",
        "import subprocess",
        "import httpx",
        "import nats",
        "from litestar import get",
        "import requests",
        "from eventsourcing.postgres import PostgresDatastore",
        "from eventsourcing import sqlite",
        "import api",
        "from api.http.errors import problem",
        "from projections import catalogue",
        "import realtime.gateway",
        "import isbnlib",  # third-party, not on the allowed list
        "def f():\n    import psycopg\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import httpx\n",
        "import importlib\nimportlib.import_module('psycopg')",
        "__import__('socket')",
    ],
)
def test_the_checker_flags_forbidden_imports(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "import uuid\nfrom typing import Any",
        "import msgspec",
        "from eventsourcing.domain import Aggregate, event",
        "from eventsourcing.application import Application",
        "from domain.errors import BookNotFound",
        "from . import errors",
        "from .errors import DomainError",
    ],
)
def test_the_checker_accepts_allowed_imports(source: str) -> None:
    assert violations(source) == []


def test_the_checker_reports_where() -> None:
    (v,) = violations("import uuid\n\nimport psycopg\n", "domain/x.py")

    assert (v.where, v.line, v.module) == ("domain/x.py", 3, "psycopg")
    assert "domain/x.py:3" in str(v)
