"""Dead letters: what the worker writes for a record it cannot use.

A record that fails ``decode_event`` (or a tick that fails ``decode_tick``,
or an event the engine raised on) is not dropped and does not stop the
consumer: it becomes one JSON record on the dead-letter topic carrying the
reason code, the human detail, where it came from (topic, partition,
offset) and the original key and value bytes (base64, so any bytes survive
JSON), keyed like the source record so a redrive keeps partitioning.
"""

from __future__ import annotations

import base64

import msgspec

#: Reason code for a record the engine raised on (a bug, never bad input).
PROCESSING_ERROR = "processing_error"


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead letter (``docs/events.md`` documents the fields)."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None  # base64 of the original key bytes
    value: str | None  # base64 of the original value bytes
    failed_at: int  # wall clock, epoch ms

    def original_value(self) -> bytes | None:
        return None if self.value is None else base64.b64decode(self.value)

    def original_key(self) -> bytes | None:
        return None if self.key is None else base64.b64decode(self.key)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)
_DETAIL_MAX = 500


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def make_dead_letter(
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    failed_at_ms: int,
) -> DeadLetter:
    # The detail comes from validators and can quote the payload; bound it so
    # an oversize record does not produce an oversize dead letter twice over.
    return DeadLetter(
        reason=reason,
        detail=detail[:_DETAIL_MAX],
        topic=topic,
        partition=partition,
        offset=offset,
        key=_b64(key),
        value=_b64(value),
        failed_at=failed_at_ms,
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return _encoder.encode(letter)


def decode_dead_letter(data: bytes) -> DeadLetter:
    return _decoder.decode(data)
