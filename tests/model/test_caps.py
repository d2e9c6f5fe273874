"""Size caps: a stream keeps head and tail with a marker; big rich outputs become markers."""

from __future__ import annotations

import re
from typing import Any

from jupyter_persist.model.caps import Limits, held_size, omission_marker, trim_stream
from jupyter_persist.model.reducer import OutputArea, apply_message, update_display

SMALL = Limits(stream_head_chars=1000, stream_tail_chars=4000, max_rich_output_bytes=1000)


def msg(msg_type: str, **content: Any) -> dict[str, Any]:
    return {"header": {"msg_type": msg_type}, "parent_header": {"msg_id": "m"}, "content": content}


def test_endless_stream_keeps_head_and_tail_and_says_how_much_is_missing() -> None:
    area = OutputArea()
    full = []
    for i in range(100_000):
        line = f"line {i}\n"
        full.append(line)
        area = apply_message(area, msg("stream", name="stdout", text=line), SMALL)
    full_text = "".join(full)
    text = area.outputs[0]["text"]
    assert len(area.outputs) == 1
    assert len(text) < 1000 + 4000 * 5 // 4 + 200
    assert text.startswith(full_text[:1000])
    assert text.endswith("line 99999\n")
    omitted = int(re.search(r"left out ([\d,]+) characters", text).group(1).replace(",", ""))
    head, _, tail = text.partition(omission_marker(omitted, SMALL))
    assert head == full_text[:1000]
    assert full_text.endswith(tail)
    assert len(head) + omitted + len(tail) == len(full_text)


def test_progress_bar_still_folds_after_trimming() -> None:
    area = OutputArea()
    for i in range(2000):
        area = apply_message(area, msg("stream", name="stdout", text=f"line {i}\n"), SMALL)
    for pct in range(0, 101, 10):
        area = apply_message(area, msg("stream", name="stdout", text=f"\r{pct:3d}%"), SMALL)
    area = apply_message(area, msg("stream", name="stdout", text="\ndone\n"), SMALL)
    assert area.outputs[0]["text"].endswith("line 1999\n100%\ndone\n")
    assert "left out" in area.outputs[0]["text"]


def test_trim_never_cuts_before_the_cursor() -> None:
    text = "x" * 10_000
    assert trim_stream(text, 0, 0, SMALL) == (text, 0, 0)


def test_small_streams_are_untouched() -> None:
    area = apply_message(OutputArea(), msg("stream", name="stdout", text="hi\n"), SMALL)
    assert area.outputs[0]["text"] == "hi\n"
    assert area.stream_omitted == 0


def test_big_rich_output_is_replaced_by_a_marker() -> None:
    big = {"image/png": "A" * 5000, "text/plain": "<Figure>"}
    area = apply_message(OutputArea(), msg("display_data", data=big, metadata={"x": 1}), SMALL)
    data = area.outputs[0]["data"]
    assert list(data) == ["text/plain"]
    assert "image/png, text/plain output of 5,008 bytes" in data["text/plain"]
    assert "max_rich_output_bytes" in data["text/plain"]
    result = apply_message(
        OutputArea(), msg("execute_result", data=big, metadata={}, execution_count=3), SMALL
    )
    assert result.outputs[0]["execution_count"] == 3
    assert "left out" in result.outputs[0]["data"]["text/plain"]


def test_big_display_update_is_replaced_by_a_marker() -> None:
    area = apply_message(
        OutputArea(),
        msg(
            "display_data", data={"text/plain": "small"}, metadata={}, transient={"display_id": "d"}
        ),
        SMALL,
    )
    area = update_display(area, "d", {"data": {"text/html": "B" * 2000}, "metadata": {}}, SMALL)
    assert "text/html output of 2,000 bytes" in area.outputs[0]["data"]["text/plain"]


def test_held_size_counts_text_data_and_tracebacks() -> None:
    """What holding outputs costs, for the status (a byte per character)."""
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "abc"},
        {
            "output_type": "display_data",
            "data": {"text/plain": "xy", "image/png": "QUJD", "application/json": {"a": 1}},
            "metadata": {"isolated": True},
        },
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["l1", "l2"]},
    ]
    assert held_size(outputs) == 3 + 2 + 4 + len(str({"a": 1})) + 4
    assert held_size([]) == 0
