"""The live hub stage: consumes ``{events}-hubs``, scores hub incidents, checkpoints itself in Redis.

Every parcel partition produces one hub summary per clock tick to the
aggregate topic (one partition, so one worker holds the whole stage). This
runner feeds them to :class:`~logiwatch.detectors.hub_stage.HubStage` in
offset order, produces the incident alerts to the alerts topic and awaits
their acknowledgements, then writes the stage's state together with the next
offset to one Redis key (hash-tagged like the partition snapshots), and only
then lets the consumer commit that offset. After a crash the stage restarts
from the key: the records from the committed offset on are offered again, the
summaries it has applied (and re-sent ones) are dropped by (partition, tick),
and alerts re-produced are the same ids and content (idempotent by key; Tansu
has no transactions).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from logiwatch.detectors.codec import encode_alert
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.hub_stage import HubStage, decode_hub_summary
from logiwatch.redisconn import slot_tag
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.records import KafkaRecord
from logiwatch.streams.worker import RecordSink

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How the stage's Redis calls are retried: ``retry(what, call)``, the snapshot store's
#: :meth:`~logiwatch.streams.state.SnapshotStore.retry` in the worker (backs off while Redis is
#: down and pauses consumption, like the partition checkpoints, instead of failing the batch).
Retry = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _once(what: str, call: Callable[[], Awaitable[T]]) -> T:
    return await call()


class HubStageRunner:
    """One hub stage over the aggregate topic's single partition (see the module docstring)."""

    def __init__(
        self,
        *,
        client: Any,
        prefix: str,
        topic: str,
        sources: int,
        min_count: int,
        knobs: Mapping[str, float | bool | str] | None,
        sink: RecordSink,
        alerts_topic: str,
        metrics: WorkerMetrics | None = None,
        retry: Retry = _once,
    ) -> None:
        self.client = client
        self.topic = topic
        self.key = f"{prefix}hubstage:{slot_tag(topic, 0)}"
        self.sources, self.min_count, self.knobs = sources, min_count, knobs
        self.sink = sink
        self.alerts_topic = alerts_topic
        #: the worker's metrics: incident alerts count among its emitted alerts like parcel alerts
        self.metrics = metrics
        self.retry = retry
        self.stage: HubStage | None = None
        self.next_offset = 0

    async def _load(self) -> HubStage:
        if self.stage is None:
            raw = await self.retry("hub stage load", lambda: self.client.get(self.key))
            blob: dict[str, Any] = msgspec.msgpack.decode(raw) if raw else {"offset": 0, "state": None}
            self.stage = HubStage.restore(self.sources, self.min_count, self.knobs, blob["state"])
            self.next_offset = int(blob["offset"])
        return self.stage

    async def handle(self, records: Sequence[KafkaRecord], highwater: int | None = None) -> int | None:
        """Apply a batch; the offset to commit (None when it held nothing new for the stage).

        Every record is offered: the stage drops a summary whose (partition, tick) it has seen,
        so records replayed below the checkpoint change nothing, and a log that was lost and
        re-created (Tansu keeps it in memory) is applied from its new start rather than skipped
        up to the old checkpoint's offset. ``highwater``: the fetch high watermark, for the lag.
        """

        stage = await self._load()
        applied, acks = await self._offer(stage, records)
        for ack in acks:
            await ack
        if not applied:
            return None
        next_offset = records[-1].offset + 1
        if next_offset < self.next_offset:
            log.warning(
                "%s: new hub summaries below the stage's checkpoint offset %d: the topic's log was "
                "lost and re-created; the stage goes on from offset %d",
                self.topic, self.next_offset, next_offset,
            )
        blob = msgspec.msgpack.encode({"offset": next_offset, "state": stage.export()})
        await self.retry("hub stage checkpoint", lambda: self.client.set(self.key, blob))
        self.next_offset = next_offset
        if self.metrics is not None and highwater is not None:
            self.metrics.hub_stage_lag.set(max(0, highwater - next_offset))
        return next_offset

    async def _offer(self, stage: HubStage, records: Sequence[KafkaRecord]) -> tuple[int, list[Awaitable[Any]]]:
        """Feed the summaries to the stage and send its alerts: how many were new, and the sends'
        acknowledgements to await."""

        applied = 0
        acks: list[Awaitable[Any]] = []
        for rec in records:
            try:
                summary = decode_hub_summary(rec.value or b"")
            except (msgspec.DecodeError, DecodeError) as exc:
                log.warning("undecodable hub summary at %s@%d: %s", rec.topic, rec.offset, exc)
                continue
            seen = stage.last_tick.get(summary.source)
            if seen is not None and summary.tick_ms <= seen:
                continue  # replayed, or re-sent by a restored partition
            applied += 1
            for alert in stage.offer(summary):
                acks.append(await self.sink.send(self.alerts_topic, alert.alert_id.encode(), encode_alert(alert)))
                if self.metrics is not None:
                    self.metrics.alerts_emitted.labels(
                        type=alert.alert_type.value, status=alert.status.value, severity=alert.severity.value
                    ).inc()
        return applied, acks

    def drop(self) -> None:
        """Revoked: forget the in-memory stage (its state is in Redis)."""

        self.stage = None
