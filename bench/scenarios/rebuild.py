"""``rebuild``: rebuilding the shelf and inbox read models from a log of 1,000,000 events.

The log is generated through the domain and bulk-loaded (``bench.loader``: about 700,000
Library and 300,000 Chat events). Each projection is rebuilt with the operator's command,
``liudong projections rebuild <name>`` (a separate process, default page size), into a new
version that is then switched in; the figure is the events it processed (shelf: the Library
log; inbox: both logs) divided by the command's wall-clock time, start-up included.

Baseline: a raw sequential read of the same events tables (``bench.loader.raw_read``: a
server-side cursor over ``library_events`` then ``chat_events`` in ``notification_id``
order, every column fetched into Python, nothing decoded).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import time
from typing import Any

from bench.common import REPO_ROOT, Skip, Target, log
from bench.loader import big_log, raw_read

PROJECTIONS = ("shelf", "inbox")


def available() -> str | None:
    """Why the rebuild command cannot run here (``None`` when it can)."""
    try:
        ops = importlib.import_module("projections.ops")
        importlib.import_module("api.cli.projections")
    except ModuleNotFoundError as exc:
        return f"{exc.name} does not exist yet"
    if not hasattr(ops, "rebuild"):
        return "projections.ops has no rebuild()"
    return None


def raw_baseline(ctx: Any, url: str) -> tuple[float, dict[str, Any]]:
    if "raw_read" not in ctx.cache:
        rows, seconds = raw_read(url)
        ctx.cache["raw_read"] = (rows / seconds, {"rows": rows, "seconds": round(seconds, 2)})
        log(f"raw sequential read: {rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f}/s)")
    return ctx.cache["raw_read"]  # type: ignore[no-any-return]


def run_cli(url: str, args: list[str], log_path: Any) -> tuple[float, str]:
    """Run ``liudong <args>`` on database ``url``; returns (wall seconds, its output)."""
    env = {**os.environ, "DATABASE_URL": url}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    with open(log_path, "a") as fh:
        fh.write(f"$ liudong {' '.join(args)}\n{output}\n")
    if done.returncode != 0:
        raise RuntimeError(f"liudong {' '.join(args)} exited {done.returncode}: {output[-800:]}")
    return seconds, output


def run(ctx: Any) -> None:
    reason = available()
    if reason:
        raise Skip(f"no rebuild command: {reason}")
    url, counts = big_log(ctx)
    base, base_params = raw_baseline(ctx, url)
    for name in PROJECTIONS:
        seconds, output = run_cli(
            url, ["projections", "rebuild", name], ctx.work_dir / "rebuild.log"
        )
        events = counts.library if name == "shelf" else counts.total
        reported = re.search(r"([\d,]+) events in ([\d.]+) s", output)
        rate = events / seconds
        log(f"rebuild {name}: {events:,} events in {seconds:.1f} s ({rate:,.0f} events/s)")
        ctx.emit(
            f"rebuild.{name}",
            rate,
            "events/s",
            baseline=base,
            target=Target(">=", 0.5, on="ratio"),  # issue 14: half the raw read
            params={
                "events": events,
                "seconds": round(seconds, 2),
                "log": f"{counts.library:,} library + {counts.chat:,} chat events",
                "command": f"liudong projections rebuild {name} (default page size)",
                "command_reported": reported.group(0) if reported else None,
                "baseline": "raw sequential read of the events tables (server-side cursor)",
                "baseline_read": base_params,
            },
        )
