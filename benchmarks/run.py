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
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from servers import KernelClient, Server, make_notebook, start_server


@dataclass
class Row:
    workload: str
    measure: str
    target: str
    limit: float | None = None  # ratio limit; None: compare ours against `absolute`
    absolute: float | None = None  # absolute limit on our value
    plain: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)


class StatusSampler:
    """Samples GET /api/status latency in a thread while a workload runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.server.request("api/status", timeout=10)
            except OSError:
                continue
            self.samples.append((time.perf_counter() - started) * 1000)
            self._stop.wait(0.05)

    def p99(self) -> float:
        if len(self.samples) < 2:
            return max(self.samples, default=0.0)
        return statistics.quantiles(self.samples, n=100)[98]


async def new_kernel(server: Server, code: str, name: str) -> tuple[str, str]:
    path = make_notebook(server, name, code)
    body = {"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
    session = await asyncio.to_thread(server.request, "api/sessions", "POST", body)
    return path, session["kernel"]["id"]


async def wait_kernel_idle(server: Server, kernel_id: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0.5)
    while time.monotonic() < deadline:
        model = await asyncio.to_thread(server.request, f"api/kernels/{kernel_id}")
        if model["execution_state"] == "idle":
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("kernel never went idle")


def cell_bytes(server: Server, path: str) -> int:
    cell = json.loads((server.root_dir / path).read_text())["cells"][0]
    return len(json.dumps(cell["outputs"]))


def cell_lines(server: Server, path: str) -> int:
    cell = json.loads((server.root_dir / path).read_text())["cells"][0]
    return sum("".join(o.get("text", "")).count("\n") for o in cell["outputs"])


async def lines_attached(server: Server, n: int, run: int) -> dict[str, float]:
    code = f"for i in range({n}):\n    print(i, flush=True)"
    _, kernel_id = await new_kernel(server, code, f"attached-{run}.ipynb")
    client = await KernelClient.connect(server, kernel_id)
    await client.ready()
    cpu = server.cpu_seconds()
    with StatusSampler(server) as sampler:
        started = time.perf_counter()
        await client.until_idle(await client.execute(code))
        wall = time.perf_counter() - started
    client.close()
    return {"wall": wall, "cpu": server.cpu_seconds() - cpu, "p99": sampler.p99()}


async def lines_detached(server: Server, n: int, run: int) -> dict[str, float]:
    code = f"import time\ntime.sleep(1)\nfor i in range({n}):\n    print(i, flush=True)"
    path, kernel_id = await new_kernel(server, code, f"detached-{run}.ipynb")
    client = await KernelClient.connect(server, kernel_id)
    await client.ready()
    cpu, rss = server.cpu_seconds(), server.rss()
    with StatusSampler(server) as sampler:
        msg_id = await client.execute(code)
        await asyncio.sleep(1.2)
        client.close()
        await wait_kernel_idle(server, kernel_id)
        await asyncio.sleep(2.5)  # a save interval for the last write
    return (
        {
            "cpu": server.cpu_seconds() - cpu,
            "rss_mb": (server.rss() - rss) / 1e6,
            "complete": float(cell_lines(server, path) == n),
            "p99": sampler.p99(),
        }
        if msg_id
        else {}
    )


async def progress_detached(server: Server, n: int, run: int) -> dict[str, float]:
    code = (
        f"import time\nprint('start', flush=True)\ntime.sleep(1)\nfor i in range({n}):\n"
        f"    print(f'\\r{{i}}/{n}', end='', flush=True)\nprint()"
    )
    path, kernel_id = await new_kernel(server, code, f"progress-{run}.ipynb")
    client = await KernelClient.connect(server, kernel_id)
    await client.ready()
    msg_id = await client.execute(code)
    await client.until_output(msg_id)
    client.close()
    await wait_kernel_idle(server, kernel_id)
    await asyncio.sleep(2.5)
    return {"bytes": float(cell_bytes(server, path))}


def table(rows: list[Row]) -> str:
    lines = [
        "| workload | measure | plain | with extension | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        plain = statistics.median(row.plain) if row.plain else float("nan")
        ours = statistics.median(row.ours) if row.ours else float("nan")
        ratio = ours / plain if plain else float("nan")
        ok = row.limit is not None or row.absolute is not None
        if row.limit is not None:
            ok = ok and ratio <= row.limit
        if row.absolute is not None:
            ok = ok and ours <= row.absolute
        lines.append(
            f"| {row.workload} | {row.measure} | {plain:.3g} | {ours:.3g} | "
            f"{ratio:.2f} | {row.target} | {'pass' if ok else 'FAIL'} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    lines_n = 5_000 if args.quick else 200_000
    progress_n = 20_000 if args.quick else 1_000_000
    repeat = 1 if args.quick else args.repeat
    rows = {
        key: Row(*spec)
        for key, spec in {
            "start": ("server start", "s to first /api/status", "≤1.1×", 1.1),
            "att_wall": (f"{lines_n:,} lines, attached", "cell wall s", "≤1.05×", 1.05),
            "att_cpu": (f"{lines_n:,} lines, attached", "server CPU s", "≤1.25×", 1.25),
            "det_cpu": (f"{lines_n:,} lines, detached", "server CPU s", "≤1.5×", 1.5),
            "det_done": (f"{lines_n:,} lines, detached", "complete on disk (1=yes)", "=1", None, 1),
            "det_rss": (
                f"{lines_n:,} lines, detached",
                "server RSS growth MB",
                "≤100 MB",
                None,
                100,
            ),
            "prog": (
                f"{progress_n:,} \\r updates, detached",
                "cell bytes in .ipynb",
                "≤1 KB",
                None,
                1024,
            ),
            "p99": ("all of the above", "p99 GET /api/status ms", "≤50 ms, ≤1.5×", 1.5, 50),
        }.items()
    }
    with tempfile.TemporaryDirectory(prefix="persist-bench-") as tmp:
        servers: dict[str, Server] = {}
        try:
            for name, extension in (("plain", False), ("ours", True)):
                servers[name] = start_server(name, Path(tmp) / name, extension, save_interval=1)
            for run in range(repeat):
                order = ["plain", "ours"] if run % 2 == 0 else ["ours", "plain"]
                for name in order:
                    server = servers[name]
                    side = "plain" if name == "plain" else "ours"
                    attached = await lines_attached(server, lines_n, run)
                    detached = await lines_detached(server, lines_n, run)
                    progress = await progress_detached(server, progress_n, run)
                    getattr(rows["att_wall"], side).append(attached["wall"])
                    getattr(rows["att_cpu"], side).append(attached["cpu"])
                    getattr(rows["det_cpu"], side).append(detached["cpu"])
                    getattr(rows["det_done"], side).append(detached["complete"])
                    getattr(rows["det_rss"], side).append(detached["rss_mb"])
                    getattr(rows["prog"], side).append(progress["bytes"])
                    getattr(rows["p99"], side).append(max(attached["p99"], detached["p99"]))
            for name in ("plain", "ours"):
                getattr(rows["start"], name).append(servers[name].started_in)
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"jupyter-persist benchmark ({'quick' if args.quick else 'full'}, {repeat} run(s)) on "
        f"{platform.platform()}, Python {platform.python_version()}"
    )
    print(table(list(rows.values())))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (CI)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per side (full mode)")
    sys.exit(asyncio.run(main(parser.parse_args())))
