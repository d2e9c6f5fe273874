"""Pacing of writes: a slow notebook keeps to its share of the time; a round is spread."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    count_notebook_reads,
    finished_run,
    make_notebook,
    read_cells,
    run_and_leave,
    stream_text,
    wait_for,
)
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

from jupyter_persist.model.store import CaptureStore
from jupyter_persist.storage import flusher as flusher_module
from jupyter_persist.storage.flusher import Flusher, pause_after_write
from jupyter_persist.storage.journal import fold
from jupyter_persist.storage.writer import NotebookWriter


def test_pause_keeps_writing_to_its_share_of_the_time() -> None:
    assert pause_after_write(1.0, 0.05) == pytest.approx(19.0)
    assert pause_after_write(0.01, 0.5) == pytest.approx(0.01)
    assert pause_after_write(2.0, 1.0) == 0.0
    assert pause_after_write(0.0, 0.05) == 0.0


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    # A tiny share: after its first write the notebook is due again only minutes later.
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 0.2, "max_write_share": 0.0001},
    }


async def test_no_second_write_while_the_cell_runs_then_its_end_is_written_by_a_tick(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "paused.ipynb"
    code = (
        "import time\nprint('start', flush=True)\ntime.sleep(0.5)\n"
        "for i in range(40):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
        "print('DONE', flush=True)"
    )
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    path = nb_path.name
    # The file is on disk a moment before the flusher notes the write's pause.
    await wait_for(lambda: path in capture.flusher.not_before, timeout=30, what="first write")
    assert "start" in stream_text(read_cells(nb_path)["c"])
    paused_until = capture.flusher.not_before[path]
    assert paused_until > time.monotonic() + 1
    first_write = nb_path.read_bytes()
    execution = capture.store.get(msg_id)
    journal = capture.recorder.journal
    journaled_text = ""
    # Without the pause, the file would change at every 0.2 s tick of the 4 s run.
    # (Nothing between the check of `running` and the reads yields to the event loop.)
    while execution.running:
        assert nb_path.read_bytes() == first_write, "written again while the cell ran"
        # The journal does not wait for the pause: it keeps up with the run.
        capture.recorder.tick()
        cells = fold(journal.read(journal.file_for(path)))
        journaled_text = stream_text({"outputs": cells[(path, "c")].outputs})
        await asyncio.sleep(0.1)
    assert "30\n" in journaled_text, "the journal lagged behind the running cell"
    # Once the cell has ended, the pause no longer holds at the next tick: its final
    # outputs are written (the write asked for by the run's end itself is paused).
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["c"]).endswith("39\nDONE\n"),
        timeout=10,
        what="the finished cell's outputs written despite the pause",
    )
    assert time.monotonic() < paused_until, "the pause ran out: the test proves nothing"
    assert stream_text(read_cells(nb_path)["c"]).startswith("start\n0\n1\n")


def due_notebooks(tmp_path: Path, kernels: list[str]) -> tuple[CaptureStore, NotebookWriter]:
    """Notebooks ``n0.ipynb``... with an output each to write, run on ``kernels``."""
    store = CaptureStore()
    writer = NotebookWriter(contents_manager=AsyncFileContentsManager(root_dir=str(tmp_path)))
    for index, kernel_id in enumerate(kernels):
        make_notebook(tmp_path / f"n{index}.ipynb", [("a", "print(1)")])
        execution = store.begin(kernel_id, f"m{index}", cell_id="a")
        store.place(execution, f"n{index}.ipynb", "a")
        store.apply(
            {
                "header": {"msg_type": "stream"},
                "parent_header": {"msg_id": f"m{index}"},
                "content": {"name": "stdout", "text": f"{index}\n"},
            },
            detached=True,
        )
    return store, writer


def time_merges(writer: NotebookWriter) -> list[tuple[float, float]]:
    """Record each merge's start and end (monotonic)."""
    writes: list[tuple[float, float]] = []
    merge = writer.merge

    async def timed_merge(path: str, updates: Any, widgets: Any = None) -> Any:
        started = time.monotonic()
        result = await merge(path, updates, widgets)
        writes.append((started, time.monotonic()))
        return result

    writer.merge = timed_merge  # type: ignore[method-assign]
    return writes


async def test_the_writes_of_one_round_are_spread_out(tmp_path: Path) -> None:
    """Most of a save runs on the event loop: a round's writes are not made back to back."""
    store, writer = due_notebooks(tmp_path, ["busy", "k", "k", "k"])
    # The first notebook's kernel has a client attached: not written, and no wait after it.
    flusher = Flusher(store, writer, attached=lambda kernel_id: kernel_id == "busy")
    writes = time_merges(writer)
    started = time.monotonic()
    await flusher.flush_all(spread=1.2)
    elapsed = time.monotonic() - started
    assert len(writes) == 3
    # A rest of 1.2 / 4 s after each write.
    assert all(
        later_start - earlier_end >= 0.29 for (_, earlier_end), (later_start, _) in pairwise(writes)
    )
    assert elapsed < writes[-1][1] - started + 0.29  # no wait after the last write
    assert [stream_text(read_cells(tmp_path / f"n{i}.ipynb")["a"]) for i in range(4)] == [
        "",
        "1\n",
        "2\n",
        "3\n",
    ]


async def test_the_server_stopping_ends_a_rounds_wait_between_two_writes(tmp_path: Path) -> None:
    store, writer = due_notebooks(tmp_path, ["k", "k"])
    flusher = Flusher(store, writer, attached=lambda kernel_id: False)
    writes = time_merges(writer)
    # A 600 s save interval: 150 s between the two writes.
    round_of_writes = asyncio.ensure_future(flusher.flush_all(spread=300))
    await wait_for(lambda: writes, timeout=10, what="the first write")
    flusher.stop()
    stopped = time.monotonic()
    await asyncio.wait_for(round_of_writes, timeout=10)
    assert time.monotonic() - stopped < 2
    assert len(writes) == 2
    assert stream_text(read_cells(tmp_path / "n1.ipynb")["a"]) == "1\n"


async def test_a_run_ending_within_the_pause_is_written_by_the_next_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells run one after the other into a big notebook: not one save per run's end."""
    store = CaptureStore()
    contents_manager = AsyncFileContentsManager(root_dir=str(tmp_path))
    writer = NotebookWriter(contents_manager=contents_manager)
    flusher = Flusher(store, writer, attached=lambda kernel_id: False, max_write_share=0.0001)
    reads = count_notebook_reads(monkeypatch, contents_manager)
    # The tick finds the parsed copy past its keep time: it stays for the paused write.
    monkeypatch.setattr(flusher_module, "KEEP_PARSED_SECONDS", 0.0)
    nb_path = tmp_path / "nb.ipynb"
    make_notebook(nb_path, [("a", "print(1)"), ("b", "print(2)")])
    finished_run(store, "m1", "a", "one\n")
    assert await flusher.flush("nb.ipynb", run_ended=True) == "written"  # no pause yet
    finished_run(store, "m2", "b", "two\n")
    assert await flusher.flush("nb.ipynb", run_ended=True) == "paused"
    assert stream_text(read_cells(nb_path)["b"]) == ""
    await flusher.flush_all()  # the next tick: no cell runs, so the pause does not hold
    assert [stream_text(cell) for cell in read_cells(nb_path).values()] == ["one\n", "two\n"]
    assert reads == ["nb.ipynb"], "the paused write read the notebook again"


class TestRunsEndingBackToBack:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        # No tick during the test: only a run's end could write the notebook.
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            "PersistExtension": {"save_interval": 600, "max_write_share": 0.0001},
        }

    async def test_the_second_runs_end_waits_for_the_tick(
        self,
        jp_root_dir: Path,
        jp_ws_fetch: Any,
        notebook_session: Any,
        capture: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        outcomes: list[str] = []
        flush = capture.flusher.flush

        async def noting_flush(*args: Any, **kwargs: Any) -> str:
            outcome: str = await flush(*args, **kwargs)
            outcomes.append(outcome)
            return outcome

        monkeypatch.setattr(capture.flusher, "flush", noting_flush)
        nb_path = jp_root_dir / "back_to_back.ipynb"
        codes = {
            cell_id: f"import time\nprint('start', flush=True)\ntime.sleep(0.5)\nprint('{word}')"
            for cell_id, word in (("a", "one"), ("b", "two"))
        }
        make_notebook(nb_path, list(codes.items()))
        _, kernel_id = await notebook_session(nb_path.name)
        await run_and_leave(jp_ws_fetch, kernel_id, codes["a"], "a")
        await wait_for(
            lambda: stream_text(read_cells(nb_path)["a"]) == "start\none\n",
            timeout=30,
            what="the first run's end written at once",
        )
        assert "written" in outcomes
        seen = len(outcomes)
        await run_and_leave(jp_ws_fetch, kernel_id, codes["b"], "b")
        await wait_for(lambda: "paused" in outcomes[seen:], timeout=30, what="its end, paused")
        assert stream_text(read_cells(nb_path)["b"]) == "", "written at its end despite the pause"
        await capture.flusher.flush_all()  # what the next save_interval tick does
        assert stream_text(read_cells(nb_path)["b"]) == "start\ntwo\n"


def burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of the calling thread's CPU, as a JSON encoder does."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class SlowDiskContentsManager(AsyncFileContentsManager):  # type: ignore[misc]
    """Saves as usual, then waits in a worker thread: a slow network filesystem."""

    async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        saved = await super().save(model, path)
        await asyncio.to_thread(time.sleep, 0.6)
        return saved


class BusyContentsManager(AsyncFileContentsManager):  # type: ignore[misc]
    """Saves as usual, then spends CPU in a worker thread: a big notebook's encoding."""

    async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        saved = await super().save(model, path)
        await asyncio.to_thread(burn_cpu, 0.2)
        return saved


@pytest.mark.parametrize(
    ("contents_class", "least", "most"),
    [
        # 0.6 s of waiting, a little CPU: paced on the CPU, not on the 0.6 s.
        pytest.param(SlowDiskContentsManager, 0.0, 0.3, id="waiting"),
        # 0.2 s of a worker's CPU, and the save's own.
        pytest.param(BusyContentsManager, 0.2, 0.6, id="working"),
    ],
)
async def test_a_write_is_paced_on_the_cpu_it_took_not_its_wall_time(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    contents_class: type,
    least: float,
    most: float,
) -> None:
    paced_on: list[float] = []

    def noting_pause(seconds: float, max_share: float) -> float:
        paced_on.append(seconds)
        return pause_after_write(seconds, max_share)

    monkeypatch.setattr(flusher_module, "pause_after_write", noting_pause)
    store = CaptureStore()
    writer = NotebookWriter(contents_manager=contents_class(root_dir=str(tmp_path)))
    flusher = Flusher(store, writer, attached=lambda kernel_id: False, max_write_share=0.1)
    make_notebook(tmp_path / "nb.ipynb", [("a", "print(1)")])
    finished_run(store, "m1", "a", "one\n")
    started = time.monotonic()
    assert await flusher.flush("nb.ipynb") == "written"
    assert time.monotonic() - started >= 0.2
    assert paced_on, "no pause computed"
    assert least <= paced_on[0] < most, paced_on
    assert flusher.not_before["nb.ipynb"] > time.monotonic() + pause_after_write(least, 0.1) - 0.5
