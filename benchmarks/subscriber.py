"""What IOPub subscribers cost a kernel that prints to an attached client.

    python benchmarks/subscriber.py                 # 200,000 lines attached, 2 rounds
    python benchmarks/subscriber.py --lines 20000 --rounds 1 --only "with extension"

The extension must receive every message a kernel publishes, so it holds an IOPub
subscription of its own and reads it as fast as the kernel sends. This measures what
subscribers cost the kernel apart from the extension's code: the same attached
200,000-line cell (``run.py``'s workload) on a plain server, on a plain server with a
bare subscriber (a separate process doing nothing but ``recv_multipart()`` on the
kernel's IOPub port), on a plain server with a bare subscriber to the topic ``kernel.``
only (ipykernel's statuses, execute inputs and results: ZMQ filters at the publisher,
so the kernel sends it nothing else), on a plain server without jupyter_server's
activity watcher (``counting.py``), and on a server with the extension, with its
defaults and with ``track_kernel_activity`` on (``--only`` picks some of the six). Every
server counts what its own IOPub streams read (the websockets' and the watcher's), to
tell whether the kernel delivered them everything. The cell writes the time it ended
to a file, so the kernel's own time is measured whatever the server forwards. The
kernel's CPU is split by thread (its main thread, ipykernel's IOPub thread, ZMQ's I/O
thread), with how often its threads were preempted, and the share of the machine's
cores busy during the cell: where the cores are full, any process's CPU time is
time the kernel's threads wait for. Rounds alternate the order of the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

sys.path.insert(0, str(Path(__file__).parent))

from servers import KernelClient, Server, start_server
from workloads import make_notebook, new_kernel, shutdown

#: Each plain server's bare subscriber and the topic it subscribes to.
SUBSCRIBERS = {"plain + bare subscriber": "", "plain + status-topic subscriber": "kernel."}
#: A plain server without jupyter_server's activity watcher (see ``counting.py``).
UNWATCHED = "plain, no activity watcher"
#: The extension's servers and their settings.
EXTENSIONS = {
    "with extension": [],
    "with extension, activity kept": ["--PersistExtension.track_kernel_activity=True"],
}
VARIANTS = ("plain", *SUBSCRIBERS, UNWATCHED, *EXTENSIONS)


def bare_subscriber(connection_file: str, topic: str) -> None:
    """Read every message of a kernel's IOPub under ``topic`` ("" for all) and drop it
    (run in a process of its own)."""
    info = json.loads(Path(connection_file).read_text())
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
    socket.connect(f"{info['transport']}://{info['ip']}:{info['iopub_port']}")
    while True:
        socket.recv_multipart()


def start_bare_subscriber(connection_file: Path, topic: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--bare-subscriber", str(connection_file), topic]
    return subprocess.Popen(command)


def kernel_process(server: Server) -> psutil.Process:
    for child in server.ps.children(recursive=True):
        if "ipykernel_launcher" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("no kernel process under the server")


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


TICKS = os.sysconf("SC_CLK_TCK")


def kernel_threads(process: psutil.Process) -> dict[str, float]:
    """CPU seconds of a kernel's threads and how often they were preempted (Linux).

    "main" runs the cell (each ``print(..., flush=True)`` then waits for the IOPub
    thread); "ZMQ I/O" writes each message to each subscriber's connection; "other" is
    mostly ipykernel's IOPub thread, which serializes and signs every message (Python
    does not name its threads for the system, so it is told apart by elimination).
    """
    totals = {"main": 0.0, "ZMQ I/O": 0.0, "other": 0.0, "preempted": 0.0}
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # from the third field, "state", on
        seconds = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        kind = (
            "main"
            if task.name == str(process.pid)
            else "ZMQ I/O"
            if name.startswith("ZMQbg/IO")
            else "other"
        )
        totals[kind] += seconds
        for line in status.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                totals["preempted"] += int(line.split()[1])
    return totals


def machine_busy() -> tuple[float, float]:
    """Seconds every core was busy and seconds in all, summed over the cores."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle, sum(times)


async def one(variant: str, folder: Path, lines: int) -> dict[str, float]:
    manager = "UnwatchedKernelManager" if variant == UNWATCHED else "CountingKernelManager"
    extra_args = [f"--ServerApp.kernel_manager_class=counting.{manager}"]
    extra_args += EXTENSIONS.get(variant, [])
    counts_file = folder / "iopub-counts.json"
    os.environ["PERSIST_BENCH_COUNTS"] = str(counts_file)  # the server's environment
    server = start_server(variant, folder, extension=variant in EXTENSIONS, extra_args=extra_args)
    subscriber: subprocess.Popen[bytes] | None = None
    try:
        end_file = folder / "cell-ended"
        code = (
            f"import time\nfor i in range({lines}):\n    print(i, flush=True)\n"
            f"open({str(end_file)!r}, 'w').write(repr(time.time()))"
        )
        kernel_id = await new_kernel(server, make_notebook(server, "cell.ipynb", code))
        client = await KernelClient.connect(server, kernel_id)
        await client.ready()
        if variant in SUBSCRIBERS:
            connection_file = folder / "jupyter_runtime_dir" / f"kernel-{kernel_id}.json"
            subscriber = start_bare_subscriber(connection_file, SUBSCRIBERS[variant])
            await asyncio.sleep(1)  # connected before the cell starts
        kernel = kernel_process(server)
        kernel_cpu, server_cpu = cpu(kernel), server.cpu_seconds()
        threads, (busy, total) = kernel_threads(kernel), machine_busy()
        started = time.time()
        msg_id = await client.execute(code)
        while not end_file.exists():
            try:
                msg = await client.recv(timeout=1)
            except TimeoutError:
                continue
            if msg["parent_header"].get("msg_id") == msg_id and msg["header"]["msg_type"] == (
                "error"
            ):
                raise RuntimeError(f"the cell failed: {msg['content']}")
        await asyncio.sleep(0.2)  # the end time is written completely
        kernel_cpu, server_cpu = cpu(kernel) - kernel_cpu, server.cpu_seconds() - server_cpu
        after, (busy_after, total_after) = kernel_threads(kernel), machine_busy()
        threads = {kind: after[kind] - threads[kind] for kind in threads}
        await asyncio.sleep(1.0)  # the counts written after the streams read what they hold
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
        result = {
            "cell_s": float(end_file.read_text()) - started,
            "kernel_cpu_s": kernel_cpu,
            "server_cpu_s": server_cpu,
            # Its whole life: the second of Python's start and imports included.
            "subscriber_cpu_s": cpu(psutil.Process(subscriber.pid)) if subscriber else 0.0,
            "kernel_main_s": threads["main"],
            "kernel_iopub_s": threads["other"],
            "kernel_zmq_io_s": threads["ZMQ I/O"],
            # Times the kernel's threads were taken off a core for another runnable one.
            "kernel_preempted_k": threads["preempted"] / 1000,
            # The share of the machine's cores that were busy (every process's time).
            "machine_busy": (busy_after - busy) / max(total_after - total, 1e-9),
            # What the server's own subscriptions read, in thousands of messages.
            "websocket_kmsgs": counts.get("websocket", 0) / 1000,
            "watcher_kmsgs": counts.get("watcher", 0) / 1000,
        }
        client.close()
        await shutdown(server, kernel_id)
        return result
    finally:
        if subscriber is not None:
            subscriber.kill()
            subscriber.wait()
        server.stop()


async def main(args: argparse.Namespace) -> int:
    # The servers import counting.py from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
    )
    variants = [v for v in VARIANTS if args.only is None or v in args.only]
    if "plain" not in variants:
        variants.insert(0, "plain")  # the ratios' reference
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory(prefix="persist-subscriber-") as tmp:
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for variant in order:
                folder = Path(tmp) / f"{round_}-{VARIANTS.index(variant)}"
                result = await one(variant, folder, args.lines)
                print(
                    f"  round {round_}: {variant}: "
                    + ", ".join(f"{k}={v:.1f}" for k, v in result.items()),
                    flush=True,
                )
                results[variant].append(result)
    plain = statistics.median(r["cell_s"] for r in results["plain"])
    print(f"\n{args.lines:,} lines printed with flush, a client attached; medians of {args.rounds}")
    print(
        "| server | the cell, s | ratio | kernel CPU s | server CPU s | subscriber CPU s "
        "| server's reads, websocket / watcher, thousands "
        "| kernel's threads CPU s, main / IOPub / ZMQ I/O | kernel preempted, thousands "
        "| machine busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant in variants:
        med = {
            key: statistics.median(r[key] for r in results[variant]) for key in results[variant][0]
        }
        print(
            f"| {variant} | {med['cell_s']:.1f} | {med['cell_s'] / plain:.2f} | "
            f"{med['kernel_cpu_s']:.1f} | {med['server_cpu_s']:.1f} | "
            f"{med['subscriber_cpu_s']:.1f} | "
            f"{med['websocket_kmsgs']:.0f} / {med['watcher_kmsgs']:.0f} | "
            f"{med['kernel_main_s']:.1f} / {med['kernel_iopub_s']:.1f} / "
            f"{med['kernel_zmq_io_s']:.1f} | {med['kernel_preempted_k']:.0f} | "
            f"{med['machine_busy']:.0%} |"
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare-subscriber"]:
        bare_subscriber(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000, help="lines the cell prints")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the servers")
    parser.add_argument(
        "--only",
        action="append",
        choices=VARIANTS,
        help="measure this server (repeatable; plain always runs); default: all six",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
