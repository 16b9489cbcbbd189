"""Structured logging for every logiwatch process: one JSON object per line.

``configure_logging(level, json=True)`` installs, on the root logger, a single
stream handler with :class:`JsonFormatter` (``ts``, ``level``, ``logger``,
``msg`` and any context passed with ``extra=``, such as ``waybill_id``,
``alert_id``, ``incident_id`` or ``partition``) and a :class:`RedactingFilter`
that masks anything that looks like a secret before it is formatted: the
values you register (the API token, webhook secrets), Standard-Webhooks
``whsec_`` keys, bearer tokens, ``token=``/``secret=``/``password=`` pairs and
passwords inside URLs. The filter sits on the handler, not a logger, so it sees
records from every library too. ``json=False`` keeps the same filter with a
human-readable line for terminals.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

MASK = "***"

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

#: Context fields printed first (in this order) when present; other extras follow sorted.
CONTEXT_FIELDS = ("waybill_id", "parcel", "alert_id", "incident_id", "event_id", "topic", "partition", "offset")

# Shapes of secrets that can appear in messages we do not control (exception
# strings from HTTP clients, URLs, headers echoed back by a receiver).
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"whsec_[A-Za-z0-9+/=_\-]+"), "whsec_" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 " + MASK),
    (
        re.compile(
            r"""(?i)\b((?:api[_-]?)?token|secret|password|passwd|api[_-]?key|authorization)(["']?\s*[=:]\s*)(["']?)[^\s"',;&]+"""
        ),
        r"\1\2\3" + MASK,
    ),
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + MASK + "@"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every registered secret and every secret-looking token masked."""

    # Longest first so a secret that contains another is masked whole.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, its ``extra`` strings and its traceback.

    Never drops a record: it rewrites it in place (message rendered with its
    args, so a secret passed as ``%s`` argument is masked too).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Very short values would mask ordinary words; real secrets are longer.
        self.secrets: tuple[str, ...] = tuple(s for s in secrets if s and len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        if record.exc_info and not record.exc_text:
            # Formatters reuse a cached exc_text, so rendering it here redacts every output.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def _iso_utc(created: float) -> str:
    return dt.datetime.fromtimestamp(created, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}
    ordered = {k: extra.pop(k) for k in CONTEXT_FIELDS if k in extra}
    ordered.update(sorted(extra.items()))
    return ordered


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, context, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # default=str: a context value we cannot serialise must not lose the line.
        return jsonlib.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The same information as :class:`JsonFormatter`, as one readable line."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{_iso_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if context:
            line = f"{line} [{context}]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one redacting handler; return it.

    ``secrets`` are exact values to mask wherever they appear (pass the API
    token and every webhook secret); secret-looking shapes are masked anyway.
    Calling it again reconfigures (handlers are replaced, never stacked).
    """

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
