"""The hub stage: hub incidents scored once over the hub facts of every parcel partition.

A parcel engine sees only its partition's share of a hub's parcels, so
scoring incidents there diluted them (recall fell with the partition count)
and several partitions raised the same incident with different parcel lists.
Here each parcel partition's :class:`HubSummary` (its arrivals and departures
since its previous clock tick) comes to one stage. The stage keeps, per
source partition, the last tick applied (a summary whose tick is not newer is
a duplicate: a restored partition re-emits what it sent before) and applies
the facts of tick T only once every source partition has reported a tick >=
T (the watermark is the minimum over the sources), sorted by (time, waybill,
kind), then evaluates the hubs active since their last look at T. So the
incidents, their ids and their affected parcels are the same whatever the
partitioning and whatever the order the summaries arrive in. The dwell limit
is learned here from the departures (protected: not from parcels an incident
held), with the keys and baseline the parcel engines use.

This is the small protocol of aggregate stages (issue 14): ``offer`` a
summary, get alerts; ``export``/``restore`` bytes for checkpoints.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Protocol

import msgspec

from logiwatch.detectors.errors import StateError
from logiwatch.detectors.hub_incident import (
    ARRIVE,
    HubEnv,
    HubFact,
    HubIncidentScorer,
    HubScore,
    HubSummary,
    hub_alert,
    migrate_scores,
)
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType

STAGE_VERSION = 1
#: the aggregate topic the parcel partitions produce their hub summaries to
HUBS_TOPIC_SUFFIX = "-hubs"
_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(HubSummary)
_facts_decoder = msgspec.msgpack.Decoder(list[HubSummary])


def encode_hub_summary(summary: HubSummary) -> bytes:
    """A summary as the aggregate topic carries it (JSON; ``version`` names the format)."""

    return _json_encoder.encode(summary)


def decode_hub_summary(raw: bytes) -> HubSummary:
    """The inverse of :func:`encode_hub_summary`.

    >>> s = HubSummary(source=3, tick_ms=60_000, facts=(HubFact(1, "WB1", 1, "HUB-A", "east"),))
    >>> decode_hub_summary(encode_hub_summary(s)) == s
    True
    """

    return _json_decoder.decode(raw)


class AggregateStage(Protocol):
    """An aggregate detector over the summaries of every parcel partition."""

    name: str

    def offer(self, summary: HubSummary) -> list[Alert]: ...

    def export(self) -> bytes: ...


class HubStage:
    """Hub incidents over all partitions (see the module docstring).

    Parameters
    ----------
    sources: the number of parcel partitions whose summaries it waits for.
    min_count: observations a dwell key needs before it is trusted (the engine's ``min_count``).
    knobs: the scorer's knobs (``HubIncidentScorer``; the engine config's ``knobs["hub_incident"]``).

    >>> from logiwatch.detectors.hub_incident import HubFact, HubSummary
    >>> stage = HubStage(sources=2, min_count=30)
    >>> stage.offer(HubSummary(source=0, tick_ms=60_000, facts=(HubFact(1, "WB1", 1, "HUB-A", "east"),)))
    []
    >>> stage.watermark_ms is None  # partition 1 has not reported yet
    True
    >>> _ = stage.offer(HubSummary(source=1, tick_ms=60_000))
    >>> stage.watermark_ms, list(stage.env.present["HUB-A"])
    (60000, ['WB1'])
    """

    name = "hub_incident"

    def __init__(
        self, sources: int, min_count: int, knobs: Mapping[str, float | bool | str] | None = None
    ) -> None:
        if sources < 1:
            raise ValueError("the hub stage needs at least one source partition")
        self.sources = sources
        self.min_count = min_count
        self.knobs = dict(knobs or {})
        self.env = HubEnv(min_count)
        self.scorer = HubIncidentScorer(self.env, **self.knobs)  # type: ignore[arg-type]
        #: source partition -> last tick offered (summaries up to it are ignored as duplicates)
        self.last_tick: dict[int, int] = {}
        #: tick -> the summaries offered for it, not yet applied (the tick is above the watermark)
        self.waiting: dict[int, list[HubSummary]] = {}
        self._ticks: list[int] = []  # heap of the ticks in ``waiting``
        #: hubs with facts since their last evaluation
        self.active: set[str] = set()
        self.applied_ms: int | None = None

    @property
    def watermark_ms(self) -> int | None:
        """The newest tick every source partition has reported (None until all have)."""

        if len(self.last_tick) < self.sources:
            return None
        return min(self.last_tick.values())

    def offer(self, summary: HubSummary) -> list[Alert]:
        """Take one summary; return the alerts of every tick it completes."""

        source = summary.source
        if not 0 <= source < self.sources:
            raise ValueError(f"hub summary from partition {source}, the stage has {self.sources}")
        last = self.last_tick.get(source)
        if last is not None and summary.tick_ms <= last:
            return []  # a duplicate (a restored partition re-emits its summaries)
        self.last_tick[source] = summary.tick_ms
        same = self.waiting.get(summary.tick_ms)
        if same is None:
            same = self.waiting[summary.tick_ms] = []
            heapq.heappush(self._ticks, summary.tick_ms)
        same.append(summary)
        if last is not None and self.applied_ms is not None and last > self.applied_ms:
            return []  # this partition was not the one holding the watermark back
        return self._advance()

    def offer_all(self, summaries: Iterable[HubSummary]) -> list[Alert]:
        out: list[Alert] = []
        for s in summaries:
            out.extend(self.offer(s))
        return out

    def _advance(self) -> list[Alert]:
        wm = self.watermark_ms
        if wm is None or (self.applied_ms is not None and wm <= self.applied_ms):
            return []
        out: list[Alert] = []
        ticks = self._ticks
        while ticks and ticks[0] <= wm:
            tick = heapq.heappop(ticks)
            facts = sorted(f for s in self.waiting.pop(tick) for f in s.facts)
            out.extend(self._apply(tick, facts))
        self.applied_ms = wm
        return out

    def _apply(self, tick: int, facts: list[HubFact]) -> list[Alert]:
        scorer = self.scorer
        for f in facts:
            if f.kind == ARRIVE:
                scorer.arrive(f)
            else:
                scorer.depart(f)
            self.active.add(f.hub)
            seen = self.env.seen
            if f.time_ms > seen.get(f.hub, 0):
                seen[f.hub] = f.time_ms
        out: list[Alert] = []
        for hub in sorted(self.active):
            # a tick long after the hub's last fact (the backtest's final tick, a stopped feed) scores
            # the hub once, shortly after what it saw, not at a time nothing was seen at
            now = min(tick, self.env.seen.get(hub, tick) + scorer.eval_every_ms)
            if now >= self.env.next_eval.get(hub, 0):
                self.active.discard(hub)
                out.extend(hub_alert(f) for f in scorer.evaluate(hub, now))
        return out

    # ------------------------------------------------------------ checkpoints
    def export(self) -> bytes:
        """The whole stage state (scorer, dwell baseline, per-source ticks, waiting summaries)."""

        env = self.env
        blob = {
            "version": STAGE_VERSION,
            "sources": self.sources,
            "last_tick": {str(k): v for k, v in self.last_tick.items()},
            "waiting": _encoder.encode([s for t in sorted(self.waiting) for s in self.waiting[t]]),
            "active": sorted(self.active),
            "applied_ms": self.applied_ms,
            "dwell": env.dwell.export(),
            **{name: getattr(env, name) for name in _ENV_FIELDS},
            "scores": env.scores,
        }
        return _encoder.encode(blob)

    @classmethod
    def restore(
        cls, sources: int, min_count: int, knobs: Mapping[str, float | bool | str] | None, data: bytes | None
    ) -> HubStage:
        """A stage from ``export``'s bytes (a new one when there are none)."""

        stage = cls(sources, min_count, knobs)
        if not data:
            return stage
        try:
            blob = msgspec.msgpack.decode(data)
        except msgspec.DecodeError as exc:
            raise StateError(f"hub stage snapshot is corrupt: {exc}") from None
        if not isinstance(blob, dict) or blob.get("version") != STAGE_VERSION:
            raise StateError("hub stage snapshot has an unknown version; delete it to relearn")
        if blob["sources"] != sources:
            raise StateError(f"hub stage snapshot is for {blob['sources']} partitions, not {sources}")
        stage.last_tick = {int(k): int(v) for k, v in blob["last_tick"].items()}
        for summary in _facts_decoder.decode(blob["waiting"]):
            stage.waiting.setdefault(summary.tick_ms, []).append(summary)
        stage._ticks = sorted(stage.waiting)
        stage.active = set(blob["active"])
        stage.applied_ms = blob["applied_ms"]
        stage.env.dwell.load(blob["dwell"])
        for name in _ENV_FIELDS:
            setattr(stage.env, name, _int_keys(name, blob[name]))
        if "scores" in blob:
            stage.env.scores = msgspec.convert(blob["scores"], dict[str, HubScore])
        else:  # a snapshot from before HubScore: the scorer state sat in the arrival buckets
            stage.env.scores = migrate_scores(stage.env.arrivals)
        return stage


_ENV_FIELDS = (
    "present",
    "incidents",
    "recent_incidents",
    "affected",
    "arrivals",
    "suspect",
    "next_eval",
    "region",
    "seen",
)


def _int_keys(name: str, value: dict[str, object]) -> dict[str, object]:
    # msgpack keeps int keys (bucket numbers), so only the bucket maps need nothing; kept as a hook
    if name != "arrivals":
        return value
    return {hub: {int(b): n for b, n in counts.items()} for hub, counts in value.items()}  # type: ignore[attr-defined]


#: parcel alert types an incident at their node explains (those the stall detector linked before)
LINKED_TYPES = frozenset({AnomalyType.STALL, AnomalyType.LIKELY_LOST})
LINK_AFTER_MS = 86_400_000


def link_incident(alert: Alert, incidents: Iterable[Alert]) -> Alert:
    """The parcel alert with ``incident_id`` set when a hub incident at its node explains it.

    An incident explains a stall at its hub that fires while it is open, or within a
    day after it closed when the stall's dwell began before it ended (the rule the
    stall detector applied when incidents were scored per partition). ``incidents``
    are the latest known copies of the hub incidents (their ``status`` says open or
    closed, ``detected_at`` of a resolved one is its end). The link moved here, to
    the alert service, because the parcel partitions no longer know the incidents.

    >>> from logiwatch.detectors.model import AlertStatus, Severity
    >>> inc = Alert(alert_id="I1", alert_type=AnomalyType.HUB_INCIDENT, status=AlertStatus.FIRING,
    ...             severity=Severity.CRITICAL, detected_at=10, summary="", node_id="HUB-A", window_start=5)
    >>> stall = Alert(alert_id="S1", alert_type=AnomalyType.STALL, status=AlertStatus.FIRING,
    ...               severity=Severity.WARNING, detected_at=20, summary="", onset_at=3, waybill_id="WB1", node_id="HUB-A")
    >>> link_incident(stall, [inc]).incident_id
    'I1'
    """

    if alert.incident_id or alert.alert_type not in LINKED_TYPES or alert.node_id is None:
        return alert
    at = alert.detected_at
    for inc in sorted(incidents, key=lambda a: a.alert_id):
        if inc.alert_type is not AnomalyType.HUB_INCIDENT or inc.node_id != alert.node_id:
            continue
        if inc.status is AlertStatus.FIRING:
            hit = (inc.window_start or 0) <= at
        else:
            end = inc.detected_at
            hit = (alert.onset_at or at) <= end <= at < end + LINK_AFTER_MS
        if hit:
            return msgspec.structs.replace(alert, incident_id=inc.alert_id)
    return alert
