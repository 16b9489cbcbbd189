"""The checkpoint codec in the store: old uncompressed checkpoints restore, new ones round-trip
byte for byte into the engine, corrupt compressed values fail with StateError (one Redis and Cluster)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.errors import StateError
from logiwatch.redisconn import connect
from logiwatch.sim.traffic import generate
from logiwatch.streams import codec
from logiwatch.streams.state import SnapshotStore, partition_keys


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    return redis_url_both


def _engine_checkpoints() -> tuple[Engine, list[tuple[dict[str, bytes], list[str], bytes, dict[str, bytes]]]]:
    events, _ = generate("default", seed=3, parcels=400)
    records = list(interleave_ticks(events, 60_000))
    records = records[: len(records) // 2]  # parcels still in flight at the end
    engine = Engine(EngineConfig())
    out = []
    for start in range(0, len(records), 500):
        engine.process(records[start : start + 500])
        engine.take_hub_summaries()
        changes, models = engine.take_changes(), engine.take_model_changes()
        out.append((changes.upserts, changes.deletes, models.core, models.baselines))
    assert engine.in_flight
    return engine, out


def test_codec_round_trips_and_falls_back_to_plain() -> None:
    blob = b"\x9a" + b"parcel-state" * 20
    for dict_id in codec.DICTIONARIES:
        stored = codec.encode(blob, dict_id)
        assert stored[0] == codec.MARKER and len(stored) < len(blob)
        assert codec.decode(stored, "x") == blob
    assert codec.encode(b"\x92\x01\x02", codec.PARCELS) == b"\x92\x01\x02"  # not shorter: stored as it is
    assert codec.decode(b"\x92\x01\x02", "x") == b"\x92\x01\x02"


@pytest.mark.parametrize(
    "damage",
    [lambda s: s[:-3], lambda s: s + b"junk", lambda s: s[:2] + bytes([s[2] ^ 0xFF]) + s[3:], lambda s: b"\xc1\x63" + s[2:]],
    ids=["truncated", "trailing", "flipped", "unknown-dict"],
)
def test_a_corrupt_compressed_value_is_a_state_error(damage) -> None:  # type: ignore[no-untyped-def]
    stored = codec.encode(b"\x9a" + b"parcel-state" * 20, codec.PARCELS)
    try:
        out = codec.decode(damage(stored), "field")
    except StateError as exc:
        assert "field" in str(exc)
    else:  # deflate has no checksum: a flipped bit may still inflate, but never to the same bytes
        assert out != b"\x9a" + b"parcel-state" * 20


def test_new_checkpoints_restore_the_same_engine_and_old_ones_still_restore(redis_url: str, redis_prefix: str) -> None:
    engine, checkpoints = _engine_checkpoints()

    async def scenario() -> tuple[object, list[bytes], object]:
        client = connect(redis_url)
        store = SnapshotStore(client, redis_prefix, compress=True)
        try:
            for i, (upserts, deletes, core, baselines) in enumerate(checkpoints):
                await store.save("ev", 1, upserts=upserts, deletes=deletes, models=core, baselines=baselines, offset=i + 1)
            stored = list((await client.hgetall(partition_keys(redis_prefix, "ev", 1)[0])).values())
            # a checkpoint from before the codec: the engine's bytes stored as they are
            parcels_key, models_key, baselines_key, offset_key = partition_keys(redis_prefix, "ev", 2)
            await client.hset(parcels_key, mapping=engine.parcel_blobs())  # type: ignore[arg-type]
            await client.set(models_key, engine.export_models())
            await client.set(offset_key, 7)
            return await store.load("ev", 1), stored, await store.load("ev", 2)
        finally:
            await client.aclose()

    new, stored, old = asyncio.run(scenario())
    assert sum(v[:1] == bytes([codec.MARKER]) for v in stored) > len(stored) // 2  # really compressed
    assert new.parcels == engine.parcel_blobs()  # byte-identical blobs back
    restored = Engine.restore(EngineConfig(), new.parcels, new.models, new.baselines)
    assert restored.parcel_blobs() == engine.parcel_blobs()
    # (the baseline keys come back in Redis's order, so the blobs are compared decoded)
    assert msgspec.msgpack.decode(restored.export_models()) == msgspec.msgpack.decode(engine.export_models())
    assert old.parcels == engine.parcel_blobs() and old.offset == 7
    again = Engine.restore(EngineConfig(), old.parcels, old.models, old.baselines)
    assert msgspec.msgpack.decode(again.export_models()) == msgspec.msgpack.decode(engine.export_models())


def test_a_corrupt_stored_blob_fails_the_load_with_state_error(redis_url: str, redis_prefix: str) -> None:
    async def scenario() -> None:
        client = connect(redis_url)
        store = SnapshotStore(client, redis_prefix, compress=True)
        try:
            await store.save("ev", 3, upserts={"WB1": b"\x9a" + b"x" * 300}, deletes=[], models=None, offset=5)
            key = partition_keys(redis_prefix, "ev", 3)[0]
            stored = await client.hget(key, "WB1")
            assert stored[:1] == b"\xc1"
            await client.hset(key, "WB1", stored[:-4])
            with pytest.raises(StateError, match="WB1"):
                await store.load("ev", 3)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_console_reads_a_compressed_parcel_state(redis_url: str, redis_prefix: str) -> None:
    from logiwatch.alerts.console_scans import ScanReader

    engine, _ = _engine_checkpoints()
    blobs = engine.parcel_blobs()
    waybill = sorted(blobs)[0]

    async def scenario() -> dict[str, object]:
        client = connect(redis_url)
        store = SnapshotStore(client, redis_prefix, compress=True)
        try:
            await store.save("ev", 0, upserts={waybill: blobs[waybill]}, deletes=[], models=None, offset=1)
            stored = await client.hget(partition_keys(redis_prefix, "ev", 0)[0], waybill)
            assert stored[:1] == bytes([codec.MARKER])
            return await ScanReader(client, redis_prefix, "ev", 1, 24).scans(waybill)
        finally:
            await client.aclose()

    page = asyncio.run(scenario())
    assert page["in_state"] is True
    assert page["scans"], page
