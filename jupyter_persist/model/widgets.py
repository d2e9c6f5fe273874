"""Widget state as the kernel publishes it: what a notebook needs to draw its widget views.

ipywidgets keeps a widget's state in its comm: ``comm_open`` (target ``jupyter.widget``)
carries the whole state, ``comm_msg`` with ``method`` ``update`` (or ``echo_update``, the
kernel echoing a change a frontend made) carries changed keys, ``comm_close`` ends the
model. Binary values travel as message buffers, each named by a path into the state.

A notebook's outputs hold only views (``application/vnd.jupyter.widget-view+json``, a
model id); the models live in ``metadata.widgets`` in the format of ipywidgets' widget
manager and of nbclient's ``store_widget_state`` (``@jupyter-widgets/schema`` v2):
the models the views reach (children, layouts, styles), binary buffers base64-encoded
beside the state. Pure: no I/O, no server.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

WIDGET_TARGET = "jupyter.widget"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"
#: How ipywidgets serializes a reference to another model inside a state.
MODEL_REFERENCE = "IPY_MODEL_"
STATE_METHODS = frozenset({"update", "echo_update"})
#: Ids of closed models remembered per kernel (an entry the file still holds for one of
#: them is dropped at the next write): far more than a notebook's views show at once.
CLOSED_REMEMBERED = 10_000

BufferPath = tuple[Any, ...]


@dataclass
class WidgetModel:
    """One widget model: its state without binary values, and those values by path."""

    state: dict[str, Any] = field(default_factory=dict)
    buffers: dict[BufferPath, bytes] = field(default_factory=dict)
    #: The request whose code created the model (its ``comm_open``'s parent), if named.
    opened_by: str | None = None

    def apply(self, state: Mapping[str, Any], paths: Iterable[Any], buffers: list[bytes]) -> None:
        """Take changed keys and the binary values of this message, as the frontend does."""
        named = [(tuple(path), buffer) for path, buffer in zip(paths, buffers, strict=False)]
        changed = set(state) | {path[0] for path, _ in named if path}
        for path in [path for path in self.buffers if path and path[0] in changed]:
            del self.buffers[path]
        self.state.update(state)
        self.buffers.update(named)

    def entry(self, state: dict[str, Any]) -> dict[str, Any]:
        """The model's name, module and version with ``state``, as widget managers send it."""
        return {
            "model_name": self.state.get("_model_name"),
            "model_module": self.state.get("_model_module"),
            "model_module_version": self.state.get("_model_module_version"),
            "state": state,
        }

    def saved(self) -> dict[str, Any]:
        """The model as the widget manager saves it in ``metadata.widgets``."""
        entry = self.entry(copy.deepcopy(self.state))
        if self.buffers:
            entry["buffers"] = [
                {
                    "data": base64.b64encode(data).decode("ascii"),
                    "encoding": "base64",
                    "path": list(path),
                }
                for path, data in self.buffers.items()
            ]
        return entry


@dataclass
class KernelWidgets:
    """The widget models of one kernel, as its comm messages left them."""

    models: dict[str, WidgetModel] = field(default_factory=dict)
    #: Recently closed model ids (oldest first), bounded by ``CLOSED_REMEMBERED``.
    closed: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def apply(self, msg: dict[str, Any]) -> bool:
        """Apply one comm message; True when a widget model changed. Raises if malformed."""
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        comm_id = content["comm_id"]
        if not isinstance(comm_id, str):
            raise ValueError("comm_id is not a string")
        if msg_type == "comm_open":
            if content.get("target_name") != WIDGET_TARGET:
                return False
            data = content.get("data") or {}
            parent_id = (msg.get("parent_header") or {}).get("msg_id")
            opened = WidgetModel(opened_by=parent_id if isinstance(parent_id, str) else None)
            opened.apply(_state(data), data.get("buffer_paths") or (), msg.get("buffers") or [])
            self.models[comm_id] = opened
            self.closed.pop(comm_id, None)
            return True
        model = self.models.get(comm_id)
        if model is None:
            return False  # another comm (the widget manager's control comm, a custom one)
        if msg_type == "comm_close":
            del self.models[comm_id]
            self.closed[comm_id] = None
            while len(self.closed) > CLOSED_REMEMBERED:
                self.closed.popitem(last=False)
            return True
        if msg_type != "comm_msg":
            return False
        data = content.get("data") or {}
        if data.get("method") not in STATE_METHODS:
            return False  # custom messages carry no state
        model.apply(_state(data), data.get("buffer_paths") or (), msg.get("buffers") or [])
        return True


class WidgetStore:
    """The widget models of every kernel, by kernel id."""

    def __init__(self) -> None:
        self._kernels: dict[str, KernelWidgets] = {}
        #: Per notebook, a digest of each model's state as we last put it in the file.
        self._written: dict[str, dict[str, str]] = {}

    def apply(self, kernel_id: str, msg: dict[str, Any]) -> bool:
        """Apply one comm message of a kernel; True when a widget model changed."""
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            if msg["header"]["msg_type"] != "comm_open":
                return False
            kernel = self._kernels[kernel_id] = KernelWidgets()
        return kernel.apply(msg)

    def of(self, kernel_ids: Iterable[str]) -> list[KernelWidgets]:
        """The widgets of those kernels that have any."""
        return [self._kernels[k] for k in dict.fromkeys(kernel_ids) if k in self._kernels]

    def models_of(self, kernel_id: str) -> Mapping[str, WidgetModel]:
        """The kernel's open models by id."""
        kernel = self._kernels.get(kernel_id)
        return kernel.models if kernel is not None else {}

    def opener(self, kernel_id: str, model_id: str) -> str | None:
        """The msg_id of the request whose code created an open model, if known."""
        model = self.models_of(kernel_id).get(model_id)
        return model.opened_by if model is not None else None

    def model_ids(self, kernel_id: str) -> set[str]:
        """Ids of the kernel's open models."""
        kernel = self._kernels.get(kernel_id)
        return set(kernel.models) if kernel is not None else set()

    def drop(self, kernel_id: str, model_ids: set[str]) -> None:
        """Forget some of a kernel's models (those of its process before a restart)."""
        kernel = self._kernels.get(kernel_id)
        if kernel is not None:
            for model_id in model_ids:
                kernel.models.pop(model_id, None)

    def forget_kernel(self, kernel_id: str) -> None:
        """The kernel is gone: forget its models."""
        self._kernels.pop(kernel_id, None)

    def __len__(self) -> int:
        return sum(len(kernel.models) for kernel in self._kernels.values())

    def wrote(self, path: str, models: Mapping[str, Any], *, only_these: bool) -> None:
        """We put these models' state in the notebook (``only_these``: and no others)."""
        written = {model_id: widget_digest(entry) for model_id, entry in models.items()}
        if only_these:
            self._written[path] = written
        else:
            self._written.setdefault(path, {}).update(written)

    def paths(self) -> set[str]:
        """Notebooks we put widget state in."""
        return set(self._written)

    def forget_path(self, path: str) -> None:
        """No run of the notebook is held any more: a save's widget state is its own."""
        self._written.pop(path, None)

    def written(self, path: str) -> Mapping[str, str]:
        """Digests of the models' state we last put in the notebook, by model id."""
        return self._written.get(path, {})


def widget_digest(entry: Any) -> str:
    """A digest of a saved model's state, equal for equal JSON."""
    text = json.dumps(entry, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def manager_states(
    models: Mapping[str, WidgetModel],
) -> tuple[dict[str, Any], list[list[Any]], list[bytes]]:
    """Every model's state as ipywidgets answers ``request_states`` (no defaults dropped)."""
    states: dict[str, Any] = {}
    paths: list[list[Any]] = []
    buffers: list[bytes] = []
    for model_id, model in models.items():
        states[model_id] = model.entry(model.state)
        for path, data in model.buffers.items():
            paths.append([model_id, "state", *path])
            buffers.append(data)
    return states, paths, buffers


def _state(data: Mapping[str, Any]) -> dict[str, Any]:
    state = data.get("state") or {}
    if not isinstance(state, dict):
        raise ValueError("widget state is not an object")
    return state


def view_model_ids(outputs: Iterable[Any]) -> Iterator[str]:
    """Model ids of the widget views among a cell's outputs."""
    for output in outputs:
        data = output.get("data") if isinstance(output, Mapping) else None
        view = data.get(VIEW_MIME) if isinstance(data, Mapping) else None
        if isinstance(view, Mapping) and isinstance(view.get("model_id"), str):
            yield view["model_id"]


def cells_view_ids(cells: Iterable[Any]) -> list[str]:
    """Model ids of the widget views in a notebook's code cells, in order."""
    return [
        model_id
        for cell in cells
        if isinstance(cell, Mapping) and cell.get("cell_type") == "code"
        for model_id in view_model_ids(cell.get("outputs") or [])
    ]


def references(value: Any) -> Iterator[str]:
    """Model ids a state refers to, at any depth (children, layout, style, links)."""
    if isinstance(value, str):
        if value.startswith(MODEL_REFERENCE):
            yield value[len(MODEL_REFERENCE) :]
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from references(item)


@dataclass
class NotebookWidgets:
    """The widget state to save with a notebook, and the models left out of it."""

    state: dict[str, Any]
    #: Reached models over the size cap: (model id, bytes).
    too_big: list[tuple[str, int]] = field(default_factory=list)


def notebook_widget_state(
    roots: Iterable[str],
    kernels: Iterable[KernelWidgets],
    saved: Mapping[str, Any] | None,
    max_model_bytes: int,
) -> NotebookWidgets:
    """The models a notebook's views reach, each as its kernel has it now.

    A model the kernels do not have (a kernel restarted or gone since) keeps the entry
    ``saved`` with the notebook, if any, unless one of the kernels closed it; a closed
    model is left out, as are models no view reaches any more. A model whose saved
    form is over ``max_model_bytes`` is left out too (``too_big``).
    """
    live: dict[str, WidgetModel] = {}
    closed: set[str] = set()
    for kernel in kernels:
        live.update(kernel.models)
        closed.update(kernel.closed)
    saved_models = saved.get("state") if isinstance(saved, Mapping) else None
    if not isinstance(saved_models, Mapping):
        saved_models = {}
    result = NotebookWidgets(state={})
    pending = list(roots)
    seen: set[str] = set()
    while pending:
        model_id = pending.pop(0)
        if model_id in seen:
            continue
        seen.add(model_id)
        entry: Any
        if model_id in live:
            entry = live[model_id].saved()
        elif model_id in closed or not isinstance(saved_models.get(model_id), Mapping):
            continue
        else:
            entry = saved_models[model_id]
        size = len(json.dumps(entry, default=str))
        if size > max_model_bytes:
            result.too_big.append((model_id, size))
            continue
        result.state[model_id] = entry
        pending.extend(references(entry.get("state")))
    return result


def widget_state_document(models: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata.widgets[STATE_MIME]`` holding ``models``."""
    return {"version_major": 2, "version_minor": 0, "state": dict(models)}
