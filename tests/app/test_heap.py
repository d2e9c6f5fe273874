"""Freed memory goes back to the operating system (``PersistExtension.trim_memory``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SAVE_INTERVAL
from helpers import fetch_json, run_on_disk_and_leave, wait_for

from jupyter_persist.heap import (
    REGROWTH_BYTES,
    HeapTrimmer,
    fix_malloc_thresholds,
    heap_free_bytes,
    malloc_trim,
)

#: Holes as large outputs leave them: 250 kB blocks freed between small live objects,
#: below glibc's mmap threshold (which freeing the first large blocks raised).
FRAGMENT_THE_HEAP = """
import sys
from jupyter_persist.heap import malloc_trim, resident_bytes
warm = [bytearray(300_000) for _ in range(4)]
del warm
blocks, pins = [], []
for _ in range(200):
    blocks.append(bytearray(250_000))
    pins.append(bytearray(600))
del blocks
before = resident_bytes()
if sys.argv[1] == "trim":
    malloc_trim()()
print(before - resident_bytes())
"""


#: 100 kB blocks freed between small live ones: they stay in the heap, free.
COUNT_FREED_BYTES = """
from jupyter_persist.heap import heap_free_bytes
free_bytes = heap_free_bytes()
blocks, pins = [], []
for _ in range(100):
    blocks.append(bytearray(100_000))
    pins.append(bytearray(600))
before = free_bytes()
del blocks
print(free_bytes() - before)
"""


#: A notebook parsed on a worker thread (the ContentsManager's ``run_sync``), then freed:
#: 50 MB at the top of that thread's arena, after a 30 MB mapped block (a big notebook's
#: JSON text) raised glibc's thresholds.
FREE_A_THREADS_PARSED_NOTEBOOK = """
import sys, threading
from jupyter_persist.heap import fix_malloc_thresholds, malloc_trim, resident_bytes
if sys.argv[1] == "fix":
    print(fix_malloc_thresholds({}), file=sys.stderr)
json_text = bytearray(30_000_000)
del json_text
parsed = []
def parse():
    parsed.extend(bytearray(100_000) for _ in range(500))
thread = threading.Thread(target=parse)
thread.start()
thread.join()
before = resident_bytes()
parsed.clear()
malloc_trim()()
print(before - resident_bytes())
"""


def returned_bytes(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENT_THE_HEAP, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_a_trim_returns_the_holes_freed_outputs_leave() -> None:
    assert malloc_trim() is not None, "this Linux has glibc: trims must be available"
    assert returned_bytes("keep") < 5_000_000  # the allocator keeps 50 MB of holes...
    assert returned_bytes("trim") > 40_000_000  # ...which a trim gives back


def test_fixed_thresholds_return_the_top_of_a_threads_arena() -> None:
    def returned(mode: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-c", FREE_A_THREADS_PARSED_NOTEBOOK, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout), done.stderr.strip()

    kept, _ = returned("keep")
    assert kept < 10_000_000  # glibc's own thresholds: a trim leaves the arena's top
    given_back, what = returned("fix")
    assert given_back > 40_000_000
    assert what == "mmap 32 MB, top trim 8 MB"


def test_thresholds_an_admin_set_in_the_environment_stay() -> None:
    assert fix_malloc_thresholds({"MALLOC_TRIM_THRESHOLD_": "131072"}) == (
        "the environment's (MALLOC_TRIM_THRESHOLD_)"
    )
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}
    assert fix_malloc_thresholds(tunables) == "the environment's (GLIBC_TUNABLES)"
    assert fix_malloc_thresholds({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}).startswith(
        "mmap 32 MB"
    )


def test_a_trimmer_trims_once_output_stopped_and_only_after_something_changed() -> None:
    calls = []
    trimmer = HeapTrimmer(lambda: calls.append(1))
    assert not trimmer.due((1, 0), messages=1)  # the first tick: no previous to compare
    assert not trimmer.due((2, 0), messages=2)  # output still flows
    assert trimmer.due((2, 0), messages=2)  # a quiet tick after changes
    trimmer.run((2, 0))
    assert not trimmer.due((2, 0), messages=2)  # an idle server is not trimmed again
    assert trimmer.due((2, 1), messages=2)  # a run released, no message: due
    trimmer.run((2, 1))
    assert len(calls) == 2
    assert trimmer.snapshot()["trims"] == 2
    assert trimmer.snapshot()["trimming"] is True


def test_memory_freed_or_faulted_in_after_a_trim_gets_another_one() -> None:
    heap = {"free": 50_000_000, "resident": 200_000_000}
    trimmer = HeapTrimmer(
        lambda: None, free_bytes=lambda: heap["free"], resident=lambda: heap["resident"]
    )
    trimmer.due((1, 0), messages=1)
    assert trimmer.due((1, 0), messages=1)
    trimmer.run((1, 0))
    assert not trimmer.due((1, 0), messages=1)  # the trim's free chunks stay counted
    heap["free"] += REGROWTH_BYTES  # e.g. a dropped parsed notebook: nothing else changed
    assert trimmer.due((1, 0), messages=1)
    trimmer.run((1, 0))
    assert not trimmer.due((1, 0), messages=1)
    heap["resident"] += REGROWTH_BYTES  # freed pages reused, then freed again
    assert trimmer.due((1, 0), messages=1)
    trimmer.run((1, 0))
    heap["free"] += REGROWTH_BYTES
    assert not trimmer.due((1, 0), messages=2)  # but never while messages flow
    assert trimmer.snapshot()["trims"] == 3


def test_glibc_counts_what_it_holds_free() -> None:
    assert heap_free_bytes() is not None, "this Linux has glibc 2.33 or later: mallinfo2"
    counted = subprocess.run(
        [sys.executable, "-c", COUNT_FREED_BYTES], capture_output=True, text=True, check=True
    )
    assert int(counted.stdout) > 5_000_000  # 10 MB freed between live blocks


def test_without_malloc_trim_nothing_is_done() -> None:
    trimmer = HeapTrimmer(None)
    assert not trimmer.due((1, 0), messages=0)
    assert not trimmer.due((1, 0), messages=0)
    trimmer.run((1, 0))
    assert trimmer.snapshot() == {
        "trimming": False,
        "trims": 0,
        "returned_mb": 0.0,
        "longest_trim_ms": 0.0,
        "thresholds": "",
    }


async def run_big_cell_and_leave(
    jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    """A 400 kB output, the client gone once it started; returns once it is on disk."""
    code = "print('start', flush=True)\nprint('x' * 400_000)"
    await run_on_disk_and_leave(
        jp_ws_fetch, jp_root_dir, notebook_session, capture, "big.ipynb", code
    )


async def test_the_server_trims_after_output_arrived(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    await run_big_cell_and_leave(jp_ws_fetch, jp_root_dir, notebook_session, capture)

    async def trimmed() -> bool:
        status = await fetch_json(jp_fetch, "api", "persist", "status")
        return bool(status["memory"]["trims"] >= 1)

    await wait_for(trimmed, what="a trim after the write")
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    assert status["memory"]["trimming"] is True
    assert status["memory"]["thresholds"] == "mmap 32 MB, top trim 8 MB"
    assert status["config"]["trim_memory"] is True
    # The run's last writes, the parsed copy of the notebook dropped a few seconds
    # after them (see Flusher), and the trim after that.
    await wait_for(lambda: not capture.writer.kept_paths(), what="the copy dropped")
    await asyncio.sleep(4 * SAVE_INTERVAL)
    trims = capture.heap.trims
    await asyncio.sleep(4 * SAVE_INTERVAL)
    assert capture.heap.trims == trims  # nothing new: an idle server's heap is left alone


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            "PersistExtension": {"save_interval": 0.5, "trim_memory": False},
        }
    ],
)
async def test_trimming_can_be_turned_off(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    await run_big_cell_and_leave(jp_ws_fetch, jp_root_dir, notebook_session, capture)
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    assert status["config"]["trim_memory"] is False
    assert status["memory"]["trimming"] is False
    assert status["memory"]["trims"] == 0
