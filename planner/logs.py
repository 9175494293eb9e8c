"""Logging set-up that never prints patient names or IDs.

Readers register the identifiers they see (:func:`register_identifier`); a filter on the
project's log handler replaces them with ``[redacted]`` in every message, so even a
message that formats a dataset or a path containing a name cannot leak it.
"""

from __future__ import annotations

import logging
import re
import threading

_IDENTIFIERS: set[str] = set()
_LOCK = threading.Lock()
REDACTED = "[redacted]"
LOGGER_NAME = "plexplan"


def register_identifier(value: object) -> None:
    """Remember a patient identifier (name, ID, birth date) so logs redact it."""
    text = str(value or "").strip()
    if len(text) >= 3:
        with _LOCK:
            _IDENTIFIERS.add(text)
            if "^" in text:
                _IDENTIFIERS.update(part for part in text.split("^") if len(part) >= 3)


def redact(text: str) -> str:
    """``text`` with every registered identifier replaced, as whole words only (a name part
    such as "Pre" must not turn "preset" into "[redacted]set")."""
    with _LOCK:
        known = sorted(_IDENTIFIERS, key=len, reverse=True)
    if not known:
        return text
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in known) + r")(?!\w)")
    return pattern.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def configure(verbose: bool = False) -> None:
    """Attach one redacting stderr handler to the project's logger (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(f, RedactingFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        logger.addHandler(handler)
    logger.propagate = False
