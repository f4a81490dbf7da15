"""``export``: the event log to Parquet.

The same generated log as ``rebuild`` (``bench.loader``), exported with the analyst's command
``liudong events export --format parquet --out FILE`` (a separate process: both contexts'
logs, every event decoded with its Application's mapper, zstd Parquet). The figure is the
events written divided by the command's wall-clock time, start-up included; the file's row
count is checked against the log.

Baseline: the same raw sequential read as ``rebuild``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from bench.common import Skip, Target, log
from bench.loader import big_log
from bench.scenarios.rebuild import raw_baseline, run_cli


def run(ctx: Any) -> None:
    try:
        module = importlib.import_module("api.cli.events")
    except ModuleNotFoundError as exc:
        raise Skip(f"no export command: {exc.name} does not exist yet") from None
    if "export" not in module.events.commands:
        raise Skip("no `liudong events export` command yet")
    import pyarrow.parquet as pq

    url, counts = big_log(ctx)
    base, base_params = raw_baseline(ctx, url)
    out = ctx.work_dir / "export.parquet"
    seconds, output = run_cli(
        url,
        ["events", "export", "--format", "parquet", "--out", str(out)],
        ctx.work_dir / "export.log",
    )
    rows = pq.read_metadata(out).num_rows
    if rows != counts.total:
        raise RuntimeError(f"the export has {rows:,} rows, the log {counts.total:,} events")
    reported = re.search(r"exported .*", output)
    rate = rows / seconds
    log(f"export: {rows:,} events in {seconds:.1f} s ({rate:,.0f} events/s)")
    ctx.emit(
        "export.parquet",
        rate,
        "events/s",
        baseline=base,
        target=Target(">=", 100_000),
        params={
            "events": rows,
            "seconds": round(seconds, 2),
            "file_mb": round(out.stat().st_size / 1e6, 1),
            "command": "liudong events export --format parquet --out FILE",
            "command_reported": reported.group(0).strip() if reported else None,
            "baseline": "raw sequential read of the events tables (server-side cursor)",
            "baseline_read": base_params,
        },
    )
    out.unlink()
