"""``--markdown``: rewrite the generated results block of ``docs/BENCHMARKS.md``.

Only the text between ``<!-- bench:results:begin -->`` and ``<!-- bench:results:end -->``
is replaced (machine, date, command and the table); everything else in the file is written by
people and kept. A missing file is created with the block and a heading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Figure

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"
PATH = REPO_ROOT / "docs" / "BENCHMARKS.md"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "ms" or abs(value) < 10:
        text = f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    else:
        text = f"{value:,.0f}"
    return text


def _row(figure: Figure) -> str:
    if figure.skipped:
        return f"| `{figure.name}` | skipped: {figure.skipped} | | | | |"
    if figure.error:
        return f"| `{figure.name}` | **error**: {figure.error[:120]} | | | | |"
    value = f"{_num(figure.value, figure.unit)} {figure.unit}"
    baseline = _num(figure.baseline, figure.unit) if figure.baseline is not None else "—"
    ratio = f"{figure.ratio:.3g}" if figure.ratio is not None else "—"
    target = figure.target.text(figure.unit) if figure.target else "—"
    met = {True: "yes", False: "**no**", None: "—"}[figure.met]
    return f"| `{figure.name}` | {value} | {baseline} | {ratio} | {target} | {met} |"


def render(
    figures: list[Figure], info: dict[str, Any], command: str, quick: bool, elapsed: float
) -> str:
    pg = info.get("postgres", {})
    lines = [
        BEGIN,
        "## Results" + (" (`--quick`: small sizes, a smoke, not comparable)" if quick else ""),
        "",
        f"- **Date**: {info.get('date')} (run took {elapsed / 60:.1f} min)",
        f"- **Command**: `{command}`"
        + (f" at commit `{info['commit']}`" if info.get("commit") else "")
        + (
            f" plus uncommitted changes to {info['uncommitted_files']} tracked files"
            if info.get("uncommitted_files")
            else ""
        ),
        f"- **Machine**: {info.get('cpus')} vCPU {info.get('cpu', '')}, "
        f"{info.get('memory_gb')} GB RAM, Linux {info.get('kernel')}, Python {info.get('python')}; "
        f"load average at start {' / '.join(info.get('loadavg_at_start', []))} "
        "(the machine is shared with other engineers' test runs)",
        f"- **PostgreSQL** {pg.get('server_version', '?')} ({info.get('postgres_source')}; "
        f"fsync={pg.get('fsync')}, synchronous_commit={pg.get('synchronous_commit')}, "
        f"shared_buffers={pg.get('shared_buffers')}); **NATS**: {info.get('nats_source')}",
        "",
        "| figure | value | baseline | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
        *(_row(f) for f in figures),
        "",
        "Every figure's parameters (sizes, sample counts, p90/max, server CPU, error counts) are "
        "in its JSON line; `python -m bench --jsonl FILE` keeps them.",
        END,
    ]
    return "\n".join(lines)


def update(
    figures: list[Figure],
    info: dict[str, Any],
    command: str,
    quick: bool,
    elapsed: float,
    path: Path = PATH,
) -> Path:
    block = render(figures, info, command, quick, elapsed)
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            text = head + block + tail
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = "# Benchmarks\n\n" + block + "\n"
    path.write_text(text)
    return path
