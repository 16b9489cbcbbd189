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
label's ``promise_broken_at`` minus the first matching alert time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from logiwatch.detectors.codec import read_events, read_labels
from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Label, ScanEvent
from logiwatch.detectors.runner import interleave_ticks, run_partitioned

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


def score(
    alerts: Iterable[Alert], labels: Sequence[Label], events: Sequence[ScanEvent], *, scenario: str = ""
) -> dict[str, Any]:
    """Precision, recall, F1, delays and leads per anomaly type (the JSON shape of the issue)."""

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
        precision = tp / alerted if alerted else (1.0 if not truth else 0.0)
        recall = len(first) / len(truth) if truth else 1.0
        delays = [(a.detected_at - truth[wb].onset_at) / 1000 for wb, a in first.items()]
        leads = [
            (truth[wb].promise_broken_at - a.detected_at) / 1000  # type: ignore[operator]
            for wb, a in first.items()
            if truth[wb].promise_broken_at is not None
        ]
        types_out[kind.value] = _metrics(len(truth), alerted, precision, recall, delays, leads)
        types_out[kind.value].update(true_alerts=tp, false_alerts=fp, explained_by_incident=explained)
    false_normal = sum(1 for a in firing if a.waybill_id in normal)
    return {
        "scenario": scenario,
        "parcels": len(parcels),
        "normal_parcels": len(normal),
        "events": len(events),
        "alerts_firing": len(firing),
        "false_alerts_on_normal": false_normal,
        "false_alerts_per_1000_normal": round(1000 * false_normal / len(normal), 3) if normal else 0.0,
        "types": types_out,
    }


def _metrics(
    labelled: int, alerted: int, precision: float, recall: float, delays: list[float], leads: list[float]
) -> dict[str, Any]:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "labelled": labelled,
        "alerted": alerted,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
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
    precision = tp / len(alerts) if alerts else (1.0 if not windows else 0.0)
    recall = len(detected) / len(windows) if windows else 1.0
    delays = [(t - windows[k][1]) / 1000 for k, t in detected.items()]
    out = _metrics(len(windows), len(alerts), precision, recall, delays, [])
    out.update(true_alerts=tp, false_alerts=len(alerts) - tp, labelled_rows=sum(
        1 for lb in labels if lb.anomaly_type is AnomalyType.HUB_INCIDENT))
    return out


def backtest(
    events_path: str | Path,
    labels_path: str | Path,
    config: EngineConfig,
    *,
    partitions: int = 1,
    ticks_every_ms: int = 60_000,
    scenario: str | None = None,
) -> dict[str, Any]:
    events = list(read_events(events_path))
    labels = read_labels(labels_path)
    t0 = time.perf_counter()
    alerts = run_engine(events, config, partitions=partitions, ticks_every_ms=ticks_every_ms)
    seconds = time.perf_counter() - t0
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
            f"{name:<20} {m['labelled']:>8} {m['alerted']:>8} {m['precision']:>6.3f} {m['recall']:>6.3f} "
            f"{m['f1']:>6.3f} {m['delay_p50_s'] / 3600:>9.1f}h {m['delay_p90_s'] / 3600:>9.1f}h "
            f"{m['lead_p50_s'] / 3600:>8.1f}h"
        )
    lines.append(
        f"false alerts per 1000 normal parcels: {result['false_alerts_per_1000_normal']:.2f} "
        f"({result['false_alerts_on_normal']} alerts)"
    )
    return "\n".join(lines)
