"""What the commands that talk to Kafka share: a topic that must already exist.

Producing to or consuming from a misspelt topic would create it on brokers
that auto-create topics (and the worker creates the topics it writes), so a
command refuses a topic it reads or was told to write that is not there,
with one line naming the topic and where it came from.
"""

from __future__ import annotations

from logiwatch.errors import LogiwatchError


def require_topic(bootstrap: str, topic: str, source: str, client_id: str) -> None:
    """``LogiwatchError`` (one line) unless ``topic`` exists; ``source`` is the option or setting naming it."""

    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, bootstrap_timeout_ms=10_000)
    except Exception as exc:  # kafka-python's own errors (NoBrokersAvailable, ...)
        raise LogiwatchError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        exists = topic in set(admin.list_topics())
    except Exception as exc:  # a broker that went away between the two calls
        raise LogiwatchError(f"cannot list the topics of Kafka at {bootstrap}: {exc}") from None
    finally:
        admin.close()
    if not exists:
        raise LogiwatchError(
            f"topic {topic!r} does not exist on {bootstrap}: check {source}, or create it (logiwatch stack up)"
        )
