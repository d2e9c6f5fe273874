"""SIGKILL the server mid-run with no client attached; the next start restores the output."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
from browser import jupyter_server_process, read_cells_retrying, start_session
from helpers import LabLikeClient, make_notebook, stream_text

JOURNAL_INTERVAL = 1.0
CODE = (
    "import time\nfor i in range(600):\n"
    "    print(f'line {i} {time.time():.3f}', flush=True)\n    time.sleep(0.1)"
)


async def test_sigkill_loses_at_most_the_journal_interval(tmp_path: Path) -> None:
    args = [f"--PersistExtension.journal_interval={JOURNAL_INTERVAL}"]
    # A save interval longer than the test: only the journal can keep the output.
    with jupyter_server_process(
        tmp_path, app="server", save_interval=600, extra_args=args
    ) as server:
        nb_path = server.root_dir / "crash.ipynb"
        make_notebook(nb_path, [("c", CODE)])
        kernel_id = start_session(server.base_url, server.token, nb_path.name)
        client = await LabLikeClient.connect_url(server.base_url, server.token, kernel_id)
        await client.wait_ready()
        msg_id = await client.execute(CODE, cell_id="c")
        await client.wait_for_output(msg_id, "line 3 ")
        client.close()
        await asyncio.sleep(3)
        kernels = psutil.Process(server.process.pid).children(recursive=True)
        killed_at = time.time()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        for kernel in kernels:
            kernel.kill()
        assert read_cells_retrying(nb_path)["c"]["outputs"] == []

    with jupyter_server_process(
        tmp_path, app="server", save_interval=600, extra_args=args
    ) as server:
        deadline = time.monotonic() + 30
        while "line 0 " not in stream_text(read_cells_retrying(nb_path)["c"]):
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.2)
        # The restore logs after its write returns: the file can be read before the line is out.
        while "restored 1 cell(s) of crash.ipynb" not in server.log():
            assert time.monotonic() < deadline, server.log_tail()
            await asyncio.sleep(0.2)

    lines = stream_text(read_cells_retrying(nb_path)["c"]).splitlines()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(len(numbers))), "a gap or a duplicate in the restored output"
    stamps = [float(line.split()[2]) for line in lines]
    printed_before_kill = int((killed_at - stamps[0]) / 0.1)  # one line per 0.1 s
    restored_window = killed_at - JOURNAL_INTERVAL - 0.3  # the kernel's own 0.2 s batching
    assert all(stamp <= killed_at for stamp in stamps)
    assert stamps[-1] >= restored_window, (
        f"last restored line printed {killed_at - stamps[-1]:.2f}s before the kill"
    )
    assert len(lines) >= printed_before_kill - (JOURNAL_INTERVAL + 0.3) / 0.1
    journals = Path(tmp_path / "data" / "jupyter_persist" / "journals")
    assert list(journals.glob("*.jsonl")) == []  # noqa: ASYNC240 (compacted after restore)
