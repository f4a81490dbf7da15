"""The import contracts of ``pyproject.toml`` (import-linter) hold, and can fail.

``lint-imports`` is what a developer runs; this test runs the same contracts in the suite.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    script = "import sys; from importlinter.cli import lint_imports_command as c; c()"
    return subprocess.run(
        [sys.executable, "-c", script, "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_contract_is_kept() -> None:
    result = lint_imports()

    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


def test_contracts_cover_every_package_and_the_roles_of_api() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    contracts = config["importlinter"]["contracts"]
    layered = [c for c in contracts if c["type"] == "layers"]
    covered = {part.strip() for c in layered for layer in c["layers"] for part in layer.split("|")}
    assert {"api", "projections", "realtime", "domain"} <= covered
    assert {"http", "cli", "bootstrap", "adapters"} <= covered


def test_a_contract_can_fail(tmp_path: Path) -> None:
    """The same machinery reports an arrow the real code has, once a contract forbids it."""
    (tmp_path / "setup.cfg").write_text(
        "[importlinter]\nroot_packages =\n    api\n\n"
        "[importlinter:contract:http-blind]\nname = HTTP may not use the composition root\n"
        "type = forbidden\nsource_modules =\n    api.http\nforbidden_modules =\n"
        "    api.bootstrap\n",
        encoding="utf-8",
    )
    result = lint_imports("--config", str(tmp_path / "setup.cfg"))

    assert result.returncode == 1
    assert "BROKEN" in result.stdout and "api.http" in result.stdout
