"""``realtime/`` may import ``domain`` and third-party libraries, never ``api`` nor
``projections`` (what it needs from them comes in through small protocols)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_architecture import imported_modules

ROOT = Path(__file__).resolve().parents[2]
REALTIME_FILES = sorted((ROOT / "realtime").rglob("*.py"))


def test_the_realtime_package_exists() -> None:
    assert {p.name for p in REALTIME_FILES} >= {
        "protocol.py", "relay.py", "gateway.py", "presence.py"
    }  # fmt: skip


@pytest.mark.parametrize("path", REALTIME_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_realtime_imports_neither_api_nor_projections(path: Path) -> None:
    tops = {m.split(".")[0] for _, m in imported_modules(path.read_text(encoding="utf-8"))}

    assert not tops & {"api", "projections"}
