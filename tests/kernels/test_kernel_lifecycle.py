"""Kernel starts, restarts, deaths and shutdowns, with no client attached."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
from helpers import (
    LabLikeClient,
    load_cells,
    make_notebook,
    read_cells,
    run_and_leave,
    stream_text,
    wait_for,
)
from jupyter_client.multikernelmanager import MultiKernelManager

from jupyter_persist.kernels.lookup import find_kernel

PRINT_SLOWLY = (
    "import time\nfor i in range(300):\n    print(f'line {i}', flush=True)\n    time.sleep(0.05)"
)


def contiguous_lines(text: str) -> int:
    """Number of lines 'line 0'..'line N-1' in order, failing on any gap or duplicate."""
    lines = text.splitlines()
    assert lines == [f"line {i}" for i in range(len(lines))], f"gap or duplicate in {lines!r}"
    return len(lines)


async def start_detached_run(
    jp_ws_fetch: Any, kernel_id: str, cell_id: str, code: str = PRINT_SLOWLY
) -> str:
    return await run_and_leave(jp_ws_fetch, kernel_id, code, cell_id, wait_text="line 2")


AFTER = "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('done')"


async def run_attached_then_leave(jp_ws_fetch: Any, kernel_id: str, cell_id: str) -> None:
    """Start a cell that prints 'first' then 'done' a second later; leave in between."""
    await run_and_leave(jp_ws_fetch, kernel_id, AFTER, cell_id, wait_text="first")


async def test_shutdown_mid_run_keeps_what_was_captured(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "shutdown.ipynb"
    make_notebook(nb_path, [("long", PRINT_SLOWLY)])
    _, kernel_id = await notebook_session(nb_path.name)
    await start_detached_run(jp_ws_fetch, kernel_id, "long")
    await wait_for(
        lambda: "line 20" in stream_text(read_cells(nb_path)["long"]), what="line 20 on disk"
    )
    execution = next(capture.store.executions(kernel_id))
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    captured = execution.area.to_json()[0]["text"]
    await wait_for(
        lambda: kernel_id not in capture.listener.kernel_ids, what="subscription released"
    )
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["long"]) == captured,
        what="everything captured before the shutdown on disk",
    )
    assert contiguous_lines(stream_text((await load_cells(nb_path))["long"])) >= 20


async def test_rest_restart_mid_run_then_capture_continues(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "restart.ipynb"
    make_notebook(nb_path, [("long", PRINT_SLOWLY), ("after", AFTER)])
    _, kernel_id = await notebook_session(nb_path.name)
    await start_detached_run(jp_ws_fetch, kernel_id, "long")
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    # The client saw "line 2" before it left, so the file must come to hold at least
    # lines 0-2 (a write made before the restart may hold fewer: wait, do not sample once).
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["long"]).count("\n") >= 3,
        what="the interrupted run's first three lines on disk",
    )
    contiguous_lines(stream_text((await load_cells(nb_path))["long"]))
    await run_attached_then_leave(jp_ws_fetch, kernel_id, "after")
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["after"]) == "first\ndone\n",
        what="output of a cell run after the restart",
    )
    assert read_cells(nb_path)["after"]["execution_count"] == 1
    assert kernel_id in capture.listener.kernel_ids


async def test_kernel_killed_mid_run_restarts_and_capture_continues(
    jp_root_dir: Path, jp_serverapp: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "killed.ipynb"
    make_notebook(nb_path, [("long", PRINT_SLOWLY), ("after", AFTER)])
    _, kernel_id = await notebook_session(nb_path.name)
    await start_detached_run(jp_ws_fetch, kernel_id, "long")
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    os.kill(kernel.provisioner.pid, signal.SIGKILL)
    await wait_for(
        lambda: read_cells(nb_path)["long"]["outputs"] != [], what="the killed run on disk"
    )
    contiguous_lines(stream_text((await load_cells(nb_path))["long"]))

    async def run_after() -> bool:
        try:
            await run_attached_then_leave(jp_ws_fetch, kernel_id, "after")
        except (AssertionError, ConnectionError, TimeoutError):
            return False  # the kernel is still restarting
        return True

    await wait_for(run_after, timeout=60, interval=1, what="the restarted kernel to run a cell")
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["after"]) == "first\ndone\n",
        what="output of a cell run after the automatic restart",
    )


async def test_fifty_kernel_cycles_leak_no_descriptors(jp_fetch: Any, capture: Any) -> None:
    process = psutil.Process()

    async def cycle() -> None:
        response = await jp_fetch(
            "api", "kernels", method="POST", body=json.dumps({"name": "python3"})
        )
        kernel_id = json.loads(response.body)["id"]
        await wait_for(lambda: kernel_id in capture.listener.kernel_ids, what="subscription")
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, what="release")

    for _ in range(3):
        await cycle()
    await asyncio.sleep(0.5)
    fds_before = process.num_fds()
    sockets_before = len(process.net_connections(kind="all"))
    for _ in range(50):
        await cycle()
    await asyncio.sleep(0.5)
    assert capture.listener.kernel_ids == set()
    # A leak shows as one or more per cycle (50 or more); a few may still be closing.
    assert process.num_fds() <= fds_before + 5, "file descriptors grew over 50 kernel cycles"
    assert len(process.net_connections(kind="all")) <= sockets_before + 5, "sockets grew"


async def test_bare_kernel_outputs_go_to_no_notebook(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(response.body)["id"]
    await wait_for(lambda: kernel_id in capture.listener.kernel_ids, what="bare kernel tracked")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute("print('console output')", metadata={})
    client.close()
    await wait_for(
        lambda: capture.store.get(msg_id) is None, what="the console execution forgotten"
    )
    assert list(jp_root_dir.glob("*.ipynb")) == []  # noqa: ASYNC240


async def test_console_session_is_tracked_but_writes_nothing(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    body = {"path": "console-1", "type": "console", "name": "", "kernel": {"name": "python3"}}
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    kernel_id = json.loads(response.body)["kernel"]["id"]
    await wait_for(lambda: kernel_id in capture.listener.kernel_ids, what="console kernel tracked")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute("print('console output')", metadata={})
    await client.wait_idle(msg_id)
    client.close()
    await wait_for(
        lambda: capture.store.get(msg_id) is None, what="the console execution forgotten"
    )
    assert list(jp_root_dir.glob("*.ipynb")) == []  # noqa: ASYNC240


def test_a_gone_kernel_is_none_for_both_kinds_of_kernel_manager(jp_serverapp: Any) -> None:
    """jupyter_server's manager raises a 404 for an unknown id, jupyter_client's a KeyError."""
    assert find_kernel(jp_serverapp.kernel_manager, "no-such-kernel") is None
    assert find_kernel(MultiKernelManager(), "no-such-kernel") is None
