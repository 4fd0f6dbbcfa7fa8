"""Logging as scanpy does it: one ``scgf`` logger, a verbosity setting, timed info lines.

Messages go to ``sys.stderr`` as it is at the time of writing (so notebooks and pytest's
capture see them) and never to the root logger, which belongs to the user's application.

>>> start = info("computing embeddings")
>>> info("    finished", time=start)          # "    finished (0:00:12)"
"""

from __future__ import annotations

import logging
import sys
import warnings
from datetime import datetime, timedelta
from pathlib import Path

LOGGER_NAME = "scgf"

# scanpy's scale: 0 errors, 1 warnings, 2 info, 3 hints, 4 debug.
VERBOSITY_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "hint": 15,
    "debug": logging.DEBUG,
}
_NUMERIC = list(VERBOSITY_LEVELS)
logging.addLevelName(VERBOSITY_LEVELS["hint"], "HINT")


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to the current ``sys.stderr``, whatever it is now."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # the root logger is the application's, not ours
    return logger


logger = _logger()


def verbosity_level(value: int | str) -> int:
    """The ``logging`` level of a verbosity: 0–4 or ``"error"``…``"debug"``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"verbosity={value!r}; use 0–4 or one of {_NUMERIC}.")
    if isinstance(value, int):
        if not 0 <= value < len(_NUMERIC):
            raise ValueError(f"verbosity={value}; use 0–4 or one of {_NUMERIC}.")
        value = _NUMERIC[value]
    if value not in VERBOSITY_LEVELS:
        raise ValueError(f"verbosity={value!r}; use 0–4 or one of {_NUMERIC}.")
    return VERBOSITY_LEVELS[value]


def _elapsed(start: datetime) -> str:
    seconds = round((datetime.now() - start).total_seconds())
    return str(timedelta(seconds=seconds))


def _log(level: int, message: str, time: datetime | None) -> datetime:
    now = datetime.now()
    if time is not None:
        message = f"{message} ({_elapsed(time)})"
    logger.log(level, message)
    return now


def info(message: str, *, time: datetime | None = None) -> datetime:
    """Log ``message`` at info level; with ``time``, append the time elapsed since it.

    Returns
    -------
    The current time, to pass as ``time`` to the matching "finished" line.
    """
    return _log(logging.INFO, message, time)


def hint(message: str, *, time: datetime | None = None) -> datetime:
    """Log ``message`` at hint level (between info and debug)."""
    return _log(VERBOSITY_LEVELS["hint"], message, time)


def debug(message: str, *, time: datetime | None = None) -> datetime:
    """Log ``message`` at debug level."""
    return _log(logging.DEBUG, message, time)


def warning(message: str) -> None:
    """Log ``message`` at warning level (for conditions a user need not act on at once;
    use :func:`warnings.warn` for those they should)."""
    logger.warning(message)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line that called into scgf, however deep
    inside scgf it is raised (``stacklevel`` counted past scgf's own frames)."""
    frame, level = sys._getframe(1), 2  # level 2: the caller of this function
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
