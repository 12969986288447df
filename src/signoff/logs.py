"""Process logging for ``signoff serve``: text or one JSON object per line, quiet libraries,
and the request, workflow and agent a line is about.

``log_context(request_id=…, agent=…)`` binds those for the code it wraps (a context
variable, so it follows a request into the worker thread that runs its use-case); every
line logged meanwhile carries them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from types import MappingProxyType

FORMATS = ("text", "json")
FIELDS = ("request_id", "workflow", "agent")

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "signoff_log_context", default=MappingProxyType({})
)

# Libraries that narrate their own workings at INFO: their warnings and errors still show.
QUIET = ("alembic", "apscheduler", "httpx", "httpcore", "slack_sdk", "slack_bolt", "multipart")

# Bolt warns, whenever SLACK_BOT_TOKEN is in the environment, that the token "will be
# ignored" because we give it a client and an authorize function: both are on purpose.
_BOLT_NOISE = ("will be unused", "will be ignored")


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Bind ``request_id``, ``workflow`` and/or ``agent`` to every line logged inside."""
    current = dict(_context.get())
    current.update({k: v for k, v in fields.items() if v})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the current context (for the rest of this request or task)."""
    current = dict(_context.get())
    current.update({k: v for k, v in fields.items() if v})
    _context.set(current)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _BoltTokenNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("slack_bolt") and any(n in record.getMessage() for n in _BOLT_NOISE))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the context
    fields that are known, and ``exc`` with the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None))
        return f"{text} [{extra}]" if extra else text


def configure(fmt: str = "text", level: int = logging.INFO, stream=None) -> None:
    """Send every log line to ``stream`` (stderr) in ``fmt``, replacing earlier handlers."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    handler.addFilter(_BoltTokenNoise())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's own loggers carry handlers of their own: route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
