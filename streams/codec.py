"""The checkpoint codec: how :class:`~logiwatch.streams.state.SnapshotStore` stores a value.

A stored value is either the engine's bytes as they are (every checkpoint
written before this codec, and any value compression would not shrink) or
``MARKER + dictionary id + raw deflate stream``. ``MARKER`` is 0xC1, the one
byte msgpack never uses, so no msgpack value (parcel states, join entries,
registrations, models, baseline fields all are) can be mistaken for a
compressed one, and old checkpoints restore unchanged.

Parcel blobs are a few hundred bytes each and share little within a blob,
so a preset dictionary (``codec_dicts``) carries most of the gain; the
window is 4 KiB (``WBITS``), the size of the dictionaries, which keeps the
per-blob set-up cheap. Decoding checks the stream ended exactly: a
truncated or corrupt value raises :class:`~logiwatch.errors.StateError`.
"""

from __future__ import annotations

import zlib

from logiwatch.errors import StateError
from logiwatch.streams.codec_dicts import BASELINES_V1, PARCELS_V1

MARKER = 0xC1
WBITS = 12
LEVEL = 6
MEM_LEVEL = 2
#: dictionary id -> preset dictionary (0: none). Ids are stored: never renumber or change one.
DICTIONARIES: dict[int, bytes] = {0: b"", 1: PARCELS_V1, 2: BASELINES_V1}
PARCELS, BASELINES, PLAIN = 1, 2, 0


class Compressor:
    """Compresses values with one dictionary; a primed compressor is copied per value."""

    def __init__(self, dict_id: int) -> None:
        self.dict_id = dict_id
        zdict = DICTIONARIES[dict_id]
        args = (LEVEL, zlib.DEFLATED, -WBITS, MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY)
        self._primed = zlib.compressobj(*args, zdict) if zdict else zlib.compressobj(*args)
        self._head = bytes((MARKER, dict_id))

    def encode(self, value: bytes) -> bytes:
        """The stored form of ``value``: compressed, or ``value`` itself when that is no shorter."""

        c = self._primed.copy()
        out = self._head + c.compress(value) + c.flush()
        return out if len(out) < len(value) else value


_COMPRESSORS = {i: Compressor(i) for i in DICTIONARIES}


def encode(value: bytes, dict_id: int = PLAIN) -> bytes:
    return _COMPRESSORS[dict_id].encode(value)


def decode(stored: bytes, what: str) -> bytes:
    """The engine's bytes back from a stored value (``what`` names it in the error)."""

    if not stored or stored[0] != MARKER:
        return stored
    if len(stored) < 2 or stored[1] not in DICTIONARIES:
        raise StateError(f"{what}: compressed with an unknown dictionary; this version cannot read it")
    zdict = DICTIONARIES[stored[1]]
    d = zlib.decompressobj(-WBITS, zdict) if zdict else zlib.decompressobj(-WBITS)
    try:
        out = d.decompress(stored[2:]) + d.flush()
    except zlib.error as exc:
        raise StateError(f"{what}: compressed value is corrupt ({exc})") from None
    if not d.eof or d.unused_data:
        raise StateError(f"{what}: compressed value is corrupt (truncated or trailing bytes)")
    return out
