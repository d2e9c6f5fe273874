"""A widget progress bar as a line of text, the way tqdm draws its own text bar.

``tqdm.auto`` in a notebook with ipywidgets draws an HBox of three widgets: an HTML
text (description and percentage), a FloatProgress (value and max) and an HTML text
(count, times, rate and postfix); tqdm's text bar is the same parts with a bar of
block characters between ``|``. Other progress widgets (a lone IntProgress, a box
with a Label) get their description and value/max. Pure: model states in, text out.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from .widgets import MODEL_REFERENCE, WidgetModel

PROGRESS_MODELS = frozenset({"FloatProgressModel", "IntProgressModel"})
TEXT_MODELS = frozenset({"HTMLModel", "LabelModel", "HTMLMathModel"})
BOX_MODELS = frozenset({"HBoxModel", "BoxModel", "VBoxModel", "GridBoxModel"})
#: tqdm's bar: ten characters, in eighths.
BAR_WIDTH = 10
BLOCKS = " ▏▎▍▌▋▊▉█"
TAGS = re.compile(r"<[^>]*>")


def progress_line(root: str, models: Mapping[str, WidgetModel]) -> str | None:
    """The text of the progress bar whose view shows model ``root``; None if not a bar."""
    model = models.get(root)
    if model is None:
        return None
    name = model.state.get("_model_name")
    if name in PROGRESS_MODELS:
        return _lone_bar(model.state)
    if name not in BOX_MODELS:
        return None
    children = [models.get(_referenced(ref)) for ref in model.state.get("children") or []]
    states = [child.state for child in children if child is not None]
    bars = [i for i, state in enumerate(states) if state.get("_model_name") in PROGRESS_MODELS]
    if len(bars) != 1:
        return None
    bar = states[bars[0]]
    before = " ".join(_text(s) for s in states[: bars[0]] if _is_text(s)).rstrip()
    after = " ".join(_text(s) for s in states[bars[0] + 1 :] if _is_text(s)).rstrip()
    if not before and not after:
        return _lone_bar(bar)
    return f"{before}|{_blocks(bar)}|{after}"


def _lone_bar(state: Mapping[str, Any]) -> str:
    value, low, high = _number(state.get("value")), _number(state.get("min")), state.get("max")
    high_value = _number(high)
    span = high_value - low
    percent = 100.0 * (value - low) / span if span > 0 else 0.0
    description = str(state.get("description") or "").strip()
    prefix = f"{description} " if description else ""
    return f"{prefix}{percent:3.0f}%|{_blocks(state)}| {_format(value)}/{_format(high_value)}"


def _blocks(state: Mapping[str, Any]) -> str:
    value, low, high = (_number(state.get(key)) for key in ("value", "min", "max"))
    share = min(max((value - low) / (high - low), 0.0), 1.0) if high > low else 0.0
    eighths = round(share * BAR_WIDTH * 8)
    full, partial = divmod(eighths, 8)
    text = BLOCKS[-1] * full + (BLOCKS[partial] if partial else "")
    return text.ljust(BAR_WIDTH)


def _is_text(state: Mapping[str, Any]) -> bool:
    return state.get("_model_name") in TEXT_MODELS


def _text(state: Mapping[str, Any]) -> str:
    """What an HTML or Label widget shows, as plain text (tqdm pads with figure spaces)."""
    text = TAGS.sub("", str(state.get("value") or ""))
    return html.unescape(text).replace("\u2007", " ").replace("\xa0", " ")


def _referenced(ref: Any) -> str:
    text = str(ref)
    return text[len(MODEL_REFERENCE) :] if text.startswith(MODEL_REFERENCE) else text


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _format(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
