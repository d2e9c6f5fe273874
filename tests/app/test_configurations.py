"""The extension under non-default server configurations, and its own configuration."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CountingConnection,
    make_notebook,
    read_cells,
    run_and_leave,
    stream_text,
    thread_nice_values,
    wait_for,
)
from traitlets import TraitError
from traitlets.config import Config

from jupyter_persist.app import PersistExtension
from jupyter_persist.kernels.websocket import CaptureConnectionMixin

SLOW = "import time\nprint('start', flush=True)\ntime.sleep(1.5)\nprint('end')"


async def run_slow_cell(jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any) -> Path:
    nb_path = jp_root_dir / "configured.ipynb"
    make_notebook(nb_path, [("c", SLOW)])
    _, kernel_id = await notebook_session(nb_path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
    await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == "start\nend\n", what="write")
    return nb_path


class TestConfiguredWebsocketClass:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_persist": True},
                "kernel_websocket_connection_class": "helpers.CountingConnection",
            },
            "PersistExtension": {"save_interval": 0.5},
        }

    async def test_composes_with_it(
        self,
        jp_serverapp: Any,
        jp_root_dir: Path,
        jp_ws_fetch: Any,
        notebook_session: Any,
        capture: Any,
    ) -> None:
        composed = jp_serverapp.web_app.settings["kernel_websocket_connection_class"]
        assert issubclass(composed, CountingConnection)
        assert issubclass(composed, CaptureConnectionMixin)
        CountingConnection.incoming = 0
        await run_slow_cell(jp_root_dir, jp_ws_fetch, notebook_session)
        assert CountingConnection.incoming >= 2  # the admin's class still sees every message


class TestOtherContentsManager:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_persist": True},
                "contents_manager_class": (
                    "jupyter_server.services.contents.filemanager.AsyncFileContentsManager"
                ),
            },
            "PersistExtension": {"save_interval": 0.5},
        }

    async def test_writes_through_it(
        self,
        jp_serverapp: Any,
        jp_root_dir: Path,
        jp_ws_fetch: Any,
        notebook_session: Any,
        capture: Any,
    ) -> None:
        assert type(jp_serverapp.contents_manager).__name__ == "AsyncFileContentsManager"
        await run_slow_cell(jp_root_dir, jp_ws_fetch, notebook_session)


class TestCulling:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            "MappingKernelManager": {"cull_idle_timeout": 2, "cull_interval": 1},
            "PersistExtension": {"save_interval": 0.5},
        }

    async def test_culled_kernel_is_released(self, jp_fetch: Any, capture: Any) -> None:
        response = await jp_fetch(
            "api", "kernels", method="POST", body=json.dumps({"name": "python3"})
        )
        kernel_id = json.loads(response.body)["id"]
        await wait_for(lambda: kernel_id in capture.listener.kernel_ids, what="kernel tracked")
        await wait_for(
            lambda: kernel_id not in capture.listener.kernel_ids, timeout=30, what="culled"
        )

    async def test_a_busy_kernel_with_no_client_is_not_culled(
        self,
        jp_fetch: Any,
        jp_ws_fetch: Any,
        jp_root_dir: Path,
        notebook_session: Any,
        capture: Any,
    ) -> None:
        """With cull_busy off (the default), a running cell is never culled.

        Even one silent for three times the idle timeout with no client attached (the
        output of a long computation comes at its end).
        """
        code = "import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('DONE')"
        nb_path = jp_root_dir / "long.ipynb"
        make_notebook(nb_path, [("c", code)])
        _, kernel_id = await notebook_session(nb_path.name)
        msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
        execution = capture.store.get(msg_id)
        await wait_for(lambda: not execution.running, timeout=60, what="the end of the run")
        assert kernel_id in capture.listener.kernel_ids
        response = await jp_fetch("api", "kernels", kernel_id)
        assert json.loads(response.body)["id"] == kernel_id
        await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == "start\nDONE\n", timeout=30)


async def test_malformed_iopub_messages_never_raise(jp_fetch: Any, capture: Any) -> None:
    execution = capture.store.begin("k", "m")
    bad_messages: list[Any] = [
        {},
        {"header": {"msg_type": "stream"}, "parent_header": {"msg_id": "m"}, "content": {}},
        {"header": {"msg_type": "display_data"}, "parent_header": {"msg_id": "m"}, "content": None},
        {"header": {"msg_type": "status"}, "parent_header": {"msg_id": "m"}, "content": {}},
        {
            "header": {"msg_type": "comm_msg"},
            "parent_header": {"msg_id": "m"},
            "content": {"data": 1},
        },
        {"header": None, "parent_header": None},
        "not a message",
    ]
    for message in bad_messages:
        capture.router.on_iopub("k", message)
    assert execution.area.outputs == ()


@pytest.mark.parametrize("value", [0, -1.5])
def test_save_interval_must_be_positive(value: float) -> None:
    with pytest.raises(TraitError, match=r"PersistExtension\.save_interval must be > 0"):
        PersistExtension(config=Config({"PersistExtension": {"save_interval": value}}))


@pytest.mark.parametrize("value", [-0.001, 5e-7])
def test_gil_switch_interval_is_0_or_at_least_a_microsecond(value: float) -> None:
    with pytest.raises(TraitError, match=r"gil_switch_interval must be 0 or >= 1e-6 s"):
        PersistExtension(config=Config({"PersistExtension": {"gil_switch_interval": value}}))


async def test_the_gil_switch_interval_reaches_the_writer(jp_fetch: Any, capture: Any) -> None:
    assert capture.writer.switching.seconds == 0.001
    status = json.loads((await jp_fetch("api", "persist", "status")).body)
    assert status["config"]["gil_switch_interval"] == 0.001


@pytest.mark.parametrize("value", [-1, 20])
def test_the_readers_nice_increment_is_0_to_19(value: int) -> None:
    with pytest.raises(TraitError, match=r"reader_nice must be 0 to 19"):
        PersistExtension(config=Config({"PersistExtension": {"reader_nice": value}}))


async def test_the_readers_nice_increment_reaches_the_reader(
    jp_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    """By default the reading thread of the reader process yields the CPU (10 lower)."""
    make_notebook(jp_root_dir / "nice.ipynb", [("c", "1")])
    _, kernel_id = await notebook_session("nice.ipynb")
    assert await capture.listener.wait_live(kernel_id, 30)  # the reader reads: it is set
    status = json.loads((await jp_fetch("api", "persist", "status")).body)
    assert status["config"]["reader_nice"] == 10
    pid = status["iopub_reader"]["pid"]
    server = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert thread_nice_values(pid)["main"] == [min(server + 10, 19)]


def test_every_trait_is_documented() -> None:
    own = PersistExtension.class_own_traits(config=True)
    assert own, "no configurable traits"
    for name, trait in own.items():
        assert len(trait.help) > 40, f"{name} has no real help"


class TestTextLogOff:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            "PersistExtension": {"save_interval": 0.5, "text_log": False},
        }

    async def test_no_text_log(
        self,
        jp_data_dir: Path,
        jp_root_dir: Path,
        jp_ws_fetch: Any,
        notebook_session: Any,
        capture: Any,
    ) -> None:
        assert capture.recorder.text_log is None
        await run_slow_cell(jp_root_dir, jp_ws_fetch, notebook_session)
        state = jp_data_dir / "jupyter_persist"
        assert (state / "journals").is_dir()
        assert not (state / "logs").exists()
