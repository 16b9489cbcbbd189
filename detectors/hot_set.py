"""The engine's hot set: the parcels of the last calls, kept decoded between calls.

``Engine`` holds its in-flight parcels in two maps: ``cold`` (waybill ->
msgpack blob, the bytes a checkpoint writes, or None while the parcel is hot:
its key stays, so the big dict does not churn) and ``hot`` (waybill -> decoded
``ParcelState``, an ``OrderedDict`` least recently touched first). A call
moves each cold parcel it touches into ``hot``; at its end the engine evicts
the oldest hot parcels beyond ``EngineConfig.hot_parcels`` (``evict``), and a
checkpoint encodes the changed hot ones without making them cold
(``upserts``). A hot parcel lives decoded only, never beside its blob.

The helpers here are plain functions over the two maps, so the engine's hot
path keeps its local look-ups.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import msgspec

from logiwatch.detectors.state import ParcelState

_encoder = msgspec.msgpack.Encoder()


def as_decoded(st: ParcelState) -> None:
    """Give a hot parcel's fields the types a msgpack round trip gives (an int in a float field is a float).

    A parcel decoded at each call sees floats where the call before stored ints
    (``note`` values, ``amount``, ``geo``'s coordinates); a hot one must too,
    before the next call reads or changes it, so that its alerts and its next
    blob are byte for byte those of the round trip. (Ints written by the
    current call stay ints until the next call, as they did.)
    """

    note = st.note
    for key, value in note.items():
        if type(value) is int:
            note[key] = float(value)  # same key: the dict's size does not change while iterated
    if type(st.amount) is int:
        st.amount = float(st.amount)
    geo = st.geo
    if geo is not None and (type(geo[1]) is int or type(geo[2]) is int):
        st.geo = (geo[0], float(geo[1]), float(geo[2]))


def evict(hot: OrderedDict[str, ParcelState], cold: dict[str, bytes | None], limit: int) -> None:
    """Encode the least recently touched hot parcels into ``cold`` until at most ``limit`` are hot."""

    if len(hot) <= limit:
        return
    encode = _encoder.encode
    pop = hot.popitem
    for _ in range(len(hot) - limit):
        wb, st = pop(last=False)
        cold[wb] = encode(st)


def upserts(
    hot: OrderedDict[str, ParcelState], cold: dict[str, bytes | None], waybills: Iterable[str]
) -> dict[str, bytes]:
    """``waybill -> blob`` of those of ``waybills`` in flight: a hot one encoded (and kept hot), a cold one as is."""

    encode = _encoder.encode
    out: dict[str, bytes] = {}
    for wb in waybills:
        st = hot.get(wb)
        if st is not None:
            out[wb] = encode(st)
        else:
            blob = cold.get(wb)
            if blob is not None:
                out[wb] = blob
    return out


def blobs(hot: OrderedDict[str, ParcelState], cold: dict[str, bytes | None]) -> dict[str, bytes]:
    """Every parcel's blob in a new dict (the hot ones encoded for it; they stay hot)."""

    encode = _encoder.encode
    return {wb: encode(hot[wb]) if blob is None else blob for wb, blob in cold.items()}
