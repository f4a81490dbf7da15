"""The SDK's generated types follow the server: ``types/api.d.ts`` must be what
``openapi-typescript`` makes of the OpenAPI document the current code serves (regenerate with
``npm run gen-types`` in clients/miniprogram), and the declarations must type-check against
the official ``miniprogram-api-typings`` (the real ``wx`` satisfies the SDK's adapter)."""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

from api.http.openapi import dump


def test_the_committed_types_match_the_servers_schema(sdk_dir: Path, tmp_path: Path) -> None:
    schema = tmp_path / "openapi.json"
    schema.write_text(dump(), encoding="utf-8")
    fresh = tmp_path / "api.d.ts"
    done = subprocess.run(
        ["node", "scripts/gen-types.mjs", "--schema", str(schema), "--out", str(fresh)],
        cwd=sdk_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    committed = (sdk_dir / "types" / "api.d.ts").read_text(encoding="utf-8")
    generated = fresh.read_text(encoding="utf-8")
    if committed != generated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "types/api.d.ts (committed)",
                "types/api.d.ts (from the server)",
                n=2,
            )
        )
        raise AssertionError(
            "clients/miniprogram/types/api.d.ts is out of date: run `npm run gen-types` in "
            f"clients/miniprogram and commit it.\n{diff[:8000]}"
        )


def test_the_declarations_type_check_against_miniprogram_api_typings(sdk_dir: Path) -> None:
    done = subprocess.run(
        ["node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"],
        cwd=sdk_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
