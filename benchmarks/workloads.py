"""The benchmark's workloads: each runs on one server and returns its measures."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from servers import KernelClient, Server, make_cells_notebook, make_notebook

from jupyter_persist.storage.journal import Journal

#: Measures the server from outside this process (see ServerSampler).
SAMPLER = Path(__file__).with_name("sampler.py")
#: A line the kernels print in the lag workloads: kernel index, line number, send time.
STAMP = re.compile(r"k(\d+) (\d+) (\d+\.\d{6})")
WROTE = re.compile(r"jupyter_persist: wrote (\S+) \((\d+) cell\(s\), (\d+) bytes, (\d+) ms\)")


class ServerSampler:
    """While a workload runs: GET /api/status latency and the server's peak RSS (with its
    IOPub reader process's, as ``Server.rss`` counts it).

    Measured by ``sampler.py`` in a process of its own, so that the workload's threads
    in this process (the lag watcher parses notebooks) do not delay its requests.
    """

    def __init__(self, server: Server, latencies: list[float]) -> None:
        self.server = server
        self.samples: list[float] = []
        self.latencies = latencies  # every sample of the run, for the pooled p99
        self.start_rss = server.rss()
        self.peak_rss = self.start_rss
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerSampler:
        command = [sys.executable, str(SAMPLER), self.server.base_url, self.server.token]
        self._process = subprocess.Popen(
            [*command, str(self.server.process.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        output, _ = self._process.communicate(timeout=60)
        if self._process.returncode != 0:
            raise RuntimeError(f"the latency sampler failed ({self._process.returncode})")
        result = json.loads(output)
        self.samples = result["latencies_ms"]
        self.peak_rss = max(self.peak_rss, result["peak_rss"])
        self.latencies.extend(self.samples)
        if os.environ.get("PERSIST_BENCH_SAMPLES"):
            with open(os.environ["PERSIST_BENCH_SAMPLES"], "a") as file:
                for at, latency in zip(result["times"], self.samples, strict=True):
                    print(f"{self.server.name} {at:.3f} {latency:.1f}", file=file)

    def p99(self) -> float:
        return p99(self.samples)

    @property
    def rss_growth_mb(self) -> float:
        return (self.peak_rss - self.start_rss) / 1e6


def p99(samples: list[float]) -> float:
    if len(samples) < 2:
        return max(samples, default=float("nan"))
    return statistics.quantiles(samples, n=100)[98]


async def new_kernel(server: Server, path: str) -> str:
    body = {"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
    session = await asyncio.to_thread(server.request, "api/sessions", "POST", body)
    return str(session["kernel"]["id"])


async def start_and_leave(server: Server, path: str, code: str) -> str:
    """Run the notebook's ``bench`` cell like JupyterLab; leave once its output starts."""
    kernel_id = await new_kernel(server, path)
    client = await KernelClient.connect(server, kernel_id)
    await client.ready()
    msg_id = await client.execute(code)
    await client.until_output(msg_id)
    client.close()
    return kernel_id


async def run_one_kernel(server: Server) -> None:
    """Start a kernel, connect until it answers ``kernel_info``, shut it down.

    The extension starts its IOPub reader process with the first kernel and keeps it:
    done before any workload, no workload's memory rows count that process's start
    (an ``--only`` run's first workload did).
    """
    model = await asyncio.to_thread(server.request, "api/kernels", "POST", {"name": "python3"})
    try:
        client = await KernelClient.connect(server, model["id"])
        await client.ready()
        client.close()
    finally:
        await shutdown(server, model["id"])


async def shutdown(server: Server, kernel_id: str) -> None:
    await asyncio.to_thread(server.request, f"api/kernels/{kernel_id}", "DELETE")


async def wait_kernel_idle(server: Server, kernel_id: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0.5)
    while time.monotonic() < deadline:
        model = await asyncio.to_thread(server.request, f"api/kernels/{kernel_id}")
        if model["execution_state"] == "idle":
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("kernel never went idle")


def bench_cell(server: Server, path: str) -> dict[str, Any] | None:
    """The ``bench`` cell on disk (None while the file is being rewritten)."""
    try:
        cells = json.loads((server.root_dir / path).read_text())["cells"]
    except (ValueError, OSError):
        return None
    return next(cell for cell in cells if cell.get("id") == "bench")


def stream_end(cell: dict[str, Any] | None) -> str:
    """The last line of the cell's stream output."""
    if cell is None or not cell["outputs"]:
        return ""
    text = "".join(cell["outputs"][-1].get("text", ""))
    return text[text.rstrip("\n").rfind("\n") + 1 :]


async def settle(server: Server, path: str, done: Any, timeout: float) -> dict[str, Any] | None:
    """Wait (up to ``timeout``) until the bench cell on disk satisfies ``done``.

    A plain server writes nothing itself: its file is read once.
    """
    deadline = time.monotonic() + (timeout if server.extension else 0)
    while True:
        cell = bench_cell(server, path)
        if (cell is not None and done(cell)) or time.monotonic() > deadline:
            return cell
        await asyncio.sleep(0.2)


async def lines_attached(server: Server, n: int, run: int, lat: list[float]) -> dict[str, float]:
    """``n`` lines, one message each, with the client attached all along."""
    code = f"for i in range({n}):\n    print(i, flush=True)"
    path = make_notebook(server, f"attached-{run}.ipynb", code)
    kernel_id = await new_kernel(server, path)
    client = await KernelClient.connect(server, kernel_id)
    await client.ready()
    cpu = server.cpu_seconds()
    with ServerSampler(server, lat) as sampler:
        started = time.perf_counter()
        msg_id = await client.execute(code)
        received = 0
        while True:
            try:
                msg = await client.recv(timeout=5)
            except TimeoutError:
                # The server dropped messages on their way to the client (ZMQ's queue
                # limit), maybe the final status too: ask the server instead.
                model = await asyncio.to_thread(server.request, f"api/kernels/{kernel_id}")
                if model["execution_state"] == "idle":
                    break
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                received += msg["content"]["text"].count("\n")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        wall = time.perf_counter() - started
    client.close()
    await shutdown(server, kernel_id)
    return {
        "wall": wall,
        "cpu": server.cpu_seconds() - cpu,
        "received": float(received == n),
        "p99": sampler.p99(),
    }


#: A cell of a training loop as issue 24 measured it: 400 kB printed, four 100,000-char lines.
RERUN_CODE = "for _ in range(4):\n    print('x' * 99_999, flush=True)"
RERUN_OUTPUT_MB = 0.4
#: Seconds for the last writes and the heap trim after them (at the first tick with no
#: new message: at most two default save intervals), and a margin.
RERUN_SETTLE = 12.0


async def reruns(
    server: Server, runs: int, cells: int, run: int, lat: list[float], detached: bool = False
) -> dict[str, float]:
    """``runs`` runs of the 400 kB cell, over ``cells`` cells in turn, as a day of work.

    Attached: one JupyterLab-like client runs them and stays (it never saves, as a user
    who does not press Ctrl+S). Detached: the client leaves each run once its output
    starts, and comes back for the next once the kernel is idle. The server's RSS
    growth is measured from after a first run (imports, buffers) to ``RERUN_SETTLE``
    seconds after the last run, on both servers.
    """
    side = "detached" if detached else "attached"
    path = make_cells_notebook(server, f"reruns-{side}-{cells}-{run}.ipynb", RERUN_CODE, cells)
    kernel_id = await new_kernel(server, path)
    client = await KernelClient.connect(server, kernel_id)
    await client.ready()
    await client.until_idle(await client.execute(RERUN_CODE, cell_id="c0"))
    await asyncio.sleep(1)
    before = server.rss()
    with ServerSampler(server, lat) as sampler:
        for index in range(runs):
            msg_id = await client.execute(RERUN_CODE, cell_id=f"c{index % cells}")
            if not detached:
                await client.until_idle(msg_id)
                continue
            await client.until_output(msg_id)
            client.close()
            await wait_kernel_idle(server, kernel_id)
            client = await KernelClient.connect(server, kernel_id)
            await client.ready()
        await asyncio.sleep(RERUN_SETTLE)  # the last writes, and their trim
        after = server.rss()
    client.close()
    await shutdown(server, kernel_id)
    return {"rss_growth_mb": (after - before) / 1e6, "p99": sampler.p99()}


async def lines_detached(server: Server, n: int, run: int, lat: list[float]) -> dict[str, float]:
    """The same, the client leaving once the output started."""
    code = f"import time\nprint('start', flush=True)\ntime.sleep(1)\nfor i in range({n}):\n"
    code += "    print(i, flush=True)"
    path = make_notebook(server, f"detached-{run}.ipynb", code)
    cpu = server.cpu_seconds()
    with ServerSampler(server, lat) as sampler:
        kernel_id = await start_and_leave(server, path, code)
        await wait_kernel_idle(server, kernel_id)
        last = f"{n - 1}\n"  # past the size caps the cell keeps its head and tail
        cell = await settle(server, path, lambda c: stream_end(c) == last, timeout=15)
    await shutdown(server, kernel_id)
    return {
        "cpu": server.cpu_seconds() - cpu,
        "rss_mb": sampler.rss_growth_mb,
        "complete": float(stream_end(cell) == last),
        "p99": sampler.p99(),
    }


async def progress_detached(server: Server, n: int, run: int, lat: list[float]) -> dict[str, float]:
    """``n`` carriage-return progress updates, detached: the cell must stay one line."""
    code = (
        f"import time\nprint('start', flush=True)\ntime.sleep(1)\nfor i in range({n}):\n"
        f"    print(f'\\r{{i}}/{n}', end='', flush=True)\nprint()"
    )
    path = make_notebook(server, f"progress-{run}.ipynb", code)
    with ServerSampler(server, lat) as sampler:
        kernel_id = await start_and_leave(server, path, code)
        await wait_kernel_idle(server, kernel_id)
        last = f"{n - 1}/{n}"
        cell = await settle(server, path, lambda c: last in json.dumps(c["outputs"]), 15)
    size = len(json.dumps(cell["outputs"])) if cell is not None else -1
    await shutdown(server, kernel_id)
    return {"bytes": float(size), "p99": sampler.p99()}


async def big_output_detached(
    server: Server, megabytes: int, run: int, lat: list[float], chunked: bool = False
) -> dict[str, float]:
    """``megabytes`` MB of stream output, detached.

    As a loop of ``print`` calls writes it (100-byte lines, batched into messages by
    ipykernel), or, ``chunked``, as fast as a kernel can send it: 1 MB prints with
    ``flush=True``.
    """
    if chunked:
        loop = (
            "chunk = ('x' * 99 + '\\n') * 10_000\n"
            f"for i in range({megabytes}):\n    print(chunk, end='', flush=True)\n"
        )
    else:
        loop = f"for i in range({megabytes * 10_000}):\n    print('x' * 90, '%08d' % i)\n"
    code = (
        f"import time\nprint('start', flush=True)\ntime.sleep(1)\n{loop}print('DONE', flush=True)"
    )
    name = f"big-output-{'chunked-' if chunked else ''}{run}.ipynb"
    path = make_notebook(server, name, code)
    started = time.monotonic()
    with ServerSampler(server, lat) as sampler:
        kernel_id = await start_and_leave(server, path, code)
        await wait_kernel_idle(server, kernel_id)
        printing = time.monotonic() - started - 1
        cell = await settle(server, path, lambda c: "DONE" in json.dumps(c["outputs"]), 30)
        rss_after = (server.rss() - sampler.start_rss) / 1e6
    await shutdown(server, kernel_id)
    return {
        "rss_mb": sampler.rss_growth_mb,
        "rss_after_mb": rss_after,
        "mb_per_s": megabytes / max(printing, 1e-9),
        "ipynb_mb": (server.root_dir / path).stat().st_size / 1e6,
        "done": float(cell is not None and "DONE" in json.dumps(cell["outputs"])),
        "p99": sampler.p99(),
    }


async def flood_detached(
    server: Server, megabytes: int, run: int, lat: list[float]
) -> dict[str, float]:
    """``megabytes`` MB in 1 MB prints with flush, detached (``--only flood_detached``)."""
    return await big_output_detached(server, megabytes, run, lat, chunked=True)


class LagWatcher:
    """Polls journals and notebooks; notes when each stamped line first appears in each."""

    def __init__(self, server: Server, paths: list[str], journaled: list[str]) -> None:
        self.server = server
        self.paths = paths
        directory = Journal(server.journal_dir)
        self.journals = [directory.file_for(path) for path in journaled]
        self.journal_seen: dict[tuple[int, int], float] = {}
        self.ipynb_seen: dict[tuple[int, int], float] = {}
        self.printed: dict[tuple[int, int], float] = {}
        #: Bytes appended to the journals (a compaction's rewrite counts again).
        self.journal_bytes = 0
        self._offsets: dict[Path, tuple[int, int]] = {}  # journal: (inode, offset)
        self._mtimes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _note(self, text: str, seen: dict[tuple[int, int], float], now: float) -> None:
        for match in STAMP.finditer(text):
            key = (int(match[1]), int(match[2]))
            self.printed.setdefault(key, float(match[3]))
            seen.setdefault(key, now)

    def poll(self) -> None:
        now = time.time()
        for journal in self.journals:
            try:
                with journal.open("rb") as file:
                    inode = os.fstat(file.fileno()).st_ino
                    known, offset = self._offsets.get(journal, (inode, 0))
                    if inode != known or file.seek(0, 2) < offset:  # compacted or new
                        offset = 0
                    file.seek(offset)
                    data = file.read()
            except OSError:
                continue
            complete = data.rfind(b"\n") + 1  # whole records only
            self._offsets[journal] = (inode, offset + complete)
            self.journal_bytes += complete
            self._note(data[:complete].decode(errors="replace"), self.journal_seen, now)
        for path in self.paths:
            file_path = self.server.root_dir / path
            try:
                mtime = file_path.stat().st_mtime_ns
                if self._mtimes.get(path) == mtime:
                    continue
                text = file_path.read_text()
                json.loads(text)  # skip a file caught half-written; next poll reads it
            except (OSError, ValueError):
                continue
            self._mtimes[path] = mtime
            self._note(text, self.ipynb_seen, now)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def lags(self, seen: dict[tuple[int, int], float], since: float = 0.0) -> list[float]:
        return [
            seen.get(key, float("inf")) - printed
            for key, printed in self.printed.items()
            if printed >= since
        ]

    def durable(self) -> dict[tuple[int, int], float]:
        """When each line was first in the journal or the notebook, whichever came first.

        A journal is deleted as soon as the notebook holds all its outputs, so the last
        lines of a run can go straight to the notebook.
        """
        first = dict(self.ipynb_seen)
        for key, seen in self.journal_seen.items():
            first[key] = min(seen, first.get(key, seen))
        return first


async def many_kernels(
    server: Server, kernels: int, seconds: int, run: int, lat: list[float]
) -> dict[str, float]:
    """``kernels`` kernels printing 100 stamped lines/s each for ``seconds``, detached."""
    paths, codes, kernel_ids = [], [], []
    for index in range(kernels):
        code = (
            "import time\nprint('start', flush=True)\ntime.sleep(1)\n"
            f"t0 = time.time()\nfor i in range({100 * seconds}):\n"
            f"    print(f'k{index} {{i}} {{time.time():.6f}}', flush=True)\n"
            "    time.sleep(max(0.0, t0 + (i + 1) / 100 - time.time()))\n"
            "print('DONE', flush=True)"
        )
        paths.append(make_notebook(server, f"lag-{run}-{kernels}k-{index}.ipynb", code))
        codes.append(code)
    # Start every kernel first: 20 kernel starts at once are a load of their own.
    clients = []
    for path in paths:
        kernel_ids.append(await new_kernel(server, path))
        clients.append(await KernelClient.connect(server, kernel_ids[-1]))
        await clients[-1].ready()
    cpu = server.cpu_seconds()
    with ServerSampler(server, lat) as sampler, LagWatcher(server, paths, paths) as watcher:
        msg_ids = [await c.execute(code) for c, code in zip(clients, codes, strict=True)]
        for client, msg_id in zip(clients, msg_ids, strict=True):
            await client.until_output(msg_id)
            client.close()
        started = time.time()
        for kernel_id in kernel_ids:
            await wait_kernel_idle(server, kernel_id)
        ended = time.time()
        expected = 100 * seconds * kernels
        deadline = time.monotonic() + (20 if server.extension else 0)
        while True:
            if len(watcher.ipynb_seen) >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    printed = len(watcher.printed)
    # Not ``ended``: on a machine short of CPU the kernels are seen idle seconds after
    # their last line, and "the last 10 s before that" then held no line at all.
    last_printed = max(watcher.printed.values(), default=ended)
    for kernel_id in kernel_ids:
        await shutdown(server, kernel_id)
    return {
        "journal_p99": p99(watcher.lags(watcher.durable())),
        # The lines printed in the run's last 10 s: where a backlog that grows shows.
        "journal_p99_end": p99(watcher.lags(watcher.durable(), since=last_printed - 10)),
        "ipynb_p99": p99(watcher.lags(watcher.ipynb_seen)),
        "complete": float(len(watcher.ipynb_seen) == expected and printed == expected),
        "cpu_share": (server.cpu_seconds() - cpu) / max(ended - started, 1e-9),
        "rss_mb": sampler.rss_growth_mb,
        "p99": sampler.p99(),
    }


async def big_notebook(
    server: Server, cells: int, megabytes: int, seconds: int, run: int, lat: list[float]
) -> dict[str, float]:
    """A notebook of ``cells`` cells and ``megabytes`` MB of outputs; its last cell prints
    100 lines/s for ``seconds``, detached."""
    code = (
        "import time\nprint('start', flush=True)\ntime.sleep(1)\n"
        f"t0 = time.time()\nfor i in range({100 * seconds}):\n"
        "    print(f'k0 {i} {time.time():.6f}', flush=True)\n"
        "    time.sleep(max(0.0, t0 + (i + 1) / 100 - time.time()))\n"
        "print('DONE', flush=True)"
    )
    path = make_notebook(server, f"big-notebook-{run}.ipynb", code, cells, megabytes * 1_000_000)
    log_offset = server.log_path.stat().st_size
    with ServerSampler(server, lat) as sampler, LagWatcher(server, [], [path]) as watcher:
        started = time.monotonic()
        kernel_id = await start_and_leave(server, path, code)
        await wait_kernel_idle(server, kernel_id)
        cell = await settle(server, path, lambda c: "DONE" in json.dumps(c["outputs"]), 120)
        wall = time.monotonic() - started
    with server.log_path.open("rb") as log:
        log.seek(log_offset)
        writes = [m for m in WROTE.finditer(log.read().decode(errors="replace")) if m[1] == path]
    output_bytes = sum(len(f"k0 {i} 1764000000.000000\n") for i in range(100 * seconds))
    await shutdown(server, kernel_id)
    return {
        "write_share": sum(int(m[4]) for m in writes) / 1000 / wall,
        "writes": float(len(writes)),
        "ipynb_mb_per_s": sum(int(m[3]) for m in writes) / 1e6 / wall,
        "journal_per_output": watcher.journal_bytes / output_bytes,
        "done": float(cell is not None and "DONE" in json.dumps(cell["outputs"])),
        "p99": sampler.p99(),
    }


async def gateway_kernel(
    server: Server, connects: int, run: int, lat: list[float]
) -> dict[str, float]:
    """A kernel on a gateway: how long a page's kernel websocket takes to be usable
    (open, then the kernel's kernel_info reply), first and later connections, and a
    run the page leaves: complete on disk?"""
    code = "import time\nprint('start', flush=True)\ntime.sleep(1)\nfor i in range(200):\n"
    code += "    print(i, flush=True)\n    time.sleep(0.005)"
    path = make_notebook(server, f"gateway-{run}.ipynb", code)
    opened: list[float] = []
    with ServerSampler(server, lat) as sampler:
        kernel_id = await new_kernel(server, path)
        for _ in range(connects + 1):
            started = time.perf_counter()
            client = await KernelClient.connect(server, kernel_id)
            await client.ready()
            opened.append((time.perf_counter() - started) * 1000)
            client.close()
            await asyncio.sleep(0.1)
        client = await KernelClient.connect(server, kernel_id)
        await client.ready()
        msg_id = await client.execute(code)
        await client.until_output(msg_id)
        client.close()
        await wait_kernel_idle(server, kernel_id)
        cell = await settle(server, path, lambda c: stream_end(c) == "199\n", timeout=15)
    await shutdown(server, kernel_id)
    return {
        "first_ms": opened[0],
        "open_ms": statistics.median(opened[1:]),
        "done": float(stream_end(cell) == "199\n"),
        "p99": sampler.p99(),
    }
