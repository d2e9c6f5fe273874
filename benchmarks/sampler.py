"""Time GET /api/status and follow a server's RSS, in a process of its own.

    python benchmarks/sampler.py BASE_URL TOKEN PID

Samples until its standard input closes, then prints one JSON object: every latency in
ms and when its request started, the RSS at the start and the peak, of the server and
of the extension's IOPub reader process together (its child, started with the first
kernel: what the reader holds is the server's memory). A process of its own: in the
benchmark's process the latency measured could include waits for the GIL held by the
workload's own threads (parsing the notebooks and journals it polls, which only the
extension's side writes).
"""

from __future__ import annotations

import json
import select
import sys
import time
import urllib.request

import psutil
from processes import readers_of

#: Seconds between the end of one request and the start of the next.
INTERVAL = 0.05
#: Seconds between two looks for the reader among the server's children.
READER_LOOKUP_INTERVAL = 1.0


class ServerMemory:
    """The RSS of a server and of its IOPub reader process, whenever that one runs."""

    def __init__(self, pid: int) -> None:
        self.server = psutil.Process(pid)
        self.reader: psutil.Process | None = None
        self._looked = float("-inf")

    def _find_reader(self) -> None:
        self._looked = time.monotonic()
        self.reader = next(iter(readers_of(self.server)), None)

    def rss(self) -> int:
        """Bytes; psutil.Error once the server is gone."""
        total = self.server.memory_info().rss
        if self.reader is None and time.monotonic() - self._looked >= READER_LOOKUP_INTERVAL:
            self._find_reader()
        if self.reader is not None:
            try:
                total += self.reader.memory_info().rss
            except psutil.Error:
                self.reader = None  # ended (the server restarts it with its next kernel)
        return total


def sample(base_url: str, token: str, pid: int) -> dict[str, object]:
    memory = ServerMemory(pid)
    start_rss = peak_rss = memory.rss()
    request = urllib.request.Request(
        f"{base_url}api/status", headers={"Authorization": f"token {token}"}
    )
    latencies: list[float] = []
    #: When each request started (seconds since the epoch), to match a server's log.
    times: list[float] = []
    while True:
        started = time.perf_counter()
        wall = time.time()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            latencies.append((time.perf_counter() - started) * 1000)
            times.append(wall)
        except OSError:
            pass
        try:
            peak_rss = max(peak_rss, memory.rss())
        except psutil.Error:
            break
        readable, _, _ = select.select([sys.stdin], [], [], INTERVAL)
        if readable and not sys.stdin.buffer.read1(1):
            break  # the benchmark closed our input: the workload is over
    return {"latencies_ms": latencies, "times": times, "start_rss": start_rss, "peak_rss": peak_rss}


if __name__ == "__main__":
    print(json.dumps(sample(sys.argv[1], sys.argv[2], int(sys.argv[3]))), flush=True)
