"""Real JupyterLab in headless Chromium: a tab that lost output saves, no output is lost.

The save guard (:mod:`jupyter_persist.model.guard`) against a browser's own Ctrl+S, as
``test_save_guard.py`` checks it through the REST API. Two stale tabs save their copy of
a cell: one that lost messages in flight when its kernel connection died (a gap), and
one reopened while the cell ran (JupyterLab never shows output of an execution another
page started). Either way the file ends with every captured output exactly once.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    LabServer,
    chromium,
    jupyter_server_process,
    lab_dialogs,
    lab_kernel_state,
    lab_open_notebook,
    lab_run_all_cells,
    lab_wait_kernel_idle,
    lab_wait_output,
    read_cells_retrying,
    report_failure,
    wait_until,
)
from helpers import make_notebook, stream_text
from playwright.sync_api import Page, Response

pytestmark = pytest.mark.browser

CELL_ID = "printer"

# An init script: keeps the page's WebSocket objects, so that a test can close the kernel's.
RECORD_WEBSOCKETS = """(() => {
    const Native = window.WebSocket;
    const sockets = [];
    class RecordedWebSocket extends Native {
        constructor(...args) {
            super(...args);
            sockets.push(this);
        }
    }
    window.WebSocket = RecordedWebSocket;
    window.__testSockets = sockets;
})();"""

# Closes the open kernel websockets with a code JupyterLab takes for a lost connection
# (it stops for good on 1000/1001, and reconnects on anything else).
CLOSE_KERNEL_SOCKETS = """() => {
    const open = (window.__testSockets || []).filter(
        ws => ws.url.includes('/api/kernels/') && ws.readyState === WebSocket.OPEN);
    for (const ws of open) { ws.close(4000, 'test: connection lost'); }
    return open.map(ws => ws.url.split('?')[0]);
}"""

# The cell as the tab holds it in its model, that is, what its save writes.
TAB_CELL = """([path, cellId]) => {
    const widget = Array.from(window.jupyterapp.shell.widgets('main'))
        .find(w => w.context && w.context.path === path);
    const cell = widget?.context.model.toJSON().cells.find(c => c.id === cellId);
    return cell ? {outputs: cell.outputs, execution_count: cell.execution_count} : null;
}"""

FILE_CHANGED = "has changed on disk"
GUARD_LOG = "jupyter_persist: a save of {name} lacked captured outputs of cell {cell}; kept them"


def printer_source(lines: int, delay: str) -> str:
    """A cell printing ``line 0`` ... ``line <lines-1>``, one every ``delay`` s, then DONE."""
    return (
        "import random, time\n"
        f"for i in range({lines}):\n"
        '    print(f"line {i}", flush=True)\n'
        f"    time.sleep({delay})\n"
        'print("DONE", flush=True)\n'
    )


def printed(lines: int) -> list[str]:
    return [*(f"line {i}" for i in range(lines)), "DONE"]


def text_lines(cell: dict[str, Any]) -> list[str]:
    return stream_text(cell).splitlines()


def disk_cell(path: Path) -> dict[str, Any]:
    cell: dict[str, Any] = read_cells_retrying(path)[CELL_ID]
    return cell


def is_complete(cell: dict[str, Any], lines: list[str]) -> bool:
    """Every line exactly once, in one stream output, with an execution count."""
    return (
        stream_text(cell) == "".join(f"{line}\n" for line in lines)
        and len(cell["outputs"]) == 1
        and isinstance(cell["execution_count"], int)
    )


def describe(cell: dict[str, Any]) -> str:
    return f"outputs {stream_text(cell)!r}, execution_count {cell['execution_count']!r}"


def tab_cell(page: Page, path: str) -> dict[str, Any]:
    cell: dict[str, Any] | None = page.evaluate(TAB_CELL, [path, CELL_ID])
    assert cell is not None, f"cell {CELL_ID} is not in the tab of {path}"
    return cell


def kernel_execution_state(server: LabServer) -> str:
    kernels = server.api("kernels")
    assert len(kernels) == 1, kernels
    return str(kernels[0]["execution_state"])


def kernel_connected(page: Page, path: str) -> Callable[[], bool]:
    return lambda: (lab_kernel_state(page, path) or {}).get("connectionStatus") == "connected"


def lab_save(page: Page, path: str, timeout: float = 20) -> list[str]:
    """Ctrl+S in the notebook as a user does, "Overwrite" if the file changed on disk.

    Waits for the save's PUT to answer; returns the texts of the dialogs on the way.
    """
    seen = []
    # A leftover dialog (e.g. "Server Connection Error") would take the keystroke.
    for text in lab_dialogs(page):
        seen.append(text)
        page.locator(".jp-Dialog .jp-Dialog-button").last.click()
    saves: list[Response] = []

    def on_response(response: Response) -> None:
        url = urllib.parse.unquote(response.url.split("?")[0])
        if response.request.method == "PUT" and url.endswith(f"/api/contents/{path}"):
            saves.append(response)

    page.on("response", on_response)
    try:
        page.locator(".jp-Notebook .jp-InputPrompt").first.click()
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + timeout
        while not saves:
            dialogs = lab_dialogs(page)
            if any(FILE_CHANGED in text for text in dialogs):
                seen.extend(dialogs)
                page.locator(".jp-Dialog-button", has_text=re.compile("^Overwrite$")).click()
            if time.monotonic() > deadline:
                raise AssertionError(f"no save within {timeout}s; dialogs: {dialogs}")
            page.wait_for_timeout(100)
    finally:
        page.remove_listener("response", on_response)
    assert saves[0].ok, f"the save answered {saves[0].status}"
    return seen


def test_lab_tab_with_a_gap_saves_every_output_once(tmp_path: Path) -> None:
    """The connection dies with messages in flight; the tab's Ctrl+S must not save the gap."""
    lines = printed(40)
    with jupyter_server_process(tmp_path, save_interval=1) as server:
        name = "gap.ipynb"
        nb_path = server.root_dir / name
        make_notebook(
            nb_path,
            [(CELL_ID, printer_source(40, "random.uniform(0.1, 0.2)"))],
            kernelspec=PYTHON3_KERNELSPEC,
        )
        with chromium() as session, report_failure(server, session):
            page = session.page
            page.add_init_script(RECORD_WEBSOCKETS)
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            lab_run_all_cells(page)
            lab_wait_output(page, "line 3")

            # A real network drop: offline first, so that Chromium holds back what the
            # server sends on; closing the socket then loses those messages in flight.
            session.context.set_offline(True)
            page.wait_for_timeout(2000)
            closed = page.evaluate(CLOSE_KERNEL_SOCKETS)
            assert len(closed) == 1, f"kernel websockets closed: {closed}"
            server.wait_for_log("Starting buffering")

            # No client is attached: the extension writes the rest of the run.
            wait_until(
                lambda: is_complete(disk_cell(nb_path), lines), 30, "all outputs on disk", 0.25
            )
            assert kernel_execution_state(server) == "idle"
            offline_dialogs = lab_dialogs(page)

            # Back online, JupyterLab reconnects (its retry delays are random and double
            # each time: 0.5-26 s measured here) and the server replays what it buffered
            # since the close: the tab then shows the run with a hole in it.
            # Without a reconnect the tab just lacks the end; it is stale either way.
            session.context.set_offline(False)
            online = time.monotonic()
            try:
                wait_until(
                    lambda: "DONE" in stream_text(tab_cell(page, name)), 45, "the replay", 0.5
                )
                print(f"reconnected and replayed {time.monotonic() - online:.1f}s after online")
            except AssertionError:
                print(f"no reconnect within 45 s: {lab_kernel_state(page, name)}")
            shown = text_lines(tab_cell(page, name))
            assert shown != lines, "the tab lost nothing; no gap to test the guard against"
            assert len(set(shown)) == len(shown), f"the tab shows duplicates: {shown}"
            assert set(shown) < set(lines), shown
            print(f"the tab shows {len(shown)} of {len(lines)} lines: {shown}")
            print(f"dialogs while offline: {offline_dialogs}")

            seen = lab_save(page, name)
            print(f"dialogs of the save: {seen}")
            cell = disk_cell(nb_path)
            assert is_complete(cell, lines), f"after the tab's save: {describe(cell)}"
            assert GUARD_LOG.format(name=name, cell=CELL_ID) in server.log()

            # Nothing later undoes it (the tab stays attached; nothing is left to write).
            page.wait_for_timeout(2500)
            cell = disk_cell(nb_path)
            assert is_complete(cell, lines), f"after the tab's save: {describe(cell)}"


def test_lab_reopened_tab_saves_every_output_once(tmp_path: Path) -> None:
    """A page reopened mid-run never shows the rest of the run; its saves must not lose it.

    Without the extension's frontend, which would show it (``test_browser_live.py``):
    the guard is for pages without it (Notebook 7 with it disabled, other clients).
    """
    lines = printed(120)
    with jupyter_server_process(tmp_path, save_interval=1, lab_frontend=False) as server:
        name = "reopened.ipynb"
        nb_path = server.root_dir / name
        make_notebook(
            nb_path, [(CELL_ID, printer_source(120, "0.15"))], kernelspec=PYTHON3_KERNELSPEC
        )
        with chromium() as session, report_failure(server, session):
            page = session.page
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            lab_run_all_cells(page)
            lab_wait_output(page, "line 5")
            session.close()  # mid-run: the extension writes what follows

        with chromium() as session, report_failure(server, session):
            page = session.page
            # A workspace of its own, else JupyterLab restores the closed page's tabs.
            lab_open_notebook(page, server, name, workspace=f"reopen-{uuid.uuid4().hex[:12]}")
            wait_until(kernel_connected(page, name), 30, "the kernel connection", 0.2)
            page.wait_for_timeout(1000)
            shown = text_lines(tab_cell(page, name))
            on_disk = text_lines(disk_cell(nb_path))
            assert kernel_execution_state(server) == "busy", "the run ended before the save"
            assert "DONE" not in shown, shown
            assert shown == lines[: len(shown)], shown
            assert on_disk == lines[: len(on_disk)], on_disk
            prompt = page.locator(".jp-InputPrompt").first.inner_text()
            print(f"reopened: prompt {prompt!r}, {len(shown)} lines shown, {len(on_disk)} on disk")

            # Ctrl+S mid-run: the file gets what was captured so far, not the tab's copy.
            seen = lab_save(page, name)
            cell = disk_cell(nb_path)
            saved = text_lines(cell)
            print(f"first save: dialogs {seen}; {len(saved)} lines on disk after it")
            assert saved == lines[: len(saved)], f"after the first save: {describe(cell)}"
            assert len(saved) > max(len(shown), len(on_disk)), (
                f"the save lost captured outputs: tab had {len(shown)} lines, "
                f"disk {len(on_disk)}, after the save {describe(cell)}"
            )
            assert isinstance(cell["execution_count"], int), describe(cell)

            wait_until(lambda: kernel_execution_state(server) == "idle", 60, "the run's end", 0.5)
            shown = text_lines(tab_cell(page, name))
            assert "DONE" not in shown, "the reopened tab showed the end of the run"

            # Ctrl+S after the run: the file is complete at once, the tab still attached.
            seen = lab_save(page, name)
            print(f"second save: dialogs {seen}")
            cell = disk_cell(nb_path)
            assert is_complete(cell, lines), f"after the second save: {describe(cell)}"
            session.close()

        with report_failure(server):
            # jupyter_server logs this when a page's kernel websocket closes.
            wait_until(lambda: server.log().count("Starting buffering") == 2, 10, "the page to go")
            time.sleep(2.5)  # a write after the last client left comes within 1 s
            cell = disk_cell(nb_path)
            assert is_complete(cell, lines), f"in the end: {describe(cell)}"
            assert GUARD_LOG.format(name=name, cell=CELL_ID) in server.log()
