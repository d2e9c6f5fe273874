"""The server log: what it costs to log at DEBUG, per message."""

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
