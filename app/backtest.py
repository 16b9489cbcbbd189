"""Backtest: run the detection engine over a labelled event log and score it against the labels.

The run is the Kafka path's: the same clock ticks (``interleave_ticks``), the
same partitioner and one engine per partition (``run_partitioned``), so the
alerts are those a worker would emit. Scoring rules (also in
``docs/detection.md``): for a parcel anomaly type, a FIRING alert matches when
a label of the same type exists for the same waybill; precision counts every
FIRING alert of the type (revision 0), recall counts labelled waybills with at
least one matching alert. Per-parcel stall and likely-lost alerts on parcels
labelled as caught in a hub incident and linked to a hub-incident alert (its
``incident_id``, or listed in its affected parcels) are reported as
``explained_by_incident`` rather than as false stalls: the incident is the
finding, and the alert service groups them under it. A hub incident label is
the set of rows sharing an ``incident_id`` (hub, earliest and latest onset);
an incident alert matches when it names the same hub and its window overlaps.
Delay is first matching alert time minus the label's onset; lead is the
label's ``promise_broken_at`` minus the first matching alert time. A type
without labels reports recall (and, without alerts, precision) as null.

``late_delivery`` needs no labels: it is read off the events (a parcel whose
first DELIVERED scan is after its promise, or that is undelivered when the
log has passed its promise) and scores the predicted-late warnings by lead: a
warning counts as early at a lead only when it fired at least that long
before the promise (1 h and 24 h are reported). Precision at a lead counts
the warnings that early; recall the late parcels warned that early.

False alerts per 1,000 normal parcels are also reported for the cold start:
the parcels whose first event is in the first 10 % of the log.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from logiwatch.detectors.codec import read_events, read_labels
from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, EventType, Label, ScanEvent
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.errors import ConfigError

#: Leads (seconds) at which late-delivery warnings are scored.
LEADS_S = (3600, 86_400)
#: A log whose events go back further than this behind the newest so far is not in time order.
MAX_DISORDER_MS = 86_400_000

LINKABLE = frozenset({AnomalyType.STALL, AnomalyType.LIKELY_LOST})


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def run_engine(
    events: Sequence[ScanEvent], config: EngineConfig, *, partitions: int = 1, ticks_every_ms: int = 60_000
) -> list[Alert]:
    return run_partitioned(interleave_ticks(events, ticks_every_ms), partitions, config)


def check_order(events: Sequence[ScanEvent], max_disorder_ms: int = MAX_DISORDER_MS) -> None:
    """``ConfigError`` naming the first far-behind event (1-based line) when such events are not rare.

    A log grouped by order or parcel replays as a stream that jumps back in time at every
    parcel: the engine's watermark would run ahead of most parcels and the figures would mean
    nothing. Arrival-order noise (as real feeds and the simulator have: late scans, a scanner
    with a wrong clock) is fine: more than 0.1 % of the events (and at least 10) more than
    ``max_disorder_ms`` behind the newest before them is not.
    """

    newest = None
    newest_line = 0
    behind = 0
    first: tuple[int, str, float, int] | None = None
    for i, ev in enumerate(events, 1):
        t = ev.event_time
        if newest is None or t > newest:
            newest, newest_line = t, i
        elif newest - t > max_disorder_ms:
            behind += 1
            if first is None:
                first = (i, ev.event_id, (newest - t) / 3.6e6, newest_line)
    if first is not None and behind > max(10, len(events) // 1000):
        line, event_id, hours, newer = first
        raise ConfigError(
            f"events are not in time order: {behind} events are more than {max_disorder_ms / 3.6e6:.0f} h behind "
            f"an earlier one, the first at line {line} ({event_id}, {hours:.1f} h older than line {newer}); "
            "sort the file by event_time or pass --order event-time"
        )


def late_deliveries(events: Sequence[ScanEvent]) -> tuple[dict[str, int], set[str]]:
    """(late waybill -> its promise, on-time waybills) read off the events alone.

    Late: the first DELIVERED scan is after the promise (the latest promise the parcel's scans
    carry), or there is none and the log has passed the promise. On time: delivered by the
    promise. Parcels undelivered at the end of the log with the promise still ahead are neither.
    """

    promise: dict[str, int] = {}
    delivered: dict[str, int] = {}
    end = 0
    for ev in events:
        wb = ev.waybill_id
        promise[wb] = ev.promised_delivery_by
        end = max(end, ev.event_time)
        if ev.event_type is EventType.DELIVERED and (wb not in delivered or ev.event_time < delivered[wb]):
            delivered[wb] = ev.event_time
    late: dict[str, int] = {}
    on_time: set[str] = set()
    for wb, by in promise.items():
        d = delivered.get(wb)
        if d is None:
            if end > by:
                late[wb] = by
        elif d > by:
            late[wb] = by
        else:
            on_time.add(wb)
    return late, on_time


def score_late_delivery(alerts: Sequence[Alert], events: Sequence[ScanEvent]) -> dict[str, Any]:
    """Predicted-late warnings against the late deliveries in the events, at each lead of ``LEADS_S``."""

    late, on_time = late_deliveries(events)
    first: dict[str, Alert] = {}
    for a in alerts:
        if a.alert_type is AnomalyType.PREDICTED_LATE and a.waybill_id:
            wb = a.waybill_id
            if wb not in first or a.detected_at < first[wb].detected_at:
                first[wb] = a
    out: dict[str, Any] = {"late": len(late), "on_time": len(on_time), "warned": len(first)}
    leads = [(late[wb] - a.detected_at) / 1000 for wb, a in first.items() if wb in late]
    out["lead_p50_s"] = round(_quantile(leads, 0.5), 1) if leads else None
    for lead_s in LEADS_S:
        early = {wb: a for wb, a in first.items() if (a.promised_delivery_by or 0) - a.detected_at >= lead_s * 1000}
        tp = sum(1 for wb in early if wb in late)
        name = f"lead_{lead_s // 3600}h"
        out[name] = {
            "warnings": len(early),
            "true": tp,
            "precision": round(tp / len(early), 4) if early else None,
            "recall": round(tp / len(late), 4) if late else None,
        }
    return out


def score(
    alerts: Iterable[Alert], labels: Sequence[Label], events: Sequence[ScanEvent], *, scenario: str = ""
) -> dict[str, Any]:
    """Precision, recall, F1, delays and leads per anomaly type (the JSON shape of the issue)."""

    alerts = list(alerts)
    parcels = {e.waybill_id for e in events}
    labelled_any = {lb.waybill_id for lb in labels if lb.waybill_id}
    normal = parcels - labelled_any
    firing = [a for a in alerts if a.status is AlertStatus.FIRING and a.revision == 0]
    by_type: dict[AnomalyType, dict[str, Label]] = defaultdict(dict)
    for lb in labels:
        if lb.waybill_id and lb.anomaly_type is not AnomalyType.HUB_INCIDENT:
            by_type[lb.anomaly_type].setdefault(lb.waybill_id, lb)
    incident_parcels = {lb.waybill_id for lb in labels if lb.anomaly_type is AnomalyType.HUB_INCIDENT}
    incident_alerts = [a for a in alerts if a.alert_type is AnomalyType.HUB_INCIDENT]
    linked: set[str] = set()
    for a in incident_alerts:
        linked.update(a.affected_waybills)
    types_out: dict[str, dict[str, Any]] = {}
    types = sorted({lb.anomaly_type for lb in labels} | {a.alert_type for a in firing}, key=lambda t: t.value)
    for kind in types:
        if kind is AnomalyType.HUB_INCIDENT:
            types_out[kind.value] = _score_incidents(labels, [a for a in firing if a.alert_type is kind])
            continue
        truth = by_type.get(kind, {})
        tp = fp = explained = 0
        first: dict[str, Alert] = {}
        for a in (a for a in firing if a.alert_type is kind):
            wb = a.waybill_id or ""
            if wb in truth:
                tp += 1
                if wb not in first or a.detected_at < first[wb].detected_at:
                    first[wb] = a
            elif kind in LINKABLE and wb in incident_parcels and (a.incident_id or wb in linked):
                explained += 1
            else:
                fp += 1
        alerted = tp + fp
        precision = tp / alerted if alerted else (None if not truth else 0.0)
        recall = len(first) / len(truth) if truth else None
        delays = [(a.detected_at - truth[wb].onset_at) / 1000 for wb, a in first.items()]
        leads = [
            (truth[wb].promise_broken_at - a.detected_at) / 1000  # type: ignore[operator]
            for wb, a in first.items()
            if truth[wb].promise_broken_at is not None
        ]
        types_out[kind.value] = _metrics(len(truth), alerted, precision, recall, delays, leads)
        types_out[kind.value].update(true_alerts=tp, false_alerts=fp, explained_by_incident=explained)
    false_normal = sum(1 for a in firing if a.waybill_id in normal)
    # the cold start: parcels whose first event is in the first 10 % of the log
    early_parcels: set[str] = set()
    for ev in events[: max(1, len(events) // 10)]:
        early_parcels.add(ev.waybill_id)
    early_normal = early_parcels & normal
    false_early = sum(1 for a in firing if a.waybill_id in early_normal)
    by_type_normal: dict[str, int] = defaultdict(int)
    for a in firing:
        if a.waybill_id in normal:
            by_type_normal[a.alert_type.value] += 1
    return {
        "scenario": scenario,
        "parcels": len(parcels),
        "normal_parcels": len(normal),
        "events": len(events),
        "alerts_firing": len(firing),
        "false_alerts_on_normal": false_normal,
        "false_alerts_per_1000_normal": round(1000 * false_normal / len(normal), 3) if normal else 0.0,
        "false_alerts_on_normal_by_type": dict(sorted(by_type_normal.items())),
        "cold_start_normal_parcels": len(early_normal),
        "false_alerts_per_1000_normal_cold_start": round(1000 * false_early / len(early_normal), 3)
        if early_normal
        else 0.0,
        "late_delivery": score_late_delivery(alerts, events),
        "types": types_out,
    }


def _metrics(
    labelled: int,
    alerted: int,
    precision: float | None,
    recall: float | None,
    delays: list[float],
    leads: list[float],
) -> dict[str, Any]:
    p, r = precision or 0.0, recall or 0.0
    f1 = 2 * p * r / (p + r) if precision is not None and recall is not None and p + r else None
    return {
        "labelled": labelled,
        "alerted": alerted,
        "precision": None if precision is None else round(precision, 4),
        "recall": None if recall is None else round(recall, 4),
        "f1": None if f1 is None else round(f1, 4),
        "delay_p50_s": round(_quantile(delays, 0.5), 1),
        "delay_p90_s": round(_quantile(delays, 0.9), 1),
        "lead_p50_s": round(_quantile(leads, 0.5), 1),
    }


def _score_incidents(labels: Sequence[Label], alerts: Sequence[Alert]) -> dict[str, Any]:
    windows: dict[str, list[Any]] = {}
    for lb in labels:
        if lb.anomaly_type is not AnomalyType.HUB_INCIDENT:
            continue
        key = lb.incident_id or f"{lb.node_id}:{lb.onset_at}"
        w = windows.get(key)
        if w is None:
            windows[key] = [lb.node_id, lb.onset_at, lb.onset_at]
        else:
            w[1] = min(w[1], lb.onset_at)
            w[2] = max(w[2], lb.onset_at)
    detected: dict[str, int] = {}
    tp = 0
    for a in alerts:
        start = a.window_start if a.window_start is not None else a.detected_at
        end = a.window_end if a.window_end is not None else a.detected_at
        hit = False
        for key, (hub, lo, hi) in windows.items():
            if hub == a.node_id and start <= hi and lo <= end:
                hit = True
                if key not in detected or a.detected_at < detected[key]:
                    detected[key] = a.detected_at
        tp += hit
    precision = tp / len(alerts) if alerts else (None if not windows else 0.0)
    recall = len(detected) / len(windows) if windows else None
    delays = [(t - windows[k][1]) / 1000 for k, t in detected.items()]
    out = _metrics(len(windows), len(alerts), precision, recall, delays, [])
    out.update(true_alerts=tp, false_alerts=len(alerts) - tp, labelled_rows=sum(
        1 for lb in labels if lb.anomaly_type is AnomalyType.HUB_INCIDENT))
    return out


def backtest(
    events_path: str | Path,
    labels_path: str | Path | None,
    config: EngineConfig,
    *,
    partitions: int = 1,
    ticks_every_ms: int = 60_000,
    scenario: str | None = None,
    order: str = "file",
    alerts_out: str | Path | None = None,
) -> dict[str, Any]:
    """Run and score; ``order`` is ``file`` (refuse a log far out of time order) or ``event-time`` (sort it)."""

    events = list(read_events(events_path))
    if order == "event-time":
        events.sort(key=lambda ev: ev.event_time)  # stable: ties keep the file's order
    else:
        check_order(events)
    labels = read_labels(labels_path) if labels_path is not None else []
    t0 = time.perf_counter()
    alerts = run_engine(events, config, partitions=partitions, ticks_every_ms=ticks_every_ms)
    seconds = time.perf_counter() - t0
    if alerts_out is not None:
        encoder = msgspec.json.Encoder()
        with open(alerts_out, "wb") as f:
            for a in alerts:
                f.write(encoder.encode(a) + b"\n")
    result = score(alerts, labels, events, scenario=scenario or Path(events_path).resolve().parent.name)
    result["partitions"] = partitions
    result["engine_seconds"] = round(seconds, 3)
    result["engine_events_per_s"] = round(len(events) / seconds) if seconds > 0 else None
    return result


def render_table(result: dict[str, Any]) -> str:
    lines = [
        f"scenario {result['scenario']}: {result['parcels']} parcels ({result['normal_parcels']} normal), "
        f"{result['events']} events, {result['partitions']} partition(s)",
        f"{'type':<20} {'labelled':>8} {'alerted':>8} {'prec':>6} {'recall':>6} {'f1':>6} "
        f"{'delay p50':>10} {'delay p90':>10} {'lead p50':>9}",
    ]
    for name, m in result["types"].items():
        lines.append(
            f"{name:<20} {m['labelled']:>8} {m['alerted']:>8} {_num(m['precision'])} {_num(m['recall'])} "
            f"{_num(m['f1'])} {m['delay_p50_s'] / 3600:>9.1f}h {m['delay_p90_s'] / 3600:>9.1f}h "
            f"{m['lead_p50_s'] / 3600:>8.1f}h"
        )
    ld = result["late_delivery"]
    leads = "; ".join(
        f"lead >= {k[5:]}: P {_num(v['precision'])} R {_num(v['recall'])} ({v['warnings']} warnings)"
        for k, v in ld.items()
        if k.startswith("lead_") and isinstance(v, dict)
    )
    lead_p50 = "-" if ld["lead_p50_s"] is None else f"{ld['lead_p50_s'] / 3600:.1f} h"
    lines.append(f"late deliveries {ld['late']} (on time {ld['on_time']}): {leads}; lead p50 {lead_p50}")
    lines.append(
        f"false alerts per 1000 normal parcels: {result['false_alerts_per_1000_normal']:.2f} "
        f"({result['false_alerts_on_normal']} alerts); cold start (first 10 %): "
        f"{result['false_alerts_per_1000_normal_cold_start']:.2f}"
    )
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return f"{'-':>6}" if x is None else f"{x:>6.3f}"
