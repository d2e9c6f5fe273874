"""Which clients are attached to each kernel, and which pages follow each notebook.

A client is one kernel websocket, known by its client session id (JupyterLab's
``kernel.clientId``: the ``session_id`` of its websocket URL and the ``header.session``
of every message it sends). With collaboration on, the extension writes the room for
executions whose own client is gone, whatever other tabs are attached; without it, any
attached client owns the notebook.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

#: Seconds a page that follows a notebook may take to connect to its kernel.
PAGE_LOAD_GRACE = 30.0


class AttachedClients:
    """Kernel websockets per kernel and client session; follow sockets per notebook."""

    def __init__(self) -> None:
        self._sessions: dict[str, Counter[str]] = {}
        #: Per notebook, when each open follow socket opened (monotonic seconds).
        self._followers: dict[str, list[float]] = {}
        #: Per kernel, when a client last attached (monotonic seconds).
        self._attached_at: dict[str, float] = {}
        #: Per notebook, until when a returning tab is about to save it (monotonic).
        self._saving_until: dict[str, float] = {}

    def attach(self, kernel_id: str, session: str) -> None:
        """A client websocket connected to a kernel."""
        self._sessions.setdefault(kernel_id, Counter())[session] += 1
        self._attached_at[kernel_id] = time.monotonic()

    def detach(self, kernel_id: str, session: str) -> int:
        """A client websocket left; returns how many are still attached to the kernel."""
        sessions = self._sessions.get(kernel_id)
        if sessions is None:
            return 0
        sessions[session] -= 1
        if sessions[session] <= 0:
            del sessions[session]
        if not sessions:
            del self._sessions[kernel_id]
        return sessions.total()

    def any(self, kernel_id: str) -> bool:
        """Whether any client websocket is attached to the kernel."""
        return kernel_id in self._sessions

    def has_session(self, kernel_id: str, session: str) -> bool:
        """Whether the client with this session id is attached to the kernel."""
        return self._sessions.get(kernel_id, Counter())[session] > 0

    def owner_attached(self, kernel_id: str, session: str | None) -> bool:
        """Whether the client session that started a run is attached (unknown: any)."""
        if session is None:
            return self.any(kernel_id)
        return self.has_session(kernel_id, session)

    def forget_kernel(self, kernel_id: str) -> None:
        """The kernel is gone, and its clients with it."""
        self._sessions.pop(kernel_id, None)
        self._attached_at.pop(kernel_id, None)

    def follow(self, path: str) -> float:
        """A page opened a follow socket for the notebook; returns its token for unfollow."""
        opened = time.monotonic()
        self._followers.setdefault(path, []).append(opened)
        return opened

    def unfollow(self, path: str, opened: float) -> None:
        """The follow socket opened at ``opened`` closed."""
        followers = self._followers.get(path, [])
        if opened in followers:
            followers.remove(opened)
        if not followers:
            self._followers.pop(path, None)

    def followed(self, path: str) -> bool:
        """Whether a page follows the notebook."""
        return path in self._followers

    def page_loading(self, path: str, kernel_ids: Iterable[str], now: float | None = None) -> bool:
        """Whether a page that follows the notebook may not have its kernel connection yet.

        True from the moment the page's follow socket opened (before the page loads the
        file) until a client attaches to one of the notebook's ``kernel_ids``, for at most
        ``PAGE_LOAD_GRACE`` seconds. After that, attached clients decide, as always. (A
        write between the page's load and its kernel connection would make JupyterLab
        report "File Changed" at the page's next save.)
        """
        now = time.monotonic() if now is None else now
        attached_at = [self._attached_at.get(k, float("-inf")) for k in kernel_ids]
        return any(
            now - opened < PAGE_LOAD_GRACE and all(at < opened for at in attached_at)
            for opened in self._followers.get(path, [])
        )

    def hold_for_save(self, path: str, seconds: float) -> None:
        """A returning tab is about to save the notebook: nothing else writes it meanwhile."""
        self._saving_until[path] = time.monotonic() + seconds

    def saved(self, path: str) -> None:
        """A save of the notebook went through: the tab's hold, if any, is over."""
        self._saving_until.pop(path, None)

    def forget_path(self, path: str) -> None:
        """Nothing of the notebook is held any more: drop a returning tab's expired hold."""
        self.tab_saving(path)  # drops the hold once it has expired

    def tab_saving(self, path: str) -> bool:
        """Whether a returning tab holds the notebook for its save (see ``hold_for_save``)."""
        until = self._saving_until.get(path)
        if until is not None and time.monotonic() >= until:
            del self._saving_until[path]
            until = None
        return until is not None
