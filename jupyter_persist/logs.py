"""The server log: what it costs to log at DEBUG, per message; warnings said once."""

from __future__ import annotations

import logging
from typing import Any


def debug_logged(log: Any) -> bool:
    """Whether a DEBUG record reaches any handler of ``log``.

    jupyter_server's logger is at DEBUG with its handler at the configured level, so a
    disabled ``log.debug`` call still builds a record; per message, that costs more than
    handling the message.
    """
    if not isinstance(log, logging.Logger) or not log.isEnabledFor(logging.DEBUG):
        return isinstance(log, logging.LoggerAdapter) and log.isEnabledFor(logging.DEBUG)
    logger: logging.Logger | None = log
    while logger is not None:
        if any(handler.level <= logging.DEBUG for handler in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


class OnceWarnings:
    """One WARNING per notebook and topic until that topic is fine again, not one per try.

    A notebook that cannot be written is tried at every save interval; its reason is
    logged when it first appears or changes, and forgotten by :meth:`clear` once a try
    succeeds, so the next failure is logged again.
    """

    def __init__(self, log: Any) -> None:
        self.log = log
        #: Per notebook and topic, the last warning logged.
        self._warned: dict[tuple[str, str], str] = {}

    def warn(self, path: str, topic: str, message: str) -> None:
        """Log ``message`` unless it is what was last logged for this notebook and topic."""
        if self._warned.get((path, topic)) != message:
            self._warned[(path, topic)] = message
            self.log.warning("%s", message)

    def forget(self, path: str) -> None:
        """Nothing of the notebook is held any more: forget its warnings."""
        for key in [key for key in self._warned if key[0] == path]:
            del self._warned[key]

    def clear(self, path: str, topic: str) -> None:
        """The topic is fine again for this notebook: its next warning is logged."""
        self._warned.pop((path, topic), None)

    def missing_cells(self, path: str, topic: str, missing: set[str], where: str) -> None:
        """Warn about cells whose outputs cannot be placed, or end an earlier warning."""
        if not missing:
            self.clear(path, topic)
            return
        self.warn(
            path,
            topic,
            f"jupyter_persist: {len(missing)} cell(s) of {path} {where} "
            f"({', '.join(sorted(missing))}); their outputs are kept in memory",
        )
