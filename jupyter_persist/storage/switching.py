"""A shorter GIL switch interval while the server's ContentsManager works for us.

jupyter_server serializes a notebook it saves in a worker thread (``nbformat.writes``,
which with ``indent=1`` runs Python's pure-Python JSON encoder: seconds for a 60 MB
notebook). That thread and the event loop share the GIL: whenever the loop gives it up
(every socket read or write of a request), it waits for the encoder to hand it back,
which the interpreter asks of a busy thread only every ``sys.getswitchinterval()``
seconds (5 ms by default). A request needing a dozen such handoffs waits tens of ms.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class SwitchInterval:
    """Lowers the interpreter's switch interval while at least one of our calls runs.

    The previous interval comes back when the last one ends, unless something else set
    another one meanwhile (that one stays). ``seconds`` 0 (or not below the interval
    found) leaves the interpreter alone. Used from the event loop only, by one instance
    (the writer's): two would each give back what the other set.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._depth = 0
        self._previous: float | None = None
        #: The interval as the interpreter keeps it (whole microseconds).
        self._ours = 0.0

    @contextmanager
    def shortened(self) -> Iterator[None]:
        if self._depth == 0:
            current = sys.getswitchinterval()
            if 0 < self.seconds < current:
                self._previous = current
                sys.setswitchinterval(self.seconds)
                self._ours = sys.getswitchinterval()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._previous is not None:
                if sys.getswitchinterval() == self._ours:
                    sys.setswitchinterval(self._previous)
                self._previous = None
