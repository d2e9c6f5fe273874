"""Per-message DEBUG logging is only built when a handler would print it."""

from __future__ import annotations

import logging

from jupyter_persist.capture import debug_logged


def test_debug_logged_follows_the_handlers() -> None:
    logger = logging.getLogger("test-debug-logged")
    logger.propagate = False
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        # jupyter_server's set-up: the logger at DEBUG, its handler at INFO.
        logger.setLevel(logging.DEBUG)
        handler.setLevel(logging.INFO)
        assert not debug_logged(logger)
        handler.setLevel(logging.DEBUG)
        assert debug_logged(logger)
        logger.setLevel(logging.INFO)
        assert not debug_logged(logger)
    finally:
        logger.removeHandler(handler)
