"""What every benchmark shares: the machine description, statistics, tables, the JSON report,
resident memory, and reading the daemon's Prometheus histograms.

A figure without the conditions it was measured under is not worth much on a shared 2-core box,
so every report carries the load average before and after, the git revision and the files that
differed from it, and the exact command that produced it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
GiB = 1024**3


# --- statistics and tables ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample: always one of the values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain-text table: numbers right-aligned, words left-aligned."""
    raw = [list(row) for row in rows]
    cells = [[_cell(v) for v in row] for row in raw]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(_numeric(r[i]) for r in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[0-9.,e/x%-]+", text))


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# --- the machine ------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set (VmHWM; unlike ru_maxrss, it does not
    carry over the parent's peak through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_revision": git("rev-parse", "HEAD"),
        # the daemon runs whatever is in the working tree: name what differed from the revision
        "git_changed": git("status", "--short", "--untracked-files=no").splitlines(),
        "git_diff_sha256": hashlib.sha256(git("diff", "HEAD").encode()).hexdigest(),
    }


@dataclass
class Report:
    """One run of one benchmark: printed as tables, saved as ``bench/results/<name>-<time>.json``."""

    name: str
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    data: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data["load_before"] = loadavg()
        self.data["machine"] = machine()

    @property
    def command(self) -> str:
        program = f"python -m bench.{self.name}" if self.argv and self.argv[0].endswith(".py") else self.argv[0]
        return " ".join([program, *(shlex.quote(a) for a in self.argv[1:])])

    def target(self, what: str, *, measured: float | None, limit: float, unit: str) -> None:
        met = measured is not None and measured <= limit
        self.targets.append({"target": what, "measured": measured, "limit": limit, "unit": unit, "met": met})

    def targets_table(self) -> str:
        rows = [
            (t["target"], "-" if t["measured"] is None else t["measured"], t["limit"], t["unit"], _met(t))
            for t in self.targets
        ]
        return table(("target", "measured", "limit", "unit", "met"), rows)

    def save(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{self.name}-{stamp}.json"
        document = {
            "bench": self.name,
            "command": self.command,
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "load_after": loadavg(),
            **self.data,
            "targets": self.targets,
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        return path


def _met(target: dict[str, Any]) -> str:
    return "yes" if target["met"] else "NO" if target["measured"] is not None else "not measured"


class Stopwatch:
    """``with Stopwatch() as s: ...`` then ``s.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started


# --- Prometheus text ------------------------------------------------------------------------------

Sample = tuple[str, tuple[tuple[str, str], ...]]
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[Sample, float]:
    samples: dict[Sample, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        samples[(name, tuple(sorted(_LABEL.findall(labels or ""))))] = float(value)
    return samples


def histogram_delta(
    before: dict[Sample, float], after: dict[Sample, float], metric: str, label: str
) -> dict[str, dict[str, float]]:
    """Per value of ``label``: how many observations and how many seconds in total were added
    between the two scrapes (other labels, e.g. the node, are summed)."""
    out: dict[str, dict[str, float]] = {}
    for suffix, what in (("_count", "count"), ("_sum", "seconds")):
        for (name, labels), value in after.items():
            if name != metric + suffix:
                continue
            key = dict(labels).get(label, "")
            gained = value - before.get((name, labels), 0.0)
            row = out.setdefault(key, {"count": 0.0, "seconds": 0.0})
            row[what] += gained
    return {k: v for k, v in out.items() if v["count"] > 0}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return os.uname().machine


# --- pictures -----------------------------------------------------------------------------------------


def bar_chart_svg(title: str, groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], *, unit: str) -> str:
    """A grouped horizontal bar chart as a standalone SVG (no plotting library): one group per label,
    one bar per series in it, each bar labelled with its value."""
    colours = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759")
    series = list(dict.fromkeys(name for _, bars in groups for name, _ in bars))
    top = max((v for _, bars in groups for _, v in bars), default=1.0) or 1.0
    left, width, bar, gap = 190, 480, 16, 14
    height = 60 + sum(len(bars) * bar + gap for _, bars in groups) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{_xml(title)}</text>',
    ]
    for i, name in enumerate(series):
        out.append(f'<rect x="{left + i * 120}" y="34" width="12" height="12" fill="{colours[i % len(colours)]}"/>')
        out.append(f'<text x="{left + i * 120 + 16}" y="45">{_xml(name)}</text>')
    y = 60
    for label, bars in groups:
        out.append(f'<text x="{left - 8}" y="{y + len(bars) * bar / 2 + 4}" text-anchor="end">{_xml(label)}</text>')
        for name, value in bars:
            length = max(1.0, width * value / top)
            colour = colours[series.index(name) % len(colours)]
            out.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar - 2}" fill="{colour}"/>')
            out.append(f'<text x="{left + length + 4:.1f}" y="{y + bar - 5}">{value:.2f} {_xml(unit)}</text>')
            y += bar
        y += gap
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the command line of every benchmark ------------------------------------------------------------


def counts(text: str) -> list[int]:
    """``1,10,30`` -> ``[1, 10, 30]`` (sorted, each once)."""
    return sorted({int(x) for x in text.split(",") if x.strip()})


def size(text: str) -> int:
    """``1GiB``, ``500MiB`` or bytes."""
    units = {"gib": GiB, "g": GiB, "mib": 1024**2, "m": 1024**2}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * factor)
    return int(lowered)


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser, its help taken from the module docstring."""
    return argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=doc.split("\n\n")[0] if doc else None,
        epilog=doc.split("\n\n", 1)[1] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_bench(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Report], Coroutine[Any, Any, None]],
    **facts: Any,
) -> int:
    """Run a benchmark and write its report whatever happens: a broken or interrupted run still
    leaves what it measured (``interrupted: true``). Exit 130 after Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = Report(name)
    report.data["parameters"] = {**vars(args), **facts}
    try:
        asyncio.run(run(args, report))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (which cancels the run)
        report.data["interrupted"] = True
        print(f"\ninterrupted after cleaning up (see above); written {report.save().relative_to(REPO)}")
        return 130
    except BaseException:
        report.save()
        raise
    written = report.save()
    if report.targets:
        print("\n" + report.targets_table())
    print(f"\nload average {report.data['load_before']} -> {loadavg()}; written {written.relative_to(REPO)}")
    return 0
