"""What one more IOPub subscriber that keeps up costs a kernel, with no extension at all.

    python benchmarks/subscriber.py                 # 200,000 lines attached, 2 rounds
    python benchmarks/subscriber.py --lines 20000 --rounds 1

The extension must receive every message a kernel publishes, so it holds an IOPub
subscription of its own and reads it as fast as the kernel sends. The kernel's ZMQ PUB
socket then delivers every message once more (a subscriber that falls behind, as the
server's own do while its event loop is busy, has the rest dropped at the kernel, which
costs the kernel nothing). This measures that price apart from the extension's code: the
same attached 200,000-line cell (``run.py``'s workload) on a plain server, on a plain
server with a bare subscriber (a separate process doing nothing but
``recv_multipart()`` on the kernel's IOPub port), on a plain server with a bare
subscriber to the topic ``kernel.`` only (ipykernel's statuses, execute inputs and
results: ZMQ filters at the publisher, so the kernel sends it nothing else), and on a
server with the extension. The cell writes the time it ended to a file, so the kernel's
own time is measured whatever the server forwards. Rounds alternate the order of the
four.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
VARIANTS = ("plain", *SUBSCRIBERS, "with extension")


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


async def one(variant: str, folder: Path, lines: int) -> dict[str, float]:
    server = start_server(variant, folder, extension=variant == "with extension")
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
        result = {
            "cell_s": float(end_file.read_text()) - started,
            "kernel_cpu_s": cpu(kernel) - kernel_cpu,
            "server_cpu_s": server.cpu_seconds() - server_cpu,
            # Its whole life: the second of Python's start and imports included.
            "subscriber_cpu_s": cpu(psutil.Process(subscriber.pid)) if subscriber else 0.0,
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
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="persist-subscriber-") as tmp:
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
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
    print("| server | the cell, s | ratio | kernel CPU s | server CPU s | subscriber CPU s |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        med = {
            key: statistics.median(r[key] for r in results[variant]) for key in results[variant][0]
        }
        print(
            f"| {variant} | {med['cell_s']:.1f} | {med['cell_s'] / plain:.2f} | "
            f"{med['kernel_cpu_s']:.1f} | {med['server_cpu_s']:.1f} | "
            f"{med['subscriber_cpu_s']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare-subscriber"]:
        bare_subscriber(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000, help="lines the cell prints")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the four servers")
    sys.exit(asyncio.run(main(parser.parse_args())))
