"""Kernels on a real Jupyter Enterprise Gateway (3.3, from ``.ci/eg/venv``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway import KernelGateway, enterprise_gateway_command, kernel_gateway_process
from helpers import make_notebook, wait_for
from test_gateway import EXPECTED, TWELVE_LINES, complete, gateway_feed, run_and_leave


@pytest.fixture(scope="module")
def enterprise_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelGateway]:
    with kernel_gateway_process(
        tmp_path_factory.mktemp("eg"), command=enterprise_gateway_command
    ) as gateway:
        yield gateway


@pytest.fixture
def jp_server_config(enterprise_gateway: KernelGateway) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 0.5},
        **enterprise_gateway.server_config(),
    }


async def test_client_gone_mid_run_every_line_and_count_on_disk(
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    enterprise_gateway: KernelGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "eg.ipynb"
    make_notebook(nb_path, [("c", TWELVE_LINES)])
    _, kernel_id = await notebook_session(nb_path.name)
    with caplog.at_level(logging.WARNING):
        await run_and_leave(jp_ws_fetch, kernel_id, TWELVE_LINES, "c", wait_text="line 1")
        await wait_for(lambda: complete(nb_path, "c", EXPECTED), what="12 lines and the count")
    feed = gateway_feed(capture, kernel_id)
    assert feed.protocol == "v1.kernel.websocket.jupyter.org"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warned if "jupyter_persist" in m]
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, what="feed closed")
    assert kernel_id not in enterprise_gateway.kernel_ids()
