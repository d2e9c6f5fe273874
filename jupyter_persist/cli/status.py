"""``jupyter persist status``: what the running servers capture, and journals on disk."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from traitlets import Bool

from ..storage.ondisk import journal_files
from .base import PersistCommand, RunningServer, size


class StatusApp(PersistCommand):
    """Show the running servers and, per notebook captured, what its cells are doing."""

    name = "jupyter persist status"
    description = """Show the running Jupyter servers (as `jupyter server list` finds them)
    and, per notebook whose outputs they capture: kernel state, cells running, output
    captured, last write, whether a client is attached. Also lists the crash journals on
    disk: a journal holds outputs not yet written into their notebook."""
    examples = "jupyter persist status\njupyter persist status --json"

    as_json = Bool(False, config=True, help="Print the status as JSON.")
    flags = {"json": ({"StatusApp": {"as_json": True}}, "Print the status as JSON.")}

    def run(self) -> None:
        """Print the status."""
        servers = self.running_servers()
        journals = journal_files(self.journal())
        if self.as_json:
            report = {
                "servers": [
                    {"url": s.url, "root_dir": s.root_dir, "pid": s.pid, "status": s.status}
                    | ({"problem": s.problem} if s.problem else {})
                    for s in servers
                ],
                "journals": [
                    {"file": str(j.file), "notebooks": j.notebooks, "bytes": j.size}
                    | {"modified": datetime.fromtimestamp(j.modified).astimezone().isoformat()}
                    for j in journals
                ],
            }
            print(json.dumps(report, indent=2))
            return
        if not servers:
            print("No Jupyter server is running.")
        for server in servers:
            print("\n".join(server_lines(server)))
        if journals:
            print(f"\nCrash journals in {self.journal().directory}:")
            for journal in journals:
                damaged = " (damaged tail)" if journal.damaged else ""
                print(
                    f"  {', '.join(journal.notebooks) or '(empty)'}: {size(journal.size)}, "
                    f"modified {ago(journal.modified)}{damaged}"
                )
        else:
            print(f"\nNo crash journals in {self.journal().directory}.")


def server_lines(server: RunningServer) -> list[str]:
    """A running server and its notebooks, as lines for a terminal."""
    lines = [f"Server {server.url} (pid {server.pid}, root {server.root_dir})"]
    status = server.status
    if status is None:
        return [*lines, f"  {server.problem}"]
    lines.append(f"  jupyter_persist {status['version']}, state in {status['state_dir']}")
    if "event_loop" in status:  # servers before 2026-12-04 do not count it
        lines.append(event_loop_line(status["event_loop"]))
    if "memory" in status:  # servers before 2026-12-04 do not trim
        lines.append(memory_line(status["memory"]))
    if not status["notebooks"]:
        lines.append("  no notebook is being captured")
    for notebook in status["notebooks"]:
        lines.extend(notebook_lines(notebook))
    return lines


def event_loop_line(meter: dict[str, Any]) -> str:
    """The extension's time on the server's event loop, as a line for a terminal."""
    kind = max(meter["longest_ms"], key=meter["longest_ms"].get, default=None)
    longest = meter["longest_ms"][kind] if kind else 0.0
    cpu = meter.get("longest_cpu_ms", {}).get(kind)  # servers before 2026-12-07 do not say
    of_it = f", {cpu:.0f} ms of it CPU" if cpu is not None else ""
    return (
        f"  event loop: {meter['seconds_total']:.1f} s in the extension (longest block "
        f"{longest:.0f} ms{of_it}); {meter['messages']:,} IOPub messages, "
        f"{meter['iopub_us_per_message']:.0f} µs each"
    )


def memory_line(memory: dict[str, Any]) -> str:
    """What the extension gave back of the memory the server freed, as a line."""
    if not memory["trimming"]:
        return "  memory: freed memory is not given back (trim_memory off, or no glibc)"
    line = (
        f"  memory: {memory['trims']:,} trim(s) gave {memory['returned_mb']:.0f} MB the "
        "server freed back to the system"
    )
    thresholds = memory.get("thresholds")  # servers before 2026-12-05 do not say
    return f"{line}; glibc thresholds: {thresholds}" if thresholds else line


def notebook_lines(notebook: dict[str, Any]) -> list[str]:
    """One captured notebook, as lines for a terminal."""
    kernels = [
        f"kernel {k['id'][:8]} {k['execution_state']}, "
        + ("client attached" if k["client_attached"] else "no client attached")
        for k in notebook["kernels"]
    ]
    lines = [f"  {notebook['path']}: {'; '.join(kernels) or 'no kernel'}"]
    running = notebook["running_cells"]
    written = notebook["last_write"]
    lines.append(
        f"    {'running: cell ' + ', '.join(running) if running else 'no cell running'}; "
        f"{size(notebook['captured_chars'], 'characters')} captured, "
        f"{size(notebook['held_bytes'], 'bytes')} held in memory; "
        f"last write {ago(datetime.fromisoformat(written).timestamp()) if written else 'none'}"
        f"; {notebook['unwritten_executions']} execution(s) not written yet"
    )
    if notebook["unplaced_executions"]:
        lines.append(
            f"    {notebook['unplaced_executions']} execution(s) could not be placed in a cell "
            "(kept in memory; see the server log)"
        )
    return lines


def ago(timestamp: float) -> str:
    """How long ago a POSIX time was, roughly."""
    seconds = max(0.0, time.time() - timestamp)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
