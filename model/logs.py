"""How log lines look: text for people, JSON objects for log collectors (``FER_LOG_FORMAT``).

Entry points install the formatter (:func:`configure_logging`); libraries only log.
"""

from __future__ import annotations

import logging
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

#: JSON keys of the record attributes, for collectors that expect the common names.
_JSON_NAMES = {"levelname": "level", "name": "logger"}


def log_formatter(log_format: LogFormat, request_id: bool = False) -> logging.Formatter:
    """The formatter of every log line.

    Args:
        log_format: ``text`` or ``json`` (one object per line: level, logger, message, any
            ``extra`` fields, the traceback as ``exc_info``, and ``time`` in ISO 8601, UTC).
        request_id: add the record's ``request_id`` (set by a filter of the server).
    """
    if log_format == "json":
        fields = ["levelname", "name", "message"] + (["request_id"] if request_id else [])
        return JsonFormatter(fields, rename_fields=_JSON_NAMES, timestamp="time")
    tag = " [%(request_id)s]" if request_id else ""
    return logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")


def configure_logging(level: int, log_format: LogFormat) -> None:
    """Log to stderr at ``level`` in ``log_format``, unless the root logger has handlers already.

    Like :func:`logging.basicConfig`, an embedding program's (or pytest's) handlers are kept.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
