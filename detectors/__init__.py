"""The pure detection core of logiwatch: domain model, codec and detectors.

No Kafka, Redis, HTTP, pydantic or Prometheus here (import-linter enforces
it): the same events and the same clock give the same alerts, in a backtest,
a replay or the live Kafka path.
"""

from logiwatch.detectors.model import (
    Alert,
    AlertStatus,
    AnomalyType,
    EventType,
    Label,
    NodeType,
    ScanEvent,
    Severity,
    Tick,
)

__all__ = ["Alert", "AlertStatus", "AnomalyType", "EventType", "Label", "NodeType", "ScanEvent", "Severity", "Tick"]
