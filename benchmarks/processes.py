"""Finding the extension's IOPub reader process among a server's children.

Its work is the server's: the benchmarks count its CPU time and memory with the
server's. Imported by ``servers.py`` and by ``sampler.py`` (a script of its own).
"""

from __future__ import annotations

import psutil

#: The module the reader process runs (``jupyter_persist.kernels.reader.READER_COMMAND``).
READER_MODULE = "jupyter_persist.kernels.readloop"


def readers_of(server: psutil.Process) -> list[psutil.Process]:
    """The server's children that are IOPub reader processes (none for a plain server)."""
    found = []
    for child in server.children():
        try:
            if READER_MODULE in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended meanwhile
            continue
    return found
