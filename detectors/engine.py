"""The detection engine: one per Kafka partition, event time only, deterministic.

``Engine.process(records)`` takes scan events and clock ticks in partition
order and returns alerts. The engine owns each parcel's small state, a heap of
``(deadline_ms, waybill)`` with one entry per parcel at (or before) its
earliest deadline in ``state.due`` (lazy: a deadline that moves later keeps the
queued entry, re-queued when it pops; a parcel's deadlines fire in
``(deadline, detector order)`` order), the watermark (largest record time seen
minus the allowed lateness) and the learned baselines.
A deadline fires when the watermark passes it, or earlier when the parcel's
next scan is later than the deadline (the parcel *was* silent then); either
way the alert is stamped with the deadline, so alerts do not depend on tick
cadence. Duplicated event ids are ignored, a parcel has at most one open alert
per type, and a RESOLVED update with the same id follows when the parcel
moves again or is delivered. Delivered parcels are forgotten after
``retention_ms``; a silent unfinished one after ``max_silence_ms`` only once
no alert deadline of it is pending (the forgetting horizon follows the
learned thresholds, so a slow lane's silent parcel still gets its stall and
likely-lost alerts), and in any case ``max_age_ms`` after its last scan.
``take_changes``/``export_models``/``restore``
are how the stream shell checkpoints and recovers: the same records replayed
onto a restored engine give the same alerts, ids and content.

A parcel is either cold, msgpack-encoded (the same bytes a checkpoint writes),
or hot, decoded: a national network has millions of parcels in flight and most
of them are idle, so an idle parcel costs its few hundred encoded bytes instead
of a few dozen Python objects (about 2.5x less memory, and nothing for the
cyclic collector to walk). A call decodes each cold parcel it touches; the
parcels of the last calls stay decoded (the hot set, at most
``config.hot_parcels`` between calls, least recently touched evicted first) and
a parcel is encoded only when it is evicted or a checkpoint (``take_changes``)
writes it (``detectors/hot_set.py``); alerts and blobs are those of the round trip.
"""

from __future__ import annotations

import heapq
import zlib
from bisect import insort
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import msgspec

from logiwatch.detectors.calendar import Calendar
from logiwatch.detectors.errors import StateError
from logiwatch.detectors.hot_set import as_decoded, blobs, evict, upserts
from logiwatch.detectors.hub_incident import HubFact, HubSummary
from logiwatch.detectors.model import (
    UNREGISTERED_MERCHANT,
    Alert,
    AlertStatus,
    AnomalyType,
    ScanEvent,
    Tick,
    make_alert_id,
)
from logiwatch.detectors.pool import Pool, PoolMember
from logiwatch.detectors.protocol import AggregateRecorder, ParcelDetector, ScanContext, evaluation_order
from logiwatch.detectors.registry import BUILT_IN, DETECTORS, Registry
from logiwatch.detectors.state import (
    CODES,
    FINAL_CODES,
    TYPES,
    Env,
    Finding,
    ParcelState,
    new_state,
)

MODELS_VERSION = 1
FORGET = "_forget"
DAY_MS = 86_400_000

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ParcelState)


@dataclass(frozen=True)
class EngineConfig:
    """Engine knobs (frozen; the core never sees pydantic).

    ``detectors`` names the enabled detectors (default all, see ``DETECTORS``);
    ``knobs`` maps a detector name to constructor keyword arguments; ``registry`` is the set of
    detectors to pick from (``detectors/registry.py``; the built-in one unless a caller brings
    its own).
    """

    allowed_lateness_ms: int = 600_000
    retention_ms: int = DAY_MS
    #: a silent unfinished parcel is forgotten this long after its last pending alert deadline
    max_silence_ms: int = 30 * DAY_MS
    #: ... and this long after its last scan whatever is pending (bounds the state)
    max_age_ms: int = 400 * DAY_MS
    calendar: Calendar = field(default_factory=Calendar)
    detectors: tuple[str, ...] = tuple(DETECTORS)
    knobs: Mapping[str, Mapping[str, float | bool | str]] = field(default_factory=dict)
    #: observations a baseline key needs before it is trusted over its fallback
    min_count: int = 30
    #: seen-event-id hashes kept per parcel (duplicates beyond this are unlikely)
    max_seen: int = 48
    #: route entries kept per parcel (first two and the latest ones)
    max_route: int = 24
    #: learning shared across partitions: the tick-clock epoch at which partitions exchange what
    #: they learned (``detectors/pool.py``); 0 = each partition learns alone
    pool_epoch_ms: int = 0
    #: parcels kept decoded between calls (the hot set); 0 = every parcel encoded at each call's end
    hot_parcels: int = 500
    registry: Registry = BUILT_IN

    def __post_init__(self) -> None:
        known = self.registry.by_name
        unknown = [d for d in self.detectors if d not in known]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(known)}")
        if self.allowed_lateness_ms < 0:
            raise ValueError("allowed_lateness_ms must be >= 0")
        for name in ("retention_ms", "max_silence_ms", "max_age_ms", "min_count", "max_seen", "max_route"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_route < 3:
            raise ValueError("max_route must be >= 3")
        if self.pool_epoch_ms < 0:
            raise ValueError("pool_epoch_ms must be >= 0 (0 = no pooling)")
        if self.hot_parcels < 0:
            raise ValueError("hot_parcels must be >= 0 (0 = none kept decoded)")


@dataclass
class StateChanges:
    """Parcels changed since the last ``take_changes``: msgpack blobs to upsert, waybills to delete."""

    upserts: dict[str, bytes]
    deletes: list[str]


@dataclass
class ModelChanges:
    """The learned models for a checkpoint, split so that it writes what changed.

    ``core`` is everything but the duration baselines (small: clock, hub
    tracker, centroids), always whole; ``baselines`` holds only the baseline
    keys learned or re-summarised since the last ``take_model_changes``, as
    ``"<baseline>:<key>" -> msgpack([histogram, cached quantiles])`` fields that
    overwrite the stored ones. ``Engine.restore(config, parcels, core, fields)``
    over the accumulated fields gives back the same models as ``export_models``.
    """

    core: bytes
    baselines: dict[str, bytes]


class Engine:
    """Per-partition detection engine (see the module docstring).

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(0).dispatched(1 * H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    >>> engine = Engine(EngineConfig())
    >>> alerts = engine.process(sc.events())
    >>> engine.in_flight
    1
    >>> engine.state_of("WB1").route[-1][2]  # a copy, whether the parcel is hot or cold
    'HUB-A'
    >>> # a cold engine guesses nothing: with no learned dwell, only the broken promise is certain
    >>> [a.alert_type.value for a in engine.advance(sc.start_ms + 30 * 24 * H)]
    ['predicted_late']
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        registry = config.registry
        self.env = Env(
            config.calendar,
            config.min_count,
            config.allowed_lateness_ms,
            baselines=registry.baselines,
            tables=registry.tables,
        )
        #: how alert types end (over every registered detector, enabled or not, so a restored
        #: parcel's open alert of a disabled one still ends as its type says)
        self._on_move, self._sticky, self._benign = registry.resolve_on_move, registry.sticky, registry.benign
        enabled = set(config.detectors)
        knobs = config.knobs
        #: the enabled parcel detectors in the order their declarations give (``evaluation_order``)
        self._detectors: list[ParcelDetector] = [
            cast(Callable[..., ParcelDetector], cls)(self.env, **dict(knobs.get(cls.name, {})))
            for cls in evaluation_order([c for c in registry.parcel if c.name in enabled])
        ]
        self._recorders: list[AggregateRecorder] = [
            cast(Callable[..., AggregateRecorder], cls)(self.env, **dict(knobs.get(cls.name, {})))
            for cls in registry.aggregate
            if cls.name in enabled
        ]
        self._index = {d.name: i for i, d in enumerate(self._detectors)}
        # scan type code -> the detectors (and recorders) whose on_event (observe) acts on it, in order
        self._by_code: list[tuple[ParcelDetector, ...]] = [
            tuple(d for d in self._detectors if code in d.contract.handles) for code in range(len(TYPES))
        ]
        self._recorders_by_code: list[tuple[AggregateRecorder, ...]] = [
            tuple(r for r in self._recorders if code in r.contract.handles) for code in range(len(TYPES))
        ]
        #: alert type value -> the enabled detectors whose ``on_alert`` runs when one fires
        self._alert_readers: dict[str, tuple[ParcelDetector, ...]] = {
            t.value: tuple(d for d in self._detectors if t in d.contract.reads_alerts)
            for t in {t for d in self._detectors for t in d.contract.reads_alerts}
        }
        #: what the engine tells ``on_event`` about the scan at hand (one object, refilled per scan)
        self._scan = ScanContext()
        self._forget_index = len(self._detectors)
        #: waybill -> a cold parcel's state, msgpack-encoded: idle parcels cost their encoded bytes
        #: only (no Python objects for the cyclic GC to walk); None for a hot one (the key stays,
        #: so the dict does not churn); ``parcel_blobs`` gives them all
        self._cold: dict[str, bytes | None] = {}
        #: the hot set: waybill -> decoded state, least recently touched first (``_flush`` evicts)
        self._hot: OrderedDict[str, ParcelState] = OrderedDict()
        #: (stage code or -1, deadlines) of each parcel this call touched, before it did, for the stats
        self._was: dict[str, tuple[int, int]] = {}
        #: parcels in flight per stage code of their latest scan, and their deadlines (kept up to date
        #: at every flush, so ``stats`` never walks the parcels)
        self._by_stage = [0] * len(TYPES)
        self._deadlines = 0
        # One heap entry per parcel (not per deadline): the heap stays the size of the parcels
        # in flight, and a scan that moves a deadline later pushes nothing.
        self._heap: list[tuple[int, str]] = []
        #: waybill -> time of its earliest queued heap entry (later stale entries are not tracked)
        self._queued: dict[str, int] = {}
        #: waybill -> its earliest deadline (``min(state.due.values())``, absent when none): a
        #: stale heap entry is re-queued from this without decoding the parcel
        self._due_at: dict[str, int] = {}
        self._max_time: int | None = None
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        self._lateness = config.allowed_lateness_ms
        self._max_seen_bytes = 4 * config.max_seen
        #: learning shared across partitions (``attach_pool``)
        self._pool = PoolMember(config.pool_epoch_ms)
        #: hub facts for the hub stage (``detectors/hub_stage.py``); None when hub incidents are off
        self._hub: AggregateRecorder | None = self._recorders[0] if self._recorders else None
        #: the source partition named in this engine's hub summaries (the runner and worker set it)
        self.hub_source = 0
        self._summaries: list[HubSummary] = []

    def attach_pool(self, pool: Pool, partition: int) -> None:
        """Share learning with the other partitions through ``pool`` (needs ``config.pool_epoch_ms``)."""

        self._pool.attach(pool, partition, self.env)

    # ----------------------------------------------------------------- API
    @property
    def watermark_ms(self) -> int | None:
        return None if self._max_time is None else self._max_time - self._lateness

    @property
    def detector_order(self) -> tuple[str, ...]:
        """The enabled parcel detectors in the order they run (derived from their contracts)."""

        return tuple(d.name for d in self._detectors)

    @property
    def in_flight(self) -> int:
        return len(self._cold)  # a hot parcel keeps its key there

    def process(self, records: Sequence[ScanEvent | Tick]) -> list[Alert]:
        out: list[Alert] = []
        pool = self._pool
        if pool.held:
            # records held at an epoch whose pooled deltas were missing (``held``) go first, once
            # the tick they wait at can pass (it passes again below: its epoch is open by then)
            first = pool.held[0]
            assert isinstance(first, Tick)
            if not pool.tick(self.env, first.tick_time):
                pool.held.extend(records)
                return out
            records = [*pool.held, *records]
            pool.held = []
        pooled = pool.pool is not None
        try:
            for i, record in enumerate(records):
                if type(record) is ScanEvent:
                    self._on_event(record, out)
                else:
                    assert isinstance(record, Tick)
                    if pooled and not pool.tick(self.env, record.tick_time):
                        pool.held = list(records[i:])
                        break
                    self._on_time(record.tick_time, out)
                    self._summarise(record.tick_time)
        finally:
            self._flush()
        return out

    def _summarise(self, tick_ms: int) -> None:
        hub = self._hub
        if hub is not None:
            self._summaries.append(
                HubSummary(source=self.hub_source, tick_ms=tick_ms, facts=tuple(hub.pending))
            )
            hub.pending.clear()

    def take_hub_summaries(self) -> list[HubSummary]:
        """The hub summaries of the ticks processed since the last call (one per tick), for the hub stage."""

        out, self._summaries = self._summaries, []
        return out

    @property
    def held(self) -> int:
        """Records waiting for another partition's deltas of the epoch before (0 without pooling)."""

        return len(self._pool.held)

    def advance(self, now_ms: int) -> list[Alert]:
        out: list[Alert] = []
        try:
            self._on_time(now_ms, out)
        finally:
            self._flush()
        return out

    def state_of(self, waybill: str) -> ParcelState | None:
        """A copy of one parcel's state (decoded; changing it changes nothing in the engine)."""

        st = self._hot.get(waybill)
        blob = self._cold.get(waybill) if st is None else _state_encoder.encode(st)  # None: not in flight
        return None if blob is None else _state_decoder.decode(blob)

    def parcel_blobs(self) -> dict[str, bytes]:
        """Every in-flight parcel's state as a checkpoint writes it (waybill -> msgpack blob), a new dict.

        The hot parcels are encoded for it and stay hot; ``restore`` takes it back.
        """

        return blobs(self._hot, self._cold)

    def encode_hot(self) -> None:
        """Encode every hot parcel into its blob and drop its decoded state (between calls)."""

        evict(self._hot, self._cold, 0)

    def _load_baseline_fields(self, fields: Mapping[str, bytes] | Mapping[bytes, bytes]) -> None:
        by_name: dict[str, dict[str, list[object]]] = {}
        for raw, value in fields.items():
            field_name = raw.decode() if isinstance(raw, bytes) else raw
            name, sep, key = field_name.partition(":")
            try:
                entry = msgspec.msgpack.decode(value)
                valid = bool(sep) and isinstance(entry, list) and len(entry) in (2, 3, 4)
            except msgspec.DecodeError:
                valid = False
            if not valid:
                raise StateError(f"baseline snapshot field {field_name!r} is corrupt")
            by_name.setdefault(name, {})[key] = entry
        baselines = self.env.baselines()
        for name, entries in by_name.items():
            if name not in baselines:
                continue  # a baseline this version no longer has is dropped
            try:
                baselines[name].load_entries(entries)
            except (TypeError, ValueError) as exc:
                raise StateError(f"baseline snapshot of {name!r} is corrupt: {exc!r}") from None

    def take_changes(self) -> StateChanges:
        changed = upserts(self._hot, self._cold, sorted(self._dirty))
        deletes = sorted(self._deleted)
        self._dirty.clear()
        self._deleted.clear()
        return StateChanges(upserts=changed, deletes=deletes)

    def export_models(self) -> bytes:
        """All learned models in one blob (``restore``'s ``models``)."""

        return self._models_blob(full=True)

    def take_model_changes(self) -> ModelChanges:
        """The models as a checkpoint writes them: the core, and the baseline keys changed since the last call."""

        encode = _state_encoder.encode
        fields = {
            f"{name}:{key}": encode(entry)
            for name, b in self.env.baselines().items()
            for key, entry in b.take_changed().items()
        }
        return ModelChanges(core=self._models_blob(full=False), baselines=fields)

    def _models_blob(self, *, full: bool) -> bytes:
        env = self.env
        blob = {
            "version": MODELS_VERSION,
            "max_time": self._max_time,
            "baselines": {name: b.export() for name, b in env.baselines().items()} if full else None,
            **env.tables,
            # hub facts since the last tick: the offsets a checkpoint commits covered them
            "hub_pending": _state_encoder.encode(self._hub.pending if self._hub is not None else []),
            "hub_summaries": _state_encoder.encode(self._summaries),
            "feeds": env.feeds,
            **self._pool.export(env),
        }
        return _state_encoder.encode(blob)

    @classmethod
    def restore(
        cls,
        config: EngineConfig,
        parcels: Mapping[str, bytes],
        models: bytes | None,
        baselines: Mapping[str, bytes] | Mapping[bytes, bytes] | None = None,
    ) -> Engine:
        """An engine from a checkpoint: parcel blobs, a models blob (whole or core) and baseline fields."""

        engine = cls(config)
        if models:
            try:
                blob = msgspec.msgpack.decode(models)
            except msgspec.DecodeError as exc:
                raise StateError(f"engine models snapshot is corrupt: {exc}") from None
            if not isinstance(blob, dict) or blob.get("version") != MODELS_VERSION:
                raise StateError("engine models snapshot has an unknown version; delete it to relearn")
            engine._max_time = blob["max_time"]
            env = engine.env
            if blob["baselines"] is not None:
                for name, b in env.baselines().items():
                    b.load(blob["baselines"].get(name, {}))
                    # A whole blob (a snapshot from before split checkpoints, or export_models):
                    # the first take_model_changes writes every key, since the core it writes
                    # next to them no longer carries the baselines.
                    b.changed.update(b.hist)
            for name, table in env.tables.items():
                # in place: the detector that declared the table holds it
                table.clear()
                table.update(blob.get(name) or {})
            # a snapshot from before the hub stage has per-partition incident state: dropped (the stage relearns)
            engine._restore_hub(blob)
            env.feeds = blob.get("feeds") or {}
            engine._pool.load(env, blob)
        if baselines:
            engine._load_baseline_fields(baselines)
        for key in sorted(parcels):
            blob = parcels[key]
            try:
                state = _state_decoder.decode(blob)
            except msgspec.DecodeError as exc:
                raise StateError(f"parcel state of {key!r} is corrupt: {exc}") from None
            wb = state.waybill  # the mapping's keys may be bytes (straight from Redis)
            disabled = [n for n in state.due if n != FORGET and n not in engine._index]
            for name in disabled:
                del state.due[name]  # a disabled detector's deadline would never fire
            engine._cold[wb] = _state_encoder.encode(state) if disabled else bytes(blob)
            if state.route:
                engine._by_stage[state.route[-1][1]] += 1
            engine._deadlines += len(state.due)
            if state.due:
                first = min(state.due.values())
                engine._heap.append((first, wb))
                engine._queued[wb] = first
                engine._due_at[wb] = first
        heapq.heapify(engine._heap)
        return engine

    def _restore_hub(self, blob: dict[str, object]) -> None:
        pending, summaries = blob.get("hub_pending"), blob.get("hub_summaries")
        if self._hub is not None and isinstance(pending, bytes):
            self._hub.pending = msgspec.msgpack.decode(pending, type=list[HubFact])
        if self._hub is not None and isinstance(summaries, bytes):
            self._summaries = msgspec.msgpack.decode(summaries, type=list[HubSummary])

    def stats(self) -> dict[str, float]:
        learned = cold = 0
        for b in self.env.baselines().values():
            for h in b.hist.values():
                if h[0] >= b.min_count:
                    learned += 1
                else:
                    cold += 1
        out: dict[str, float] = {
            "learned_keys": learned,
            "cold_keys": cold,
            "in_flight": self.in_flight,
            "deadlines": self._deadlines,
        }
        for t, n in zip(TYPES, self._by_stage, strict=True):
            out[f"parcels_by_stage_{t.value}"] = n
        return out

    # ------------------------------------------------------------ internals
    def _load(self, wb: str) -> ParcelState | None:
        """The parcel's state for this call (made hot: decoded at most once), None if not in flight."""

        st = self._hot.get(wb)
        was = self._was
        if st is None:
            cold = self._cold
            blob = cold.get(wb)
            if blob is None:
                return None
            st = self._hot[wb] = _state_decoder.decode(blob)
            cold[wb] = None  # the blob goes, the key stays
        elif wb in was:
            return st  # touched already by this call
        else:
            as_decoded(st)  # hot since an earlier call: the types a decode would have given it
        was[wb] = (st.route[-1][1] if st.route else -1, len(st.due))
        return st

    def _new(self, ev: ScanEvent) -> ParcelState:
        """A new parcel's state, hot and touched by this call."""

        st = self._hot[ev.waybill_id] = new_state(ev)
        self._cold[ev.waybill_id] = None
        self._was[ev.waybill_id] = (-1, 0)
        return st

    def _flush(self) -> None:
        """At a call's end: update the stats counters for the parcels it touched, mark them most recent, evict."""

        hot = self._hot
        by_stage = self._by_stage
        was = self._was
        deadlines = 0
        for wb, (stage, due) in was.items():
            st = hot[wb]  # a forgotten parcel left ``was`` too
            if stage >= 0:
                by_stage[stage] -= 1
            deadlines -= due
            if st.route:
                by_stage[st.route[-1][1]] += 1
            deadlines += len(st.due)
            hot.move_to_end(wb)
        self._deadlines += deadlines
        was.clear()
        evict(hot, self._cold, self.config.hot_parcels)

    def _on_time(self, t: int, out: list[Alert]) -> None:
        if self._max_time is None or t > self._max_time:
            self._max_time = t
        heap = self._heap
        # the common case: nothing is due yet, so skip the call
        if heap and heap[0][0] <= self._max_time - self._lateness:
            self._fire_until(self._max_time - self._lateness, out)

    def _on_event(self, ev: ScanEvent, out: list[Alert]) -> None:
        t = ev.event_time
        wb = ev.waybill_id
        # Deadlines the watermark passes fire before the event teaches the models anything:
        # detectors re-check with the models when their deadline fires, so the models a
        # deadline sees are those of the records before it, whatever the tick cadence.
        self._on_time(t, out)
        st = self._load(wb)
        if st is None:
            st = self._new(ev)
            self._deleted.discard(wb)
        h = zlib.crc32(ev.event_id.encode()).to_bytes(4, "little")
        seen = st.seen
        at = seen.find(h)
        while at > 0 and at & 3:  # only a match on a 4-byte boundary is a hash
            at = seen.find(h, at + 1)
        if at >= 0:
            return
        seen += h
        st.seen = seen if len(seen) <= self._max_seen_bytes else seen[4:]
        due = st.due
        # the earliest deadline first (kept in _due_at): usually nothing is overdue and the
        # sort below is skipped
        first_due = self._due_at.get(wb)
        if first_due is not None and first_due < t:
            # the parcel's own scan proves it was silent until t: fire what was due before
            early = sorted((d, self._index[n]) for n, d in due.items() if d < t and n != FORGET and n in self._index)
            for d, i in early:
                if due.get(self._detectors[i].name) == d:
                    self._fire(st, i, d, out)
        code = CODES[ev.event_type]
        entry = (t, code, ev.node_id, ev.region)
        route = st.route
        prev = route[-1] if route else None
        latest = prev is None or t >= prev[0]
        if latest:
            route.append(entry)
        else:
            insort(route, entry)
        if len(route) > self.config.max_route:
            del route[2]
        if latest and ev.registration is None:
            # contract v2: a late registration or its update (promise, carrier) reaches the parcel (issue 13);
            # the origin stays the first scan's (a slim scan without a registered origin carries its own region)
            st.order, st.merchant, st.carrier, st.category = ev.order_id, ev.merchant_id, ev.carrier_id, ev.category
            st.amount, st.dest = ev.order_amount, ev.dest_region
            st.dispatch_by, st.deliver_by = ev.promised_dispatch_by, ev.promised_delivery_by
        scan = self._scan
        scan.prev = prev if latest else None
        scan.latest = latest
        scan.code = code
        if latest and prev is not None and st.open:
            for typ in [k for k in st.open if k in self._on_move]:
                self._resolve(st, typ, t, "the parcel moved again", out)
        if code in FINAL_CODES and not st.final_at:
            st.final_at = t
            for typ in [k for k in st.open if k not in self._sticky]:
                self._resolve(st, typ, t, f"the parcel was {ev.event_type.value.lower()}", out)
            due.clear()
            due[FORGET] = t + self.config.retention_ms
        elif latest and not st.final_at:
            due[FORGET] = t + self.config.max_silence_ms
        for det in self._by_code[code]:
            findings = det.on_event(st, ev, scan)
            if findings:
                self._emit(st, findings, out)
        for rec in self._recorders_by_code[code]:
            rec.observe(st, ev, scan)
        self._requeue(wb, due)
        self._dirty.add(wb)

    def _requeue(self, wb: str, due: dict[str, int]) -> None:
        if due:
            first = self._due_at[wb] = min(due.values())
            self._schedule(wb, first)
        else:
            self._due_at.pop(wb, None)

    def _schedule(self, wb: str, first: int) -> None:
        # Push only when the earliest deadline moved before the queued entry (or none is queued):
        # an entry that pops too early finds nothing due and re-queues the parcel.
        queued = self._queued.get(wb)
        if queued is None or first < queued:
            self._queued[wb] = first
            heapq.heappush(self._heap, (first, wb))

    def _fire(self, st: ParcelState, i: int, d: int, out: list[Alert]) -> None:
        det = self._detectors[i]
        del st.due[det.name]
        findings = det.on_deadline(st, d)
        if findings:
            self._emit(st, findings, out)
        self._dirty.add(st.waybill)

    def _fire_until(self, wm: int, out: list[Alert]) -> None:
        heap = self._heap
        load = self._load
        hot = self._hot
        queued = self._queued
        due_at = self._due_at
        index = self._index
        detectors = self._detectors
        forget_index = self._forget_index
        # 1. Take every parcel whose queued entry is due and gather its deadlines up to the
        # watermark (a parcel's entry is never later than its earliest deadline).
        touched: dict[str, ParcelState] = {}
        batch: list[tuple[int, str, int]] = []
        while heap and heap[0][0] <= wm:
            d, wb = heapq.heappop(heap)
            if queued.get(wb) == d:
                del queued[wb]
            if wb in touched:
                continue
            first = due_at.get(wb)
            if first is None:
                continue  # forgotten, or nothing is due any more
            if first > wm:
                # a stale entry (the deadline moved later): re-queue without decoding the parcel
                self._schedule(wb, first)
                continue
            st = load(wb)
            if st is None:
                continue
            touched[wb] = st
            for name, at in st.due.items():
                if at <= wm:
                    i = forget_index if name == FORGET else index.get(name)
                    if i is not None:
                        batch.append((at, wb, i))
        # 2. Fire them in (deadline, waybill, detector) order: the same order, and so the same
        # output, whichever stale entries the big heap held (a restored engine has none).
        heapq.heapify(batch)
        while batch:
            d, wb, i = heapq.heappop(batch)
            st = hot.get(wb)
            if st is None:
                continue  # forgotten by an earlier deadline of this batch
            if i == forget_index:
                if st.due.get(FORGET) == d and not self._keep(st, d):
                    self._forget(st, d, out)
                continue
            name = detectors[i].name
            if st.due.get(name) != d:
                continue
            self._fire(st, i, d, out)
            new = st.due.get(name)  # a detector may set its next deadline when one fires
            if new is not None and new <= wm:
                heapq.heappush(batch, (new, wb, i))
        # 3. Queue the parcels again at their next deadline.
        for wb, st in touched.items():
            if wb in hot:
                self._requeue(wb, st.due)

    def _keep(self, st: ParcelState, at_ms: int) -> bool:
        """Whether a silent unfinished parcel must stay (an alert deadline is pending): re-arm its forgetting."""

        if st.final_at:
            return False
        pending = [d for name, d in st.due.items() if name != FORGET]
        if not pending or not st.route or at_ms - st.route[-1][0] >= self.config.max_age_ms:
            return False
        st.due[FORGET] = min(max(pending) + self.config.max_silence_ms, st.route[-1][0] + self.config.max_age_ms)
        self._dirty.add(st.waybill)
        return True

    def _forget(self, st: ParcelState, at_ms: int, out: list[Alert]) -> None:
        # close what is still open (sticky facts, silent parcels): every FIRING gets its RESOLVED
        for typ in list(st.open):
            self._resolve(st, typ, at_ms, "the parcel's journey is archived", out)
        wb = st.waybill
        self._cold.pop(wb, None)
        self._hot.pop(wb, None)
        stage, due = self._was.pop(wb, (-1, 0))
        if stage >= 0:
            self._by_stage[stage] -= 1
        self._deadlines -= due
        self._queued.pop(wb, None)
        self._due_at.pop(wb, None)
        self._dirty.discard(wb)
        self._deleted.add(wb)

    def _emit(self, st: ParcelState, findings: Sequence[Finding], out: list[Alert]) -> None:
        for f in findings:
            typ = f.alert_type.value
            if f.status is AlertStatus.RESOLVED:
                self._resolve(st, typ, f.at_ms, f.summary, out)
                continue
            if typ in st.open:
                continue
            aid = make_alert_id(f.alert_type, st.waybill, f.episode)
            if aid in st.fired:
                continue  # an id is one episode: it fires once, even if the story repeats
            st.fired.append(aid)
            last = st.route[-1] if st.route else None
            node = f.node if f.node is not None else (last[2] if last else None)
            st.open[typ] = (aid, f.onset_ms, node or "", f.at_ms)
            if typ not in self._benign:
                st.tainted = True
            out.append(self._alert(st, f, aid, node))
            for reader in self._alert_readers.get(typ, ()):
                more = reader.on_alert(st, f.alert_type, f.at_ms)
                if more:
                    self._emit(st, more, out)

    def _alert(self, st: ParcelState, f: Finding, aid: str, node: str | None) -> Alert:
        last = st.route[-1] if st.route else None
        return Alert(
            alert_id=aid,
            alert_type=f.alert_type,
            status=f.status,
            severity=f.severity,
            detected_at=f.at_ms,
            summary=f.summary,
            onset_at=f.onset_ms,
            waybill_id=st.waybill,
            order_id=st.order,
            merchant_id=st.merchant,
            carrier_id=st.carrier,
            node_id=node,
            region=f.region if f.region is not None else (last[3] if last else None),
            dest_region=st.dest,
            category=st.category,
            order_amount=st.amount,
            promised_delivery_by=st.deliver_by,
            predicted_lateness_s=f.predicted_lateness_s,
            incident_id=f.incident_id,
            # contract v2: a parcel whose scans went on without a registration (issue 13)
            evidence=f.evidence if st.merchant != UNREGISTERED_MERCHANT else {**f.evidence, "registration": "missing"},
        )

    def _resolve(self, st: ParcelState, typ: str, at_ms: int, why: str, out: list[Alert]) -> None:
        o = st.open.pop(typ, None)
        if o is None:
            return
        aid, onset, node, fired_at = o
        kind = AnomalyType(typ)
        f = Finding(
            alert_type=kind,
            at_ms=at_ms,
            onset_ms=onset,
            status=AlertStatus.RESOLVED,
            summary=f"{kind.value.replace('_', ' ')} on {st.waybill} resolved: {why}",
            evidence={"fired_at": fired_at, "open_s": max(0, at_ms - fired_at) / 1000},
        )
        if typ == AnomalyType.PREDICTED_LATE.value:
            f.evidence["actual_lateness_s"] = (at_ms - st.deliver_by) / 1000
        out.append(self._alert(st, f, aid, node or None))

