"""The start-up objects of the server are left out of garbage collections.

A real ``jupyter server`` process: the freeze is once per process, at the start of the
server's event loop (which pytest-jupyter's in-process server never runs).
"""

from __future__ import annotations

from pathlib import Path

from browser import jupyter_server_process

FREEZE_LINE = "objects of the server's start left out of garbage collections"


def test_the_objects_of_the_servers_start_are_frozen(tmp_path: Path) -> None:
    with jupyter_server_process(tmp_path, app="server") as server:
        server.wait_for_log(FREEZE_LINE)
        [line] = [line for line in server.log().splitlines() if FREEZE_LINE in line]
        frozen = int(line.split("jupyter_persist: ")[1].split()[0])
        assert frozen > 10_000  # jupyter_server and its imports
        status = server.api("persist/status")
        assert status["config"]["freeze_startup_objects"] is True
        # Frozen objects still go when their last reference does; none is added later.
        assert 10_000 < status["event_loop"]["gc"]["frozen_objects"] <= frozen


def test_off_the_collections_go_through_the_whole_heap(tmp_path: Path) -> None:
    args = ["--PersistExtension.freeze_startup_objects=False"]
    with jupyter_server_process(tmp_path, app="server", extra_args=args) as server:
        status = server.api("persist/status")
        assert status["config"]["freeze_startup_objects"] is False
        assert status["event_loop"]["gc"]["frozen_objects"] == 0
        assert FREEZE_LINE not in server.log()
