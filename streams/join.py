"""Contract v2 join: shipment registrations + slim scans -> the engine's v1 scan events.

Registrations (``logistics.shipments``) and slim scans (``logistics.events``)
are both keyed by waybill, so with the same partition count a parcel's
registration and scans live in partitions of the same number, and Faust's
assignor gives co-partitioned topics' partitions to the same worker. Per
partition number the worker keeps:

* a :class:`RegistrationTable` (waybill -> newest registration), the
  "engine" of the shipments partition: its rows are that partition's
  snapshot, written with the shipments offset like any engine's state;
* a :class:`JoinEngine` wrapped around the events partition's detection
  engine. A v2 :class:`~logiwatch.detectors.model.Scan` whose waybill is
  registered becomes a v1 :class:`~logiwatch.detectors.model.ScanEvent`
  at once. One that is not waits, with the parcel's later scans, until the
  registration arrives or the join's clock has moved ``wait_ms`` past where
  it stood when the parcel's first scan arrived, but never within the
  batch in which it began waiting: one that falls due there goes on at the
  start of the partition's next batch, after the registrations that arrived
  meanwhile (the worker handles the two topics in separate batches, and a
  batch of events can span more event time than the wait). Then the parcel
  goes on with defaults (:func:`to_scan_event`) and
  ``registration="missing"``, and its later scans no longer wait. The waiting scans and the parcels that
  went on without a registration are part of the events partition's
  snapshot (hash fields under :data:`JOIN_PREFIX`, never a waybill's
  field), so a restore resumes them.

The join's clock is event time: the largest event time of the partition's
records so far (slim scans, v1 scans and clock ticks), in log order, not
the Kafka record timestamps (which a replay to another topic or the worker's
replay of its unsaved records after an engine failure would not share): the
wait depends on the records, their order and the batch boundaries only. A resent history of old checkpoints arriving in a partition whose
clock already stands at "now" waits the full ``wait_ms`` from "now" (its old
times do not move the clock). A history whose own checkpoints are the
newest records of its partition (a quiet partition, a backfill) moves the
clock itself: its earlier checkpoints go on once its later ones are
``wait_ms`` newer, since by event time that much has passed.

A registration that arrives after its parcel went on with defaults, or a
registration update (a new promise, a change of carrier), reaches the
parcel with its next scans: they are joined to the newest registration, and
the engine takes the order fields of a parcel's newest scan.

Registrations that arrive are noticed by the join at its next batch (a scan
or a clock tick of that partition). v1 scan events pass through untouched.
The join's outcome depends on how the two topics interleave, as in any
stream-stream join: a replay after a crash may join a scan that waited the
first time. The bound makes the difference at most ``wait_ms`` of delay.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from logiwatch.detectors.model import (
    FINAL_EVENT_TYPES,
    UNREGISTERED_MERCHANT,
    Alert,
    Scan,
    ScanEvent,
    ShipmentRegistration,
    Tick,
)
from logiwatch.streams.ingest.locations import NODE_TYPE_OF, location_node_id, location_region

#: Hash-field prefix of the join's own state inside the events partition's snapshot.
JOIN_PREFIX = "\x00join:"

_encoder = msgspec.msgpack.Encoder()
_registration_decoder = msgspec.msgpack.Decoder(ShipmentRegistration)


@dataclass(frozen=True)
class JoinConfig:
    """How long a scan waits for its registration, and the defaults it gets without one.

    ``wait_ms`` runs on the join's clock (the partition's event time, see the
    module docstring). Without a registration the promises are counted from the
    parcel's first scan.
    """

    wait_ms: int = 10 * 60_000
    default_dispatch_ms: int = 24 * 3600_000
    default_delivery_ms: int = 72 * 3600_000
    #: a registration older than this (event time, against the newest seen) is forgotten
    retention_ms: int = 60 * 24 * 3600_000


@dataclass
class _Changes:
    upserts: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)


@dataclass
class _NoModels:
    core: bytes = b""
    baselines: dict[str, bytes] = field(default_factory=dict)


class RegistrationTable:
    """Waybill -> newest registration, for one partition number (the shipments partition's engine)."""

    def __init__(self, retention_ms: int = JoinConfig.retention_ms, loaded_offset: int | None = None) -> None:
        self.rows: dict[str, ShipmentRegistration] = {}
        self.retention_ms = retention_ms
        #: the shipments offset the rows were loaded at (None: no snapshot)
        self.loaded_offset = loaded_offset
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        #: waybills registered since the join last looked ...
        self.arrived: set[str] = set()
        #: ... or, after a restore or too many to list, "look at every waiting parcel"
        self.recheck_all = False
        self._max_ms: int | None = None
        self._puts = 0

    @classmethod
    def restore(
        cls, rows: Mapping[str, bytes], offset: int | None, retention_ms: int = JoinConfig.retention_ms
    ) -> RegistrationTable:
        table = cls(retention_ms, offset)
        table.recheck_all = True
        for wb, blob in rows.items():
            reg = _registration_decoder.decode(blob)
            table.rows[wb] = reg
            table._max_ms = max(table._max_ms or 0, reg.version_ms)
        return table

    @property
    def watermark_ms(self) -> int | None:
        return None

    def get(self, waybill: str) -> ShipmentRegistration | None:
        return self.rows.get(waybill)

    def put(self, reg: ShipmentRegistration) -> bool:
        """Keep ``reg`` unless the stored one is newer; True if it was kept."""

        old = self.rows.get(reg.waybill_id)
        if old is not None and old.version_ms > reg.version_ms:
            return False
        wb = reg.waybill_id
        self.rows[wb] = reg
        self._dirty.add(wb)
        self._deleted.discard(wb)
        if not self.recheck_all:
            self.arrived.add(wb)
            if len(self.arrived) > 65_536:  # nobody is draining it (no events batch yet)
                self.arrived.clear()
                self.recheck_all = True
        self._max_ms = reg.version_ms if self._max_ms is None else max(self._max_ms, reg.version_ms)
        self._puts += 1
        if self._puts % 4096 == 0:
            self._evict()
        return True

    def forget(self, waybill: str) -> None:
        if self.rows.pop(waybill, None) is not None:
            self._dirty.discard(waybill)
            self._deleted.add(waybill)

    def _evict(self) -> None:
        if self._max_ms is None:
            return
        horizon = self._max_ms - self.retention_ms
        for wb in [wb for wb, reg in self.rows.items() if reg.version_ms < horizon]:
            self.forget(wb)

    def process(self, records: Sequence[object]) -> list[Alert]:
        for rec in records:
            if type(rec) is ShipmentRegistration:
                self.put(rec)
        return []

    def take_changes(self) -> _Changes:
        upserts = {wb: _encoder.encode(self.rows[wb]) for wb in sorted(self._dirty) if wb in self.rows}
        deletes = sorted(self._deleted)
        self._dirty.clear()
        self._deleted.clear()
        return _Changes(upserts, deletes)

    def take_model_changes(self) -> _NoModels:
        return _NoModels()

    def stats(self) -> dict[str, float]:
        return {"registrations": float(len(self.rows))}


class _Waiting(msgspec.Struct, array_like=True):
    """A parcel's join state: scans waiting for the registration, or ``released`` without one.

    ``due_ms`` is when (join clock, event time) the wait ends: the clock's value
    when the parcel's first scan arrived, plus the wait. ``first_ms`` is that scan's event
    time (the defaults' promises count from it).
    """

    first_ms: int
    scans: list[Scan] = msgspec.field(default_factory=list)
    released: bool = False
    due_ms: int = 0


_waiting_decoder = msgspec.msgpack.Decoder(_Waiting)


def to_scan_event(scan: Scan, reg: ShipmentRegistration | None, first_ms: int, config: JoinConfig) -> ScanEvent:
    """The v1 scan event the engine sees for a slim scan (``reg`` None: the defaults).

    Node: the scan's ``node_id``, else the id derived from its raw location
    (:func:`~logiwatch.streams.ingest.locations.location_node_id`); node type:
    the scan's, else the usual one for its event type; region: the scan's,
    else derived from the location. Without a registration: merchant
    ``unregistered``, order = waybill, carrier from the scan (else
    ``unknown``), amount 0, no category, origin = the first scan's region,
    destination ``unknown`` and promises ``default_*_ms`` after ``first_ms``.
    """

    node_id = scan.node_id or location_node_id(
        country=scan.country,
        admin_area=scan.admin_area,
        postcode=scan.postcode,
        city=scan.city,
        location=scan.location,
    )
    node_type = scan.node_type or NODE_TYPE_OF[scan.event_type]
    region = scan.region or location_region(country=scan.country, admin_area=scan.admin_area, city=scan.city)
    detail = scan.detail
    carrier = (reg.carrier_id if reg is not None else None) or scan.carrier_id or "unknown"
    if reg is None:
        return ScanEvent(
            event_id=scan.event_id,
            waybill_id=scan.waybill_id,
            order_id=scan.waybill_id,
            merchant_id=UNREGISTERED_MERCHANT,
            carrier_id=carrier,
            event_type=scan.event_type,
            node_id=node_id,
            node_type=node_type,
            region=region,
            origin_region=region,
            dest_region="unknown",
            event_time=scan.event_time,
            promised_dispatch_by=first_ms + config.default_dispatch_ms,
            promised_delivery_by=first_ms + config.default_delivery_ms,
            category="",
            order_amount=0.0,
            lat=scan.lat,
            lon=scan.lon,
            detail=detail,
            registration="missing",
        )
    return ScanEvent(
        event_id=scan.event_id,
        waybill_id=scan.waybill_id,
        order_id=reg.order_id or scan.waybill_id,
        merchant_id=reg.merchant_id or UNREGISTERED_MERCHANT,
        carrier_id=carrier,
        event_type=scan.event_type,
        node_id=node_id,
        node_type=node_type,
        region=region,
        origin_region=reg.origin_region or region,
        dest_region=reg.dest_region or "unknown",
        event_time=scan.event_time,
        promised_dispatch_by=(
            reg.promised_dispatch_by
            if reg.promised_dispatch_by is not None
            else reg.registered_at + config.default_dispatch_ms
        ),
        promised_delivery_by=(
            reg.promised_delivery_by
            if reg.promised_delivery_by is not None
            else reg.registered_at + config.default_delivery_ms
        ),
        category=reg.category or "",
        order_amount=reg.order_amount or 0.0,
        lat=scan.lat,
        lon=scan.lon,
        detail=detail,
    )


def _time_of(record: object) -> int | None:
    if type(record) is Tick:
        return record.tick_time  # type: ignore[attr-defined, no-any-return]
    return getattr(record, "event_time", None)


class _Changed(Protocol):
    @property
    def upserts(self) -> Mapping[str, bytes]: ...

    @property
    def deletes(self) -> Sequence[str]: ...


class InnerEngine(Protocol):
    """The detection engine behind the join (what ``logiwatch.detectors.engine.Engine`` offers)."""

    @property
    def watermark_ms(self) -> int | None: ...

    def process(self, records: Sequence[ScanEvent | Tick]) -> list[Alert]: ...

    def take_changes(self) -> _Changed: ...

    def take_model_changes(self) -> Any: ...

    def stats(self) -> dict[str, float]: ...


class JoinEngine:
    """The events partition's engine behind the v2 join (the worker's ``PartitionEngine``).

    ``registry`` returns the partition number's :class:`RegistrationTable`
    (None while the worker has none: every v2 scan then waits or defaults).
    """

    def __init__(
        self,
        inner: InnerEngine,
        registry: Callable[[], RegistrationTable | None],
        config: JoinConfig,
        waiting: dict[str, _Waiting] | None = None,
    ) -> None:
        self.inner = inner
        self.registry = registry
        self.config = config
        self.waiting: dict[str, _Waiting] = waiting or {}
        #: the join's clock: the largest event time (scan, v1 scan or tick) seen
        self.clock_ms: int | None = None
        self._heap: list[tuple[int, str]] = [
            (w.first_ms + config.retention_ms if w.released else max(w.due_ms, w.first_ms + config.wait_ms), wb)
            for wb, w in self.waiting.items()
        ]
        heapq.heapify(self._heap)
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        self._recheck = bool(self.waiting)  # after a restore: registrations may have landed meanwhile
        #: parcels that began waiting in the current batch, and those of them already due
        self._new_waiters: set[str] = set()
        self._deferred: list[str] = []
        #: outcomes since start (for the stats): joined, waited, defaulted
        self.counts = {"joined": 0, "waited": 0, "defaulted": 0}

    @classmethod
    def split_snapshot(cls, parcels: Mapping[str, bytes]) -> tuple[dict[str, bytes], dict[str, _Waiting]]:
        """(the engine's parcels, the join's waiting parcels) from a snapshot hash.

        The join's clock is not saved: after a restore the first record sets
        it again, and every waiting parcel's deadline is its own first scan's
        time plus the wait, so nothing due is missed.
        """

        rest: dict[str, bytes] = {}
        waiting: dict[str, _Waiting] = {}
        for key, blob in parcels.items():
            if key.startswith(JOIN_PREFIX):
                waiting[key[len(JOIN_PREFIX) :]] = _waiting_decoder.decode(blob)
            else:
                rest[key] = blob
        return rest, waiting

    # ------------------------------------------------------- PartitionEngine
    @property
    def watermark_ms(self) -> int | None:
        return self.inner.watermark_ms

    def process(self, records: Sequence[ScanEvent | Scan | ShipmentRegistration | Tick]) -> list[Alert]:
        """Join ``records`` (in log order) and run the engine on the result.

        The join's clock is the records' event time (see the module docstring).
        """

        table = self.registry()
        if not self.waiting and Scan not in set(map(type, records)):
            # the v1-only case: nothing to join, nothing waiting; keep the clock and pass through
            latest = max((t for t in map(_time_of, records) if t is not None), default=None)
            if latest is not None and (self.clock_ms is None or latest > self.clock_ms):
                self.clock_ms = latest
            if table is not None:
                table.arrived.clear()  # only waiting parcels care
                table.recheck_all = False
            self._recheck = False
            self._heap.clear()  # with nothing waiting, every entry is stale
            return self.inner.process(records)  # type: ignore[arg-type]  # no Scan among them
        out: list[ScanEvent | Tick] = []
        if table is not None and (table.arrived or table.recheck_all or self._recheck):
            self._release_registered(table, out)
        self._release_deferred(table, out)
        for rec in records:
            kind = type(rec)
            if kind is Scan:
                assert isinstance(rec, Scan)
                self._advance(rec.event_time, table, out)
                self._on_scan(rec, table, out)
            elif kind is Tick:
                assert isinstance(rec, Tick)
                self._advance(rec.tick_time, table, out)
                out.append(rec)
            elif kind is ScanEvent:
                assert isinstance(rec, ScanEvent)
                self._advance(rec.event_time, table, out)
                out.append(rec)
            # a registration on the events topic is not an engine record: the decoder never yields one here
        return self.inner.process(out)

    def take_changes(self) -> _Changes:
        inner = self.inner.take_changes()
        upserts = dict(inner.upserts)
        deletes = list(inner.deletes)
        for wb in sorted(self._dirty):
            w = self.waiting.get(wb)
            if w is not None:
                upserts[JOIN_PREFIX + wb] = _encoder.encode(w)
        deletes.extend(JOIN_PREFIX + wb for wb in sorted(self._deleted))
        self._dirty.clear()
        self._deleted.clear()
        return _Changes(upserts, deletes)

    def take_model_changes(self) -> Any:
        return self.inner.take_model_changes()

    def take_counts(self) -> dict[str, int]:
        """Scans joined, made to wait and sent on with defaults since the last call."""

        counts, self.counts = self.counts, {"joined": 0, "waited": 0, "defaulted": 0}
        return counts

    def stats(self) -> dict[str, float]:
        stats = dict(self.inner.stats())
        stats["join_waiting"] = float(sum(1 for w in self.waiting.values() if not w.released))
        return stats

    # ------------------------------------------------------------- the join
    def _on_scan(self, scan: Scan, table: RegistrationTable | None, out: list[ScanEvent | Tick]) -> None:
        wb = scan.waybill_id
        reg = table.get(wb) if table is not None else None
        w = self.waiting.get(wb)
        if reg is not None:
            if w is not None:
                if not w.released:
                    self._release(wb, reg, out)  # (normally done at the batch start)
                else:  # went on with defaults; registered from now on
                    del self.waiting[wb]
                    self._deleted.add(wb)
                    self._dirty.discard(wb)
            self.counts["joined"] += 1
            out.append(to_scan_event(scan, reg, scan.event_time, self.config))
            return
        if w is None:
            # _advance ran first: the clock is this scan's event time or later (an old resend)
            clock = scan.event_time if self.clock_ms is None else self.clock_ms
            w = self.waiting[wb] = _Waiting(first_ms=scan.event_time, due_ms=clock + self.config.wait_ms)
            heapq.heappush(self._heap, (w.due_ms, wb))
            self._new_waiters.add(wb)
        if w.released:
            self.counts["defaulted"] += 1
            out.append(to_scan_event(scan, None, w.first_ms, self.config))
            self._finish(wb, scan)
            return
        w.scans.append(scan)
        self.counts["waited"] += 1
        self._dirty.add(wb)
        self._deleted.discard(wb)

    def _finish(self, wb: str, scan: Scan) -> None:
        # a final scan ends the parcel: the engine forgets it, so does the join
        if scan.event_type in FINAL_EVENT_TYPES:
            if self.waiting.pop(wb, None) is not None:
                self._dirty.discard(wb)
                self._deleted.add(wb)

    def _release(self, wb: str, reg: ShipmentRegistration | None, out: list[ScanEvent | Tick]) -> None:
        w = self.waiting[wb]
        scans = sorted(w.scans, key=lambda s: s.event_time)
        w.scans = []
        for scan in scans:
            out.append(to_scan_event(scan, reg, w.first_ms, self.config))
            if reg is None:
                self.counts["defaulted"] += 1
        if reg is not None:
            del self.waiting[wb]
            self._dirty.discard(wb)
            self._deleted.add(wb)
        else:
            w.released = True
            self._dirty.add(wb)
            heapq.heappush(self._heap, (w.first_ms + self.config.retention_ms, wb))
        if scans and scans[-1].event_type in FINAL_EVENT_TYPES:
            self._finish(wb, scans[-1])

    def _release_registered(self, table: RegistrationTable, out: list[ScanEvent | Tick]) -> None:
        if self._recheck or table.recheck_all:
            candidates: Sequence[str] = [wb for wb, w in self.waiting.items() if not w.released]
        else:
            candidates = sorted(table.arrived)
        self._recheck = table.recheck_all = False
        table.arrived.clear()
        for wb in candidates:
            w = self.waiting.get(wb)
            reg = table.get(wb)
            if w is not None and not w.released and reg is not None:
                self.counts["joined"] += len(w.scans)
                self._release(wb, reg, out)

    def _advance(self, t: int, table: RegistrationTable | None, out: list[ScanEvent | Tick]) -> None:
        if self.clock_ms is not None and t <= self.clock_ms:
            return
        self.clock_ms = t
        heap = self._heap
        while heap and heap[0][0] <= t:
            _, wb = heapq.heappop(heap)
            w = self.waiting.get(wb)
            if w is None:
                continue
            if w.released:
                if w.first_ms + self.config.retention_ms <= t:  # never finished: forget it at last
                    del self.waiting[wb]
                    self._dirty.discard(wb)
                    self._deleted.add(wb)
                continue
            if wb in self._new_waiters:  # due within the batch it began waiting in: see the next batch first
                self._deferred.append(wb)
                continue
            reg = table.get(wb) if table is not None else None
            if reg is not None:
                self.counts["joined"] += len(w.scans)
            self._release(wb, reg, out)

    def _release_deferred(self, table: RegistrationTable | None, out: list[ScanEvent | Tick]) -> None:
        """Release the parcels that fell due in the batch they began waiting in (registrations applied)."""

        deferred, self._deferred = self._deferred, []
        self._new_waiters.clear()
        for wb in deferred:
            w = self.waiting.get(wb)
            if w is None or w.released:
                continue  # joined at this batch's start, or finished
            reg = table.get(wb) if table is not None else None
            if reg is not None:
                self.counts["joined"] += len(w.scans)
            self._release(wb, reg, out)
