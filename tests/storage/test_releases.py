"""Runs on disk leave memory a step at a time, and only if they still may when their turn comes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Any

import pytest
from helpers import idle_msg, stream_msg

from jupyter_persist.model.store import CaptureStore, Execution
from jupyter_persist.storage.releases import ReleaseQueue


def written_run(store: CaptureStore, msg_id: str, cell_id: str, detached: bool) -> Execution:
    """A finished run of cell ``cell_id`` of nb.ipynb, its outputs on disk."""
    execution = store.begin("k", msg_id, cell_id=cell_id)
    store.place(execution, "nb.ipynb", cell_id)
    store.apply(stream_msg(msg_id, "x" * 400_000), detached=detached)
    store.apply(idle_msg(msg_id), detached=detached)
    execution.written_version = execution.version
    return execution


async def test_runs_saved_together_are_released_over_several_turns_of_the_loop() -> None:
    store = CaptureStore()
    runs = [written_run(store, f"m{i}", f"c{i}", detached=False) for i in range(3)]
    queue = ReleaseQueue(store, step_seconds=0.0)  # one run per step
    queue.bind(asyncio.get_running_loop())
    queue.saved_by_client(runs)
    assert len(store) == 3  # nothing in the save's own block
    released = []
    for _ in range(3):
        await asyncio.sleep(0)
        released.append(len(store.released_runs()))
    assert released == [1, 2, 3]
    assert len(store) == 0
    assert len(queue) == 0
    assert queue.meter.longest["release"] > 0


async def test_a_run_that_changed_or_was_replaced_while_waiting_stays() -> None:
    store = CaptureStore()
    late, replaced, kept = (written_run(store, f"m{i}", f"c{i}", detached=False) for i in range(3))
    queue = ReleaseQueue(store)
    queue.bind(asyncio.get_running_loop())
    queue.saved_by_client([late, replaced, kept])
    store.apply(stream_msg("m0", "late\n"), detached=False)  # a thread printed after the save
    rerun = store.begin("k", "again", cell_id="c1")
    store.place(rerun, "nb.ipynb", "c1")
    await asyncio.sleep(0)
    assert [r.msg_id for r in store.released_runs()] == ["m2"]
    assert store.latest("nb.ipynb", "c0") is late
    assert late.area.to_json()[0]["text"].endswith("late\n")
    assert store.latest("nb.ipynb", "c1") is rerun


async def test_the_servers_runs_of_a_written_notebook_are_released_as_the_servers() -> None:
    store = CaptureStore()
    owned = [written_run(store, f"m{i}", f"c{i}", detached=True) for i in range(2)]
    clients = written_run(store, "m2", "c2", detached=False)  # the client's save wins: not ours
    running = store.begin("k", "m3", cell_id="c3")
    store.place(running, "nb.ipynb", "c3")
    queue = ReleaseQueue(store)
    queue.bind(asyncio.get_running_loop())
    queue.written("nb.ipynb")
    await asyncio.sleep(0)
    assert sorted(r.msg_id for r in store.released_runs()) == [e.msg_id for e in owned]
    assert all(r.server_owned for r in store.released_runs())
    assert store.latest("nb.ipynb", "c2") is clients
    assert store.latest("nb.ipynb", "c3") is running


def test_before_the_server_loop_is_known_runs_are_released_at_once() -> None:
    store = CaptureStore()
    run = written_run(store, "m0", "c0", detached=False)
    ReleaseQueue(store).saved_by_client([run])
    assert store.released("m0") is not None


async def test_a_save_on_another_thread_leaves_the_releases_to_the_server_loop() -> None:
    """A ContentsManager saving on a thread (or loop) of its own: the store is the loop's."""
    store = CaptureStore()
    runs = [written_run(store, f"m{i}", f"c{i}", detached=False) for i in range(2)]
    queue = ReleaseQueue(store)
    queue.bind(asyncio.get_running_loop())
    thread = threading.Thread(target=queue.saved_by_client, args=(runs,))
    thread.start()
    thread.join()
    assert len(store) == 2  # nothing released on the saving thread
    for _ in range(3):
        await asyncio.sleep(0)
    assert sorted(r.msg_id for r in store.released_runs()) == ["m0", "m1"]


def test_a_run_whose_record_cannot_be_made_stays_whole() -> None:
    """Its digest fails (outputs no JSON can hold): the run keeps its outputs, unreleased."""
    store = CaptureStore()
    run = written_run(store, "m0", "c0", detached=False)
    broken = {**run.area.outputs[0], "metadata": {"x": object()}}
    run.area = dataclasses.replace(run.area, outputs=(broken,))
    ReleaseQueue(store).saved_by_client([run])
    assert store.released("m0") is None
    assert store.latest("nb.ipynb", "c0") is run
    assert store.get("m0") is run


async def test_a_run_that_cannot_be_released_is_logged_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = CaptureStore()
    runs = [written_run(store, f"m{i}", f"c{i}", detached=False) for i in range(3)]
    release = store.release

    def failing_release(execution: Execution) -> Any:
        if execution.msg_id == "m1":
            raise ValueError("broken")
        return release(execution)

    monkeypatch.setattr(store, "release", failing_release)
    queue = ReleaseQueue(store)
    queue.bind(asyncio.get_running_loop())
    with caplog.at_level(logging.WARNING):
        queue.saved_by_client(runs)
        await asyncio.sleep(0)
    assert sorted(r.msg_id for r in store.released_runs()) == ["m0", "m2"]
    assert store.latest("nb.ipynb", "c1") is runs[1]  # kept in memory, nothing lost
    assert "could not release cell c1 of nb.ipynb from memory: broken" in caplog.text
