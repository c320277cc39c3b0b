"""One way to hand a warning to whatever logger a caller injected (rclpy logger method, ``logging.Logger``,
any ``callable(str)``, or nothing → the module's own logger), shared by the synchronizer and the drop counter."""

from __future__ import annotations

import logging
from typing import Any


def warn(sink: Any, fallback: logging.Logger, msg: str) -> None:
    """Emit ``msg`` as a warning on ``sink`` (or ``fallback`` when ``sink`` is None)."""
    if sink is None:
        fallback.warning(msg)
    elif isinstance(sink, logging.Logger):
        sink.warning(msg)
    else:
        sink(msg)
