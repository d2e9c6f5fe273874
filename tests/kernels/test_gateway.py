"""Kernels on a real Jupyter Kernel Gateway (``--gateway-url``), captured as local ones are."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import jupyter_server_process, start_session
from gateway import CuttablePath, KernelGateway, kernel_gateway_process
from helpers import (
    LEGACY,
    LabLikeClient,
    load_cells,
    make_notebook,
    read_cells,
    stream_text,
    wait_for,
)
from helpers import (
    run_and_leave as run_and_leave_page,
)
from jupyter_server.gateway.managers import GatewayMappingKernelManager

from jupyter_persist.kernels.gateway import GatewayFeed


def printing(lines: int, pause: float = 0.25) -> str:
    """A cell printing ``line 0`` … ``line <lines-1>``, one every ``pause`` seconds."""
    return (
        f"import time\nfor i in range({lines}):\n    print(f'line {{i}}', flush=True)\n"
        f"    time.sleep({pause})"
    )


LINES = 12
TWELVE_LINES = printing(LINES)
EXPECTED = "".join(f"line {i}\n" for i in range(LINES))


async def run_and_leave(
    jp_ws_fetch: Any, kernel_id: str, code: str, cell_id: str, wait_text: str
) -> str:
    """As a page would; jupyter_server speaks the legacy protocol to clients of gateway kernels."""
    return await run_and_leave_page(
        jp_ws_fetch, kernel_id, code, cell_id, wait_text=wait_text, protocol=LEGACY
    )


@pytest.fixture(scope="module")
def kernel_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelGateway]:
    with kernel_gateway_process(tmp_path_factory.mktemp("kg")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gateway_path(kernel_gateway: KernelGateway) -> Iterator[CuttablePath]:
    """One for the module: the servers' teardown still needs it to stop their kernels."""
    path = CuttablePath(int(kernel_gateway.url.rsplit(":", 1)[1]))
    yield path
    path.close()


@pytest.fixture
def jp_server_config(kernel_gateway: KernelGateway, gateway_path: CuttablePath) -> dict[str, Any]:
    """A server whose kernels run on the gateway, reached through a path the test can cut."""
    gateway_path.restore()
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 0.5},
        **kernel_gateway.server_config(gateway_path.url),
    }


def gateway_feed(capture: Any, kernel_id: str) -> GatewayFeed:
    feed = capture.listener._subscriptions.get(kernel_id)
    assert isinstance(feed, GatewayFeed), f"kernel {kernel_id} has no gateway feed"
    return feed


def complete(nb_path: Path, cell_id: str, expected: str) -> bool:
    cell = read_cells(nb_path)[cell_id]
    return stream_text(cell) == expected and isinstance(cell["execution_count"], int)


async def test_client_gone_mid_run_every_line_and_count_on_disk(
    jp_serverapp: Any,
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert isinstance(jp_serverapp.kernel_manager, GatewayMappingKernelManager)
    nb_path = jp_root_dir / "gw.ipynb"
    make_notebook(nb_path, [("c", TWELVE_LINES)])
    _, kernel_id = await notebook_session(nb_path.name)
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        await run_and_leave(jp_ws_fetch, kernel_id, TWELVE_LINES, "c", wait_text="line 1")
        # The 12 lines take 3 s; the gate must not have held the client for 10 s.
        assert time.monotonic() - started < 8
        await wait_for(lambda: complete(nb_path, "c", EXPECTED), what="12 lines and the count")
    assert gateway_feed(capture, kernel_id).live.is_set()
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r.getMessage() for r in warned if "jupyter_persist" in r.getMessage()]


async def test_websocket_cut_mid_run_reconnects_and_warns_with_the_gap(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    gateway_path: CuttablePath,
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = printing(80)
    nb_path = jp_root_dir / "cut.ipynb"
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)

    def gaps() -> list[float]:
        cut = [r.getMessage() for r in caplog.records if "was cut for" in r.getMessage()]
        return [float(m.split("was cut for ")[1].split(" s")[0]) for m in cut]

    with caplog.at_level(logging.WARNING):
        await run_and_leave(jp_ws_fetch, kernel_id, code, "c", wait_text="line 1")
        # The page left a while ago: ours is the kernel's last connection on the gateway,
        # whose buffer for our session replays what the cut would have lost.
        await asyncio.sleep(1)
        gateway_path.cut()
        await asyncio.sleep(4)  # several attempts to reconnect fail meanwhile
        gateway_path.restore()
        await wait_for(lambda: len(gaps()) == 1, what="the first reconnection")
        # The gateway replays first, then what comes live: once a line printed after the
        # reconnection is on disk, the replay is in (a cut during it would lose it).
        await wait_for(
            lambda: "line 40\n" in stream_text(read_cells(nb_path)["c"]),
            what="the replay and a later line on disk",
        )
        gateway_path.cut()  # a second, shorter cut: its own gap is reported
        await asyncio.sleep(1)
        gateway_path.restore()
        await wait_for(
            lambda: stream_text(read_cells(nb_path)["c"]).endswith("line 79\n"),
            what="the run's last line on disk",
        )
    # What the gateway had sent when the path broke is lost with it (it cannot know);
    # what it buffered for our session while we were away came back when we did.
    lines = stream_text(read_cells(nb_path)["c"]).splitlines()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == sorted(set(numbers))
    assert len(numbers) >= 76, f"more than in-flight lines lost: {numbers}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One WARNING when a cut starts (not one per failed attempt), one when it ends.
    assert len([w for w in warnings if "cannot reach kernel" in w]) == 2, warnings
    assert all(kernel_id in w for w in warnings if "was cut for" in w)
    first, second = gaps()
    assert 4.0 <= first < 30
    assert 1.0 <= second < first


async def test_interrupt_restart_and_shutdown_through_the_gateway(
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    kernel_gateway: KernelGateway,
) -> None:
    nb_path = jp_root_dir / "life.ipynb"
    after = "print('after restart')"
    endless = "import time\nprint('waiting', flush=True)\ntime.sleep(600)"
    make_notebook(nb_path, [("stuck", endless), ("long", TWELVE_LINES), ("after", after)])
    _, kernel_id = await notebook_session(nb_path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, endless, "stuck", wait_text="waiting")
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")

    def interrupted() -> bool:
        outputs = read_cells(nb_path)["stuck"]["outputs"]
        return any(o.get("ename") == "KeyboardInterrupt" for o in outputs)

    await wait_for(interrupted, what="the interrupted cell's KeyboardInterrupt on disk")
    await run_and_leave(jp_ws_fetch, kernel_id, TWELVE_LINES, "long", wait_text="line 1")
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["long"]).startswith("line 0\nline 1\n"),
        what="the interrupted run's lines on disk",
    )
    await run_and_leave(jp_ws_fetch, kernel_id, after, "after", wait_text="after")
    await wait_for(
        lambda: complete(nb_path, "after", "after restart\n"), what="output after the restart"
    )
    assert read_cells(nb_path)["after"]["execution_count"] == 1
    feed = gateway_feed(capture, kernel_id)

    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, what="feed closed")
    assert feed.closed
    assert kernel_id not in kernel_gateway.kernel_ids()
    cells = await load_cells(nb_path)
    assert stream_text(cells["after"]) == "after restart\n"


async def long_run_left(nb_path: Path, jp_ws_fetch: Any, notebook_session: Any) -> tuple[Path, str]:
    """A notebook whose cell ``c`` prints for 100 s, run by a page that left at line 2."""
    code = printing(400)
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, code, "c", wait_text="line 2")
    return nb_path, kernel_id


async def test_kernel_shut_down_on_the_gateway_is_followed(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    kernel_gateway: KernelGateway,
) -> None:
    nb_path, kernel_id = await long_run_left(
        jp_root_dir / "culled.ipynb", jp_ws_fetch, notebook_session
    )
    # As the gateway's culler does: the kernel ends behind this server's back.
    await asyncio.to_thread(kernel_gateway.delete_kernel, kernel_id)
    await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, what="kernel forgotten")
    await wait_for(
        lambda: read_cells(nb_path)["c"]["outputs"] != [], what="what ran before, on disk"
    )
    assert "line 2\n" in stream_text(read_cells(nb_path)["c"])


async def test_gateway_restarted_without_the_kernel(
    tmp_path: Path,
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    kernel_gateway: KernelGateway,
    gateway_path: CuttablePath,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path, kernel_id = await long_run_left(
        jp_root_dir / "restarted.ipynb", jp_ws_fetch, notebook_session
    )
    original = gateway_path.target_port
    # A new gateway process behind the same URL, which has never heard of the kernel.
    with kernel_gateway_process(tmp_path, token=kernel_gateway.token) as restarted:
        try:
            with caplog.at_level(logging.INFO):
                gateway_path.target_port = restarted.port
                gateway_path.cut()
                gateway_path.restore()
                await wait_for(
                    lambda: kernel_id not in capture.listener.kernel_ids, what="kernel forgotten"
                )
                await asyncio.sleep(2)  # the server's reconcile must not subscribe again
                assert kernel_id not in capture.listener.kernel_ids
        finally:
            gateway_path.target_port = original  # the server's teardown stops it there
    messages = [r.getMessage() for r in caplog.records if "jupyter_persist" in r.getMessage()]
    assert any(f"kernel {kernel_id} is gone: the gateway no longer has it" in m for m in messages)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in warnings if "jupyter_persist" in r.getMessage()]) <= 1
    assert "line 2\n" in stream_text(read_cells(nb_path)["c"])


async def test_sigkill_of_the_server_mid_run_journal_restores(
    tmp_path: Path, kernel_gateway: KernelGateway
) -> None:
    code = printing(400, pause=0.05)
    args = [*kernel_gateway.server_args(), "--PersistExtension.journal_interval=1"]
    with jupyter_server_process(
        tmp_path, app="server", save_interval=600, extra_args=args
    ) as server:
        nb_path = server.root_dir / "crash.ipynb"
        make_notebook(nb_path, [("c", code)])
        kernel_id = start_session(server.base_url, server.token, nb_path.name)
        client = await LabLikeClient.connect_url(server.base_url, server.token, kernel_id, LEGACY)
        await client.wait_ready()
        msg_id = await client.execute(code, cell_id="c")
        await client.wait_for_output(msg_id, "line 3\n")
        client.close()
        await asyncio.sleep(3)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        assert read_cells(nb_path)["c"]["outputs"] == []
    try:
        with jupyter_server_process(
            tmp_path, app="server", save_interval=600, extra_args=args
        ) as server:
            await wait_for(
                lambda: "line 20\n" in stream_text(read_cells(nb_path)["c"]),
                what="the journal's lines restored into the notebook",
            )
            # logged once the merge returns, which can be a moment after the file changed
            await wait_for(
                lambda: "restored 1 cell(s) of crash.ipynb" in server.log(),
                what="the restore's log line",
            )
        lines = stream_text(read_cells(nb_path)["c"]).splitlines()
        assert lines == [f"line {i}" for i in range(len(lines))]
    finally:
        await asyncio.to_thread(kernel_gateway.delete_kernel, kernel_id)
