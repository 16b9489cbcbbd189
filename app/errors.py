"""Re-export of the error tree (defined in the core so the core can raise it)."""

from logiwatch.detectors.errors import ConfigError, DecodeError, LogiwatchError, StateError

__all__ = ["ConfigError", "DecodeError", "LogiwatchError", "StateError"]
