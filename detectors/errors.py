"""The error tree every layer shares.

It lives in the pure core because the core raises ``DecodeError`` when an
event fails validation, and the core may not import the glue. The glue
re-exports it as ``logiwatch.errors``. What a user sees of any of these is
one line: the problem and, where there is one, the fix.
"""

from __future__ import annotations


class LogiwatchError(Exception):
    """Base of every error logiwatch raises on purpose."""


class ConfigError(LogiwatchError):
    """A configuration file, variable or CLI argument is wrong."""


class DecodeError(LogiwatchError):
    """An input record failed to decode or validate.

    ``reason`` is a short stable code (``bad_json``, ``missing_field``, ...)
    used as a metric label and stored with the dead letter; ``detail`` is the
    human explanation; ``offset`` is the source offset when known.
    """

    def __init__(self, reason: str, detail: str, offset: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.offset = offset


class StateError(LogiwatchError):
    """Stored state is missing, corrupt or from an incompatible version."""


