"""Giving the server's freed memory back to the operating system.

Outputs arrive as growing strings (a stream's text is rebuilt with each message) and
notebooks are written as one large JSON text; once freed, glibc's allocator keeps most
of that memory in the process for reuse, holes between live objects included, so a
day of 400 kB outputs leaves the server's RSS up to twice what it really holds
(measured: 60 MB of outputs held, +77 MB of RSS; +61 MB after ``malloc_trim(0)``, which
took 3 ms). ``malloc_trim`` hands free pages back wherever they are in the heap; Dask's
workers do the same for the same reason. Elsewhere (musl, macOS) nothing is done.

``malloc_trim`` does not shrink the top of a thread's arena, though, and the
ContentsManager parses notebooks on worker threads: once a 60 MB notebook's parsed copy
was freed, up to 64 MB stayed resident at the top of that thread's arena (glibc's trim
threshold rises with its mmap threshold, to twice 32 MB). :func:`fix_malloc_thresholds`
pins both (measured, 150 runs of distinct 400 kB cells, detached: +68 MB of RSS, +9 MB
with the thresholds fixed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: A trim's work, on another thread: holds the allocator's lock, not the GIL.
TrimFunction = Callable[[], None]

#: Memory freed or faulted in since the last trim that makes another one worth it.
REGROWTH_BYTES = 8 * 1024 * 1024


def _libc() -> ctypes.CDLL | None:
    """The C library, on Linux (where glibc's allocator calls may be there), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_trim() -> TrimFunction | None:
    """glibc's ``malloc_trim(0)`` as a function, or None where the C library has none."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def trim_all() -> None:
        trim(0)

    return trim_all


#: ``mallopt`` parameters, from glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks this large or larger get a mapping of their own, unmapped when freed: glibc's
#: own ceiling for the threshold it adjusts (32 MB on 64-bit), where it would rise to anyway
#: once a large block was freed, now from the start.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)

#: Free memory at the top of any arena beyond this goes back to the system at once.
TOP_TRIM_BYTES = 8 * 1024 * 1024

#: Environment variables through which an admin sets glibc's thresholds themselves.
ADMIN_MALLOC_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def fix_malloc_thresholds(environ: Mapping[str, str] = os.environ) -> str:
    """Pin glibc's mmap and trim thresholds (see the module); returns what was done.

    Unless the environment sets glibc's thresholds (``MALLOC_*_`` variables or
    ``glibc.malloc`` tunables): those are the admin's choice and stay.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or getattr(libc, "malloc_trim", None) is None:
        return "glibc's own (not glibc)"
    chosen = [name for name in ADMIN_MALLOC_SETTINGS if name in environ]
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "threshold" in tunables or "top_pad" in tunables:
        chosen.append("GLIBC_TUNABLES")
    if chosen:
        return f"the environment's ({', '.join(chosen)})"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TOP_TRIM_BYTES)
    ):
        return "glibc's own (mallopt refused)"
    return f"mmap {MMAP_THRESHOLD_BYTES >> 20} MB, top trim {TOP_TRIM_BYTES >> 20} MB"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_free_bytes() -> Callable[[], int] | None:
    """glibc's count of free bytes in its heaps (``mallinfo2``, glibc 2.33 and later) as
    a function, or None. About 10 µs a call: it sums the allocator's free lists."""
    mallinfo2 = getattr(_libc(), "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.argtypes = []
    mallinfo2.restype = _MallInfo2

    def free_bytes() -> int:
        return int(mallinfo2().fordblks)

    return free_bytes


def resident_bytes() -> int:
    """This process's resident set size, in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class HeapTrimmer:
    """Trims the heap once work that freed memory is over, at a quiet flush tick.

    A trim is due at a tick with no new IOPub message (while messages flow the heap is
    reused as fast as it is freed, and a trim, which holds the allocator's lock so that
    every allocation of the event loop waits for it, would return pages only to fault
    them in again) when, since the last trim, ``activity`` changed (a value that changes
    whenever memory may have been freed: messages received, runs released or forgotten,
    notebooks written) or the heap's free bytes or the process's RSS grew by
    ``REGROWTH_BYTES``. The second rule catches memory freed, or faulted back in, after
    a trim without a sign in ``activity`` (measured: 44 MB left free, 33 MB of it
    resident, after the first rule's one trim, while the journal was rewritten every
    second). An idle server is never trimmed again.
    """

    trim: TrimFunction | None
    free_bytes: Callable[[], int] | None = None
    resident: Callable[[], int] = resident_bytes
    trims: int = 0
    returned_bytes: int = 0
    longest_seconds: float = 0.0
    #: glibc's thresholds, as :func:`fix_malloc_thresholds` left them.
    thresholds: str = ""
    _last_activity: object = None
    _messages: int | None = None
    _free_after_trim: int = 0
    _resident_after_trim: int = 0

    def due(self, activity: object, messages: int) -> bool:
        """Whether to trim at this tick (see the class)."""
        quiet = messages == self._messages
        self._messages = messages
        if self.trim is None or not quiet:
            return False
        if activity != self._last_activity:
            return True
        if self.resident() - self._resident_after_trim >= REGROWTH_BYTES:
            return True
        return (
            self.free_bytes is not None
            and self.free_bytes() - self._free_after_trim >= REGROWTH_BYTES
        )

    def run(self, activity: object) -> None:
        """Trim now (blocking: call it on a worker thread) and count what it returned."""
        if self.trim is None:
            return
        self._last_activity = activity
        before, started = self.resident(), time.perf_counter()
        self.trim()
        self.longest_seconds = max(self.longest_seconds, time.perf_counter() - started)
        self.trims += 1
        self._resident_after_trim = self.resident()
        # A trim returns free pages but keeps their chunks free: the count stays, and
        # only what is freed after it counts towards the next.
        self._free_after_trim = self.free_bytes() if self.free_bytes is not None else 0
        self.returned_bytes += max(0, before - self._resident_after_trim)

    def snapshot(self) -> dict[str, object]:
        """For the status API: whether trims happen, how many, what they returned, and
        the longest (the server's allocations wait for a trim)."""
        return {
            "trimming": self.trim is not None,
            "trims": self.trims,
            "returned_mb": round(self.returned_bytes / 1e6, 1),
            "longest_trim_ms": round(self.longest_seconds * 1000, 1),
            "thresholds": self.thresholds,
        }
