"""``python -m bench [--quick] [--markdown] [--only commands,rebuild] [--list]``

Runs the scenarios in order (commands, chat_append, rebuild, export, delivery, fanout,
connections, media), printing one JSON figure per line on stdout (progress goes to stderr).
``--quick`` runs every scenario at a small size (a smoke for CI, under two minutes; it says
nothing about speed). ``--markdown`` rewrites the generated part of ``docs/BENCHMARKS.md``.

Exit status: 0 when every scenario ran or was skipped (a missing product piece), 1 when a
scenario crashed (its line carries ``"error"``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    Reporter,
    Services,
    Skip,
    Target,
    log,
    machine_info,
    raise_fd_limit,
    services,
)

SCENARIOS = (
    "commands",
    "chat_append",
    "rebuild",
    "export",
    "delivery",
    "fanout",
    "connections",
    "media",
)


@dataclass
class Context:
    """What a scenario gets: the size, the services, a place for files, and ``emit``."""

    quick: bool
    svc: Services
    reporter: Reporter
    work_dir: Path
    stack: contextlib.ExitStack
    cache: dict[str, Any] = field(default_factory=dict)

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def emit(
        self,
        name: str,
        value: float | None,
        unit: str,
        *,
        baseline: float | None = None,
        target: Target | None = None,
        params: dict[str, Any] | None = None,
        skipped: str | None = None,
    ) -> Figure:
        return self.reporter.emit(
            Figure(name, value, unit, baseline, target, dict(params or {}), skipped)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every scenario at a small size")
    parser.add_argument("--markdown", action="store_true", help="refresh docs/BENCHMARKS.md")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--jsonl", type=Path, help="also append the JSON lines to this file")
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=Path(
            os.environ.get("LIUDONG_BENCH_DIR", Path(tempfile.gettempdir()) / "liudong-bench")
        ),
        help="embedded servers and logs (default $LIUDONG_BENCH_DIR or /tmp/liudong-bench)",
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    raise_fd_limit()
    args.bench_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m bench" + ("".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:])))
    started = time.monotonic()
    crashed = False
    jsonl = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115
    reporter = Reporter(also=jsonl)
    with services(args.bench_dir) as svc, contextlib.ExitStack() as stack:
        info = machine_info(svc)
        log(f"machine: {info}")
        work_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.bench_dir))
        ctx = Context(args.quick, svc, reporter, work_dir, stack)
        for name in SCENARIOS:
            if name not in chosen:
                continue
            t0 = time.monotonic()
            log(f"— {name} ({'quick' if args.quick else 'full'})")
            try:
                module = importlib.import_module(f"bench.scenarios.{name}")
                module.run(ctx)
            except Skip as exc:
                log(f"{name}: skipped: {exc}")
                reporter.emit(Figure(name, None, "", skipped=str(exc)))
            except Exception as exc:  # a crash is reported, the other scenarios still run
                crashed = True
                traceback.print_exc()
                reporter.emit(Figure(name, None, "", error=f"{type(exc).__name__}: {exc}"))
            log(f"{name}: {time.monotonic() - t0:.1f} s")
    elapsed = time.monotonic() - started
    log(f"done in {elapsed:.1f} s (work files in {work_dir})")
    if jsonl is not None:
        jsonl.close()
    if args.markdown:
        from bench.markdown import update

        path = update(reporter.figures, info, command, args.quick, elapsed)
        log(f"updated {path}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
