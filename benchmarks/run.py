"""Benchmark jupyter-persist against a plain jupyter_server, in the same run.

    python benchmarks/run.py            # full sizes (takes a while)
    python benchmarks/run.py --quick    # every workload, small: proves the harness works

Starts one `jupyter server` with the extension and one without
(`--ServerApp.jpserver_extensions`), runs each workload on both through a JupyterLab-like
websocket client and real ipykernel kernels, alternating which server goes first in each
repetition so machine noise hits both alike, and prints one table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from servers import Server, start_gateway, start_server
from workloads import (
    RERUN_OUTPUT_MB,
    big_notebook,
    big_output_detached,
    flood_detached,
    gateway_kernel,
    lines_attached,
    lines_detached,
    many_kernels,
    p99,
    progress_detached,
    reruns,
    run_one_kernel,
)


@dataclass
class Row:
    workload: str
    measure: str
    target: str
    limit: float | None = None  # ratio limit; None: compare ours against `absolute`
    absolute: float | None = None  # absolute limit on our value
    minimum: float | None = None  # least acceptable value of ours
    #: Where plain's value is at most this, ours is held to ``absolute`` instead of the
    #: ratio; above it, to the ratio alone. Issue 22's p99: "≤1.5× plain, and ≤50 ms where
    #: plain is ≤30 ms" (1.5 × 30 is 45: the 50 ms only means something instead of the
    #: ratio, where a few ms either way would double a small p99).
    absolute_where_plain: float | None = None
    plain: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)


def table(rows: list[Row]) -> str:
    lines = [
        "| workload | measure | plain | with extension | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        plain = statistics.median(row.plain) if row.plain else float("nan")
        ours = statistics.median(row.ours) if row.ours else float("nan")
        ratio = ours / plain if plain and plain == plain else float("nan")
        verdict = "info"
        if row.limit is not None or row.absolute is not None or row.minimum is not None:
            ok = True
            if row.minimum is not None:
                ok = ok and ours >= row.minimum
            if row.absolute_where_plain is not None and plain <= row.absolute_where_plain:
                ok = ok and row.absolute is not None and ours <= row.absolute
            elif row.absolute_where_plain is not None:
                ok = ok and row.limit is not None and ratio <= row.limit
            else:
                if row.limit is not None:
                    ok = ok and ratio <= row.limit
                if row.absolute is not None:
                    ok = ok and ours <= row.absolute
            verdict = "pass" if ok else "FAIL"
        lines.append(
            f"| {row.workload} | {row.measure} | {_fmt(plain)} | {_fmt(ours)} | "
            f"{_fmt(ratio, '.2f')} | {row.target} | {verdict} |"
        )
    return "\n".join(lines)


def _fmt(value: float, spec: str = ".3g") -> str:
    return "—" if value != value else format(value, spec)


@dataclass
class Sizes:
    lines: int
    progress: int
    big_output_mb: int
    kernels: int
    kernel_seconds: int
    notebook_cells: int
    notebook_mb: int
    notebook_seconds: int
    gateway_connects: int
    reruns: int
    rerun_cells: int
    #: A start is 2–4 s here and varies by ±0.5 s from one to the next: one sample of
    #: each server says nothing about a 10% target.
    starts: int


QUICK = Sizes(5_000, 20_000, 30, 4, 10, 500, 5, 10, 5, 20, 10, 1)
FULL = Sizes(200_000, 1_000_000, 1024, 20, 60, 5_000, 50, 60, 30, 450, 150, 7)
#: The extension's defaults the targets refer to.
SAVE_INTERVAL = 5.0
#: A stream output's cap: 100k head + up to 1.25 × 400k tail characters, plus JSON.
STREAM_CAP_MB = (100_000 + 1.25 * 400_000) / 1e6 * 1.1


#: The many-kernels workload's measures and the suffix of their rows' keys.
LAG_MEASURES = {
    "journal_p99": "journal",
    "journal_p99_end": "journal_end",
    "ipynb_p99": "ipynb",
    "complete": "done",
    "cpu_share": "cpu",
    "rss_mb": "rss",
}
#: Row keys of the many-kernels workload, with all kernels and with half of them.
LAG_PREFIXES = ("lag", "half")

OURS_ONLY = {
    *(
        f"{prefix}_{suffix}"
        for prefix in LAG_PREFIXES
        for suffix in ("journal", "journal_end", "ipynb")
    ),
    "nb_share",
    "nb_writes",
    "nb_rate",
    "nb_journal",
    "loop_us",
    "loop_iopub_us",
    "loop_write_ms",
}
#: The extension's event-loop counters of its writes (see jupyter_persist/meter.py):
#: the write itself, the save guard inside the ContentsManager's save, the releases after.
WRITE_BLOCKS = ("flush", "save_guard", "release")
#: Workloads whose IOPub messages the "µs per message" rows pool (the busy ones).
MESSAGE_WORKLOADS = {"lines_attached", "lines_detached", "many_kernels"}


def lag_specs(prefix: str, workload: str) -> dict[str, tuple[Any, ...]]:
    """The rows of one many-kernels workload, keyed ``<prefix>_<suffix>``."""
    return {
        f"{prefix}_journal": (workload, "message → journal p99 s", "≤1.5 s", None, 1.5),
        f"{prefix}_journal_end": (workload, "same, last 10 s only", "≤1.5 s", None, 1.5),
        f"{prefix}_ipynb": (
            workload,
            "message → .ipynb p99 s",
            f"≤{2 * SAVE_INTERVAL:g} s",
            None,
            2 * SAVE_INTERVAL,
        ),
        f"{prefix}_done": (workload, "every line on disk (1=yes)", "=1", None, None, 1),
        f"{prefix}_cpu": (workload, "server CPU share of one core", "info"),
        f"{prefix}_rss": (workload, "server peak RSS growth MB", "≤100 MB", None, 100),
    }


def lag_mapping(prefix: str) -> dict[str, str]:
    """Which row each measure of a many-kernels workload goes to."""
    mapping = {measure: f"{prefix}_{suffix}" for measure, suffix in LAG_MEASURES.items()}
    return {**mapping, "p99": f"p99_{prefix}"}


def memory_specs(z: Sizes) -> dict[str, tuple[Any, ...]]:
    """Issue 24's rows: a day of re-running a 400 kB cell; attached and detached."""
    cells_limit = 1.2 * z.rerun_cells * RERUN_OUTPUT_MB  # 1.2× the notebook's outputs
    specs: dict[str, tuple[Any, ...]] = {}
    for suffix, side, one_runs in (("", "attached", z.reruns), ("_det", "detached", z.rerun_cells)):
        specs[f"mem_one{suffix}"] = (
            f"one 400 kB cell run {one_runs} times, {side}",
            "server RSS growth MB",
            "≤30 MB",
            None,
            30,
        )
        specs[f"mem_cells{suffix}"] = (
            f"{z.rerun_cells} cells of 400 kB, each run once, {side}",
            "server RSS growth MB",
            f"≤{cells_limit:.0f} MB",
            None,
            cells_limit,
        )
    return specs


def make_rows(z: Sizes) -> dict[str, Row]:
    lines = f"{z.lines:,} lines"
    big = f"{z.big_output_mb:,} MB printed in 100-byte lines, detached"
    fast = f"{z.big_output_mb:,} MB in 1 MB prints with flush, detached"
    lag = f"{z.kernels} kernels × 100 lines/s × {z.kernel_seconds} s, detached"
    half = f"{z.kernels // 2} kernels × 100 lines/s × {z.kernel_seconds} s, detached"
    nb = f"{z.notebook_cells:,}-cell notebook, {z.notebook_mb} MB, printing {z.notebook_seconds} s"
    specs: dict[str, tuple[Any, ...]] = {
        "start": (
            f"server start, {z.starts} times each, alternating",
            "s to first /api/status",
            "≤1.1×",
            1.1,
        ),
        "att_wall": (f"{lines}, attached", "cell wall s", "≤1.05×", 1.05),
        # Issue 22's target (issue 5's harness had ≤1.25×).
        "att_cpu": (f"{lines}, attached", "server CPU s", "≤1.15×", 1.15),
        "att_all": (f"{lines}, attached", "client received all (1=yes)", "info"),
        "det_cpu": (f"{lines}, detached after 1 s", "server CPU s", "≤1.5×", 1.5),
        "det_done": (
            f"{lines}, detached after 1 s",
            "complete on disk (1=yes)",
            "=1",
            None,
            None,
            1,
        ),
        "prog": (
            f"{z.progress:,} \\r updates, detached",
            "cell bytes in .ipynb",
            "≤1 KB",
            None,
            1024,
        ),
        "big_rss": (big, "server peak RSS growth MB", "≤100 MB", None, 100),
        "big_rss_after": (big, "server RSS growth after MB", "info"),
        "big_ipynb": (big, ".ipynb MB", f"≤{STREAM_CAP_MB:.2f} (caps)", None, STREAM_CAP_MB),
        "big_done": (big, "last line on disk (1=yes)", "=1", None, None, 1),
        "big_rate": (big, "MB/s the kernel printed", "info"),
        "fast_rss": (fast, "server peak RSS growth MB", "info (see docs)"),
        "fast_rate": (fast, "MB/s the kernel sent", "info"),
        "fast_done": (fast, "last line on disk (1=yes)", "=1", None, None, 1),
        **lag_specs("lag", lag),
        # Half the kernels: a load the machine can carry (see docs/benchmarks.md).
        **lag_specs("half", half),
        "nb_share": (nb, "time writing / wall", "≤0.10", None, 0.10),
        "nb_writes": (nb, ".ipynb writes", "info"),
        "nb_rate": (nb, ".ipynb MB written per s", "info"),
        "nb_journal": (nb, "journal bytes per output byte", "≤2", None, 2),
        "nb_done": (nb, "last line on disk (1=yes)", "=1", None, None, 1),
        "gw_first": (
            "a page opens a gateway kernel's websocket",
            "first connection: open → kernel_info reply ms",
            "≤1000 ms",
            None,
            1000,
        ),
        "gw_open": (
            "a page opens a gateway kernel's websocket",
            f"next {z.gateway_connects} connections, median ms",
            "≤1.1×",
            1.1,
        ),
        "gw_done": (
            "200 lines on a gateway kernel, detached",
            "complete on disk (1=yes)",
            "=1",
            None,
            None,
            1,
        ),
        "loop_us": (
            f"{lines} (both) and many kernels",
            "our event-loop µs per IOPub message, all our work",
            "≤30 µs",
            None,
            30,
        ),
        "loop_iopub_us": (
            f"{lines} (both) and many kernels",
            "our event-loop µs per IOPub message, message handling",
            "info",
        ),
        "loop_write_ms": (
            "whole run (the 50 MB notebook's writes included)",
            "longest event-loop block by our writes (their save guard and releases too) ms",
            "≤50 ms",
            None,
            50,
        ),
        "loop_write_cpu_ms": (
            "whole run (the 50 MB notebook's writes included)",
            "that block's CPU time ms (the rest: waiting for a core or the GIL)",
            "info",
        ),
        "trim_ms": ("whole run", "longest heap trim ms (allocations wait for it)", "info"),
        "gc_ms": (
            "whole run",
            "longest garbage collection ms (the whole server's heap; not in the rows above)",
            "info",
        ),
        **memory_specs(z),
    }
    rows = {key: Row(*spec) for key, spec in specs.items()}
    labels = {key: rows[row_key].workload for key, row_key in P99_LABEL_ROWS.items()}
    labels["p99_gw"] = "a gateway kernel's websockets and 200 lines (its own servers)"
    labels["p99_all"] = "all of the above but the gateway's (pooled)"
    for key, workload in labels.items():
        rows[key] = p99_row(workload)
    return rows


#: The ``GET /api/status`` p99 row of each workload, named after one of its rows.
P99_LABEL_ROWS = {
    "p99_att": "att_wall",
    "p99_det": "det_cpu",
    "p99_prog": "prog",
    "p99_big": "big_rss",
    "p99_fast": "fast_rss",
    "p99_lag": "lag_journal",
    "p99_half": "half_journal",
    "p99_mem_one": "mem_one",
    "p99_mem_cells": "mem_cells",
    "p99_mem_one_det": "mem_one_det",
    "p99_mem_cells_det": "mem_cells_det",
    "p99_nb": "nb_share",
}


def p99_row(workload: str) -> Row:
    """Issue 22's target for the server's responsiveness, on one workload or pooled."""
    return Row(
        workload,
        "p99 GET /api/status ms",
        "≤50 ms where plain ≤30 ms, else ≤1.5×",
        limit=1.5,
        absolute=50,
        absolute_where_plain=30,
    )


async def run_side(
    server: Server, z: Sizes, run: int, rows: dict[str, Row], side: str, only: set[str]
) -> None:
    def add(key: str, value: float) -> None:
        if side == "plain" and key in OURS_ONLY:
            return  # a plain server has no journal and writes nothing itself
        getattr(rows[key], side).append(value)

    latencies: list[float] = []
    loop_seconds = {"all": 0.0, "iopub": 0.0}
    loop_messages = 0
    for workload, mapping in (
        (
            lines_attached(server, z.lines, run, latencies),
            {"wall": "att_wall", "cpu": "att_cpu", "received": "att_all", "p99": "p99_att"},
        ),
        (
            lines_detached(server, z.lines, run, latencies),
            {"cpu": "det_cpu", "complete": "det_done", "p99": "p99_det"},
        ),
        (
            progress_detached(server, z.progress, run, latencies),
            {"bytes": "prog", "p99": "p99_prog"},
        ),
        (
            big_output_detached(server, z.big_output_mb, run, latencies),
            {
                "rss_mb": "big_rss",
                "rss_after_mb": "big_rss_after",
                "ipynb_mb": "big_ipynb",
                "done": "big_done",
                "mb_per_s": "big_rate",
                "p99": "p99_big",
            },
        ),
        (
            flood_detached(server, z.big_output_mb, run, latencies),
            {"rss_mb": "fast_rss", "mb_per_s": "fast_rate", "done": "fast_done", "p99": "p99_fast"},
        ),
        (
            many_kernels(server, z.kernels, z.kernel_seconds, run, latencies),
            lag_mapping("lag"),
        ),
        (
            many_kernels(server, z.kernels // 2, z.kernel_seconds, run, latencies),
            lag_mapping("half"),
        ),
        (
            reruns(server, z.reruns, 1, run, latencies),
            {"rss_growth_mb": "mem_one", "p99": "p99_mem_one"},
        ),
        (
            reruns(server, z.rerun_cells, z.rerun_cells, run, latencies),
            {"rss_growth_mb": "mem_cells", "p99": "p99_mem_cells"},
        ),
        (
            reruns(server, z.rerun_cells, 1, run, latencies, detached=True),
            {"rss_growth_mb": "mem_one_det", "p99": "p99_mem_one_det"},
        ),
        (
            reruns(server, z.rerun_cells, z.rerun_cells, run, latencies, detached=True),
            {"rss_growth_mb": "mem_cells_det", "p99": "p99_mem_cells_det"},
        ),
        (
            big_notebook(
                server, z.notebook_cells, z.notebook_mb, z.notebook_seconds, run, latencies
            ),
            {
                "write_share": "nb_share",
                "writes": "nb_writes",
                "ipynb_mb_per_s": "nb_rate",
                "journal_per_output": "nb_journal",
                "done": "nb_done",
                "p99": "p99_nb",
            },
        ),
    ):
        if only and workload.__name__ not in only:
            workload.close()
            continue
        started = time.monotonic()
        before = loop_counters(server) if side == "ours" else None
        result = await workload
        if before is not None:
            meter = server.request("api/persist/status")["event_loop"]
            print(f"  {side:5} run {run}: event loop so far: {meter}", flush=True)
        if before is not None and workload.__name__ in MESSAGE_WORKLOADS:
            after = loop_counters(server)
            loop_messages += after["messages"] - before["messages"]
            for kind in loop_seconds:
                loop_seconds[kind] += after[kind] - before[kind]
        print(
            f"  {side:5} run {run}: {workload.__name__} in {time.monotonic() - started:.0f} s: "
            + ", ".join(f"{k}={v:.3g}" for k, v in result.items()),
            flush=True,
        )
        for measure, key in mapping.items():
            add(key, result[measure])
    add("p99_all", p99(latencies))
    if side == "ours" and loop_messages:
        add("loop_us", loop_seconds["all"] / loop_messages * 1e6)
        add("loop_iopub_us", loop_seconds["iopub"] / loop_messages * 1e6)
    if side == "ours" and (not only or "big_notebook" in only):
        meter = server.request("api/persist/status")["event_loop"]
        # The benchmark's clients never save: every save the guard checks is ours, and
        # the runs released after a save are released because of it.
        longest = meter["longest_ms"]
        block = max(WRITE_BLOCKS, key=lambda kind: longest.get(kind, 0.0))
        add("loop_write_ms", longest.get(block, 0.0))
        add("loop_write_cpu_ms", meter["longest_cpu_ms"].get(block, 0.0))
    if side == "ours":
        status = server.request("api/persist/status")
        add("trim_ms", status["memory"]["longest_trim_ms"])
        add("gc_ms", status["event_loop"]["gc"]["longest_ms"])


def loop_counters(server: Server) -> dict[str, float]:
    """The extension's event-loop counters (see jupyter_persist/meter.py)."""
    meter = server.request("api/persist/status")["event_loop"]
    return {
        "messages": meter["messages"],
        "all": meter["seconds_total"],
        "iopub": meter["seconds"].get("iopub", 0.0),
    }


async def run_gateway_side(
    server: Server, z: Sizes, run: int, rows: dict[str, Row], side: str
) -> None:
    """The gateway workload (its own servers: every kernel of theirs is on the gateway)."""
    started = time.monotonic()
    result = await gateway_kernel(server, z.gateway_connects, run, [])
    print(
        f"  {side:5} run {run}: gateway_kernel in {time.monotonic() - started:.0f} s: "
        + ", ".join(f"{k}={v:.3g}" for k, v in result.items()),
        flush=True,
    )
    for measure, key in (
        ("first_ms", "gw_first"),
        ("open_ms", "gw_open"),
        ("done", "gw_done"),
        ("p99", "p99_gw"),
    ):
        getattr(rows[key], side).append(result[measure])


async def compare_on_gateway(
    folder: Path, z: Sizes, repeat: int, rows: dict[str, Row], ours_args: list[str]
) -> None:
    """A Kernel Gateway and one server of each kind using it."""
    gateway = start_gateway(folder / "gateway")
    servers: dict[str, Server] = {}
    try:
        for name, extension in (("plain", False), ("ours", True)):
            servers[name] = start_server(
                f"{name} (gateway)",
                folder / f"{name}-gw",
                extension,
                gateway.server_args() + (ours_args if extension else []),
            )
        for run in range(repeat):
            order = ["plain", "ours"] if run % 2 == 0 else ["ours", "plain"]
            for name in order:
                await run_gateway_side(servers[name], z, run, rows, name)
    finally:
        for server in servers.values():
            server.stop()
        gateway.stop()


def measure_starts(folder: Path, starts: int, row: Row, ours_args: list[str]) -> None:
    """Start and stop each kind of server ``starts`` times, alternating which goes first."""
    for start in range(starts):
        kinds = [("plain", False), ("ours", True)]
        for name, extension in kinds if start % 2 == 0 else kinds[::-1]:
            server = start_server(
                name, folder / f"{name}-{start}", extension, ours_args if extension else []
            )
            getattr(row, name).append(server.started_in)
            server.stop()


async def main(args: argparse.Namespace) -> int:
    z = QUICK if args.quick else FULL
    if args.kernels:
        z = dataclasses.replace(z, kernels=args.kernels)
    only = set(args.only.split(",")) if args.only else set()
    repeat = 1 if args.quick else args.repeat
    rows = make_rows(z)
    tmp = tempfile.mkdtemp(prefix="persist-bench-")
    print(f"servers' folders and logs: {tmp}", flush=True)
    try:
        measure_starts(Path(tmp) / "starts", z.starts, rows["start"], args.ours_arg)
        servers: dict[str, Server] = {}
        try:
            for name, extension in (("plain", False), ("ours", True)):
                extra = args.ours_arg if extension else []
                servers[name] = start_server(name, Path(tmp) / name, extension, extra)
                await run_one_kernel(servers[name])
            for run in range(repeat):
                order = ["plain", "ours"] if run % 2 == 0 else ["ours", "plain"]
                for name in order:
                    await run_side(servers[name], z, run, rows, name, only)
        finally:
            for server in servers.values():
                server.stop()
        if not only or "gateway_kernel" in only:
            await compare_on_gateway(Path(tmp), z, repeat, rows, args.ours_arg)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"jupyter-persist benchmark ({'quick' if args.quick else 'full'}, {repeat} run(s)) on "
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(table([row for row in rows.values() if row.plain or row.ours]))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (CI)")
    parser.add_argument("--kernels", type=int, help="kernels in the many-kernels workload")
    parser.add_argument(
        "--only", help="comma-separated workloads to run (e.g. many_kernels,big_notebook)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' folders and logs")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per side (full mode)")
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more command-line argument for the extension's servers, e.g. "
        "--ours-arg=--PersistExtension.track_kernel_activity=True (repeatable)",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
