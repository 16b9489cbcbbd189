"""Re-export of the error tree (defined in the core so the core can raise it)."""

from logiwatch.detectors.errors import ConfigError, DecodeError, DeliveryError, LogiwatchError, StateError

__all__ = ["ConfigError", "DecodeError", "DeliveryError", "LogiwatchError", "StateError"]
