"""The rounds of writes: one every save interval, fewer when a round outlasts it."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from typing import Any

from helpers import wait_for


async def test_a_round_that_outlasts_the_save_interval_backs_off_to_the_next_multiple(
    capture: Any, monkeypatch: Any
) -> None:
    interval = capture.save_interval
    starts: list[float] = []

    async def slow_round() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(1.2 * interval)

    monkeypatch.setattr(capture, "_tick", slow_round)
    capture.start()  # what the server's start does (pytest-jupyter's server does not start)
    await wait_for(lambda: len(starts) >= 4, timeout=20 * interval, what="four rounds")
    gaps = [later - earlier for earlier, later in pairwise(starts)]
    # Writes take less of a server short of time: not the next round at once.
    assert all(1.9 * interval <= gap < 2.6 * interval for gap in gaps), gaps


async def test_rounds_keep_to_the_save_interval(capture: Any, monkeypatch: Any) -> None:
    interval = capture.save_interval
    starts: list[float] = []

    async def quick_round() -> None:
        starts.append(time.monotonic())

    monkeypatch.setattr(capture, "_tick", quick_round)
    capture.start()
    await wait_for(lambda: len(starts) >= 4, timeout=20 * interval, what="four rounds")
    gaps = [later - earlier for earlier, later in pairwise(starts)]
    assert all(0.9 * interval <= gap < 1.5 * interval for gap in gaps), gaps


async def test_the_server_stopping_waits_for_the_round_under_way_then_ends_them(
    jp_serverapp: Any, capture: Any, monkeypatch: Any
) -> None:
    # Each round outlasts the save interval: the next would start at once.
    rounds: list[list[float]] = []

    async def long_round() -> None:
        rounds.append([time.monotonic()])
        await asyncio.sleep(1.0)
        rounds[-1].append(time.monotonic())

    monkeypatch.setattr(capture, "_tick", long_round)
    capture.start()
    await wait_for(lambda: rounds, timeout=20 * capture.save_interval, what="a round")
    await jp_serverapp.extension_manager.stop_all_extensions()
    stopped = time.monotonic()
    assert len(rounds[-1]) == 2, "the stop did not wait for the round under way"
    assert rounds[-1][1] <= stopped
    count = len(rounds)
    await asyncio.sleep(1.5)
    assert len(rounds) == count, "a round started after the server stopped"
