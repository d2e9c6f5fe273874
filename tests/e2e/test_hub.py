"""On a real JupyterHub: log in, run, close the browser or stop the server mid-run.

The extension is installed by pip only; the Hub runs the documented example config.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from browser import (
    EXTENSION_LOADED,
    PYTHON3_KERNELSPEC,
    SLOW_PRINTER_OUTPUT,
    BrowserSession,
    chromium,
    lab_outputs_text,
    lab_run_all_cells,
    lab_wait_kernel_idle,
    lab_wait_output,
    read_cells_retrying,
    report_failure,
    slow_printer,
    wait_complete_on_disk,
    wait_until,
)
from helpers import LabLikeClient, make_notebook, stream_text
from hub import USER, Hub, jupyterhub
from playwright.sync_api import Page

from jupyter_persist import __version__

pytestmark = [pytest.mark.browser, pytest.mark.hub]

CELL_ID = "printer"


def log_in(page: Page, hub: Hub) -> None:
    """Log in through the Hub's login form; wait until the user's JupyterLab is up."""
    page.goto(hub.url + "hub/login")
    page.locator("#username_input").fill(USER)
    page.locator("#password_input").fill("any password")  # the dummy authenticator
    page.locator("#login_submit").click()
    page.wait_for_url(re.compile(rf"/user/{USER}/lab"), timeout=120_000)


def open_notebook(session: BrowserSession, hub: Hub, name: str) -> Page:
    page = session.page
    log_in(page, hub)
    workspace = f"test-{uuid.uuid4().hex[:12]}"
    page.goto(hub.url + f"user/{USER}/lab/workspaces/{workspace}/tree/{name}")
    page.locator(".jp-Notebook").first.wait_for()
    lab_wait_kernel_idle(page, name)
    return page


def test_browser_closed_mid_run_under_the_hub(tmp_path: Path) -> None:
    with jupyterhub(tmp_path) as hub:
        name = "hub_closed.ipynb"
        nb_path = hub.home() / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)

        with chromium() as session, report_failure(hub, session):  # type: ignore[arg-type]
            page = open_notebook(session, hub, name)
            assert EXTENSION_LOADED in hub.log(), "the single-user server has no extension"
            # The frontend's follow websocket reaches the server through the Hub's proxy.
            page.locator('.jp-persist-Indicator[data-connected="true"]').wait_for()
            lab_run_all_cells(page)
            lab_wait_output(page, "line 5")
            shown = lab_outputs_text(page)
            assert "DONE" not in shown, "the cell finished before the browser closed"
            assert read_cells_retrying(nb_path)[CELL_ID]["outputs"] == []
            session.close()  # the laptop lid: every websocket goes away mid-run

        with report_failure(hub):  # type: ignore[arg-type]
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)
            assert f"jupyter_persist: wrote {name}" in hub.log()

        # Reopened later: the page shows what the file holds, with the cell's prompt.
        with chromium() as session, report_failure(hub, session):  # type: ignore[arg-type]
            page = open_notebook(session, hub, name)
            shown = lab_outputs_text(page)
            assert "line 0" in shown
            assert "DONE" in shown
            prompt = page.locator(".jp-InputArea-prompt").first.inner_text()
            assert prompt.strip() == "[1]:", prompt


def test_server_stopped_through_the_hub_mid_run_and_the_api_through_its_proxy(
    tmp_path: Path,
) -> None:
    with jupyterhub(tmp_path) as hub, report_failure(hub):  # type: ignore[arg-type]
        name = "hub_stopped.ipynb"
        nb_path = hub.home() / name
        source = slow_printer(100_000)
        make_notebook(nb_path, [(CELL_ID, source)], kernelspec=PYTHON3_KERNELSPEC)
        hub.start_server()
        token = hub.user_token()

        # The extension's REST API, through the Hub's proxy: with the user's token only.
        status, answer, _ = hub.request("GET", f"user/{USER}/api/persist/status", token)
        assert status == 200, answer
        assert answer["version"] == __version__
        status, answer, headers = hub.request("GET", f"user/{USER}/api/persist/status")
        assert status in (302, 401, 403), (status, answer)
        if status == 302:
            assert "/hub/" in headers.get("Location", ""), headers
        status, _, _ = hub.request("POST", f"user/{USER}/api/persist/flush", "not-a-token")
        assert status in (302, 401, 403)

        status, session, _ = hub.request(
            "POST",
            f"user/{USER}/api/sessions",
            token,
            {"path": name, "type": "notebook", "name": "", "kernel": {"name": "python3"}},
        )
        assert status == 201, session
        seen = asyncio.run(run_then_leave(hub, token, session["kernel"]["id"], source))

        def lines_on_disk() -> list[str]:
            return stream_text(read_cells_retrying(nb_path)[CELL_ID]).splitlines()

        wait_until(lambda: len(lines_on_disk()) > seen, 60, "a write while the cell runs", 0.25)
        hub.stop_server()  # while the cell is still printing

        on_disk = lines_on_disk()
        assert on_disk == [f"line {i}" for i in range(len(on_disk))], on_disk[-3:]
        assert len(on_disk) > seen
        log = hub.log()
        assert EXTENSION_LOADED in log
        stopped = log.rsplit(f"jupyter_persist: wrote {name}", 1)
        assert len(stopped) == 2, "no write of the notebook in the log"


async def run_then_leave(hub: Hub, token: str, kernel_id: str, source: str) -> int:
    """Run the cell as JupyterLab would, through the proxy; leave after some lines.

    Returns how many lines the client saw at least.
    """
    client = await LabLikeClient.connect_url(hub.url + f"user/{USER}/", token, kernel_id)
    try:
        await client.wait_ready()
        msg_id = await client.execute(source, cell_id=CELL_ID)
        await client.wait_for_output(msg_id, "line 20")
    finally:
        client.close()
    return 21
