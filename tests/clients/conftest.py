"""The clients' Node.js projects: skipped where ``node`` is absent; ``npm ci`` once when
``node_modules`` is missing (or older than package-lock.json)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "miniprogram"


@pytest.fixture(scope="session")
def sdk_dir() -> Path:
    """clients/miniprogram with its devDependencies installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    modules = SDK / "node_modules"
    lock = SDK / "package-lock.json"
    marker = modules / ".package-lock.json"  # npm writes it on every install
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=SDK,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return SDK
