"""What the CS console shows, computed from records: evidence in words, a parcel's
timeline with the running liability balance, the liability report, CSV export and
server-drawn SVG charts.

Pure functions over the alert service's records (no Redis, no HTTP), so the
pages' numbers are testable without a browser and the charts need no script
from anywhere: every chart is an ``<svg>`` drawn here, with a ``<title>`` and a
text table beside it on the page.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from logiwatch.alerts.liability import Entry
from logiwatch.alerts.model import AlertRecord, Notification
from logiwatch.detectors.model import Alert, AnomalyType


def hours(seconds: float) -> str:
    """``18.7 h`` (or minutes below an hour): the unit CS agents talk in.

    >>> hours(67320), hours(1500)
    ('18.7 h', '25 min')
    """

    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _count(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, int | float) else str(n)


def iso(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def evidence_words(rec: AlertRecord | Alert) -> str:
    """One sentence a CS agent can read to a buyer, from the alert's evidence.

    >>> from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity
    >>> a = Alert(alert_id="a", alert_type=AnomalyType.STALL, status=AlertStatus.FIRING, severity=Severity.WARNING,
    ...           detected_at=0, summary="", node_id="HUB-SH-1",
    ...           evidence={"dwell_s": 67320, "expected_dwell_p99_s": 23040, "baseline_n": 1240})
    >>> evidence_words(AlertRecord(alert=a, state="open", first_seen_ms=0, updated_ms=0))
    'no scan for 18.7 h at HUB-SH-1, usual p99 6.4 h, from 1,240 parcels'
    """

    a = rec.alert if isinstance(rec, AlertRecord) else rec
    ev = a.evidence
    at = a.node_id or "its last node"
    n = ev.get("baseline_n")
    source = f", from {_count(n)} parcels" if isinstance(n, int | float) and n else ""

    def num(key: str) -> float | None:
        v = ev.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    t = a.alert_type.value
    if t == "stall" and num("dwell_s") is not None:
        p99 = num("expected_dwell_p99_s")
        usual = f", usual p99 {hours(p99)}" if p99 else ""
        return f"no scan for {hours(num('dwell_s') or 0)} at {at}{usual}{source}"
    if t == "pickup_timeout" and num("waited_s") is not None:
        p99 = num("expected_pickup_p99_s")
        usual = f", usual p99 {hours(p99)}" if p99 else ""
        return f"waiting {hours(num('waited_s') or 0)} for carrier pickup{usual}{source}"
    if t == "abnormal_segment" and num("duration_s") is not None:
        p99 = num("expected_p99_s")
        usual = f", usual p99 {hours(p99)}" if p99 else ""
        moving = "still in transit" if ev.get("in_transit") else "arrived"
        return f"segment {ev.get('segment', '?')} took {hours(num('duration_s') or 0)} ({moving}){usual}{source}"
    if t == "likely_lost" and num("silent_s") is not None:
        limit = num("lost_threshold_s")
        beyond = f", beyond the {hours(limit)} lost threshold" if limit else ""
        return f"silent for {hours(num('silent_s') or 0)}{beyond}"
    if t == "late_dispatch":
        dispatch_by = ev.get("promised_dispatch_by")
        promised = f" (promised by {iso(int(dispatch_by))})" if isinstance(dispatch_by, int) else ""
        early = "likely to miss" if ev.get("early_warning") else "missed"
        return f"merchant {early} the dispatch promise{promised}{source}"
    if t == "predicted_late" and isinstance(ev.get("predicted_arrival"), int):
        pred, promised_by = int(ev["predicted_arrival"] or 0), ev.get("promised_delivery_by")
        late = a.predicted_lateness_s
        after = f", {hours(late)} after the promise" if late and late > 0 else ""
        prom = f" (promised {iso(int(promised_by))})" if isinstance(promised_by, int) else ""
        return f"predicted to arrive {iso(pred)}{after}{prom}{source}"
    if a.alert_type is AnomalyType.HUB_INCIDENT and num("overdue_parcels") is not None:
        share, expected = num("overdue_share"), num("expected_share")
        tail = f" ({share:.0%} overdue, usual {expected:.0%})" if share is not None and expected is not None else ""
        return f"{_count(ev['overdue_parcels'])} of {_count(ev.get('present_parcels', '?'))} parcels overdue at {at}{tail}"
    words = [f"{k.replace('_', ' ')} {v}" for k, v in sorted(ev.items()) if v is not None and not k.startswith("baseline")]
    return ", ".join(words[:6]) or a.summary


def running_balance(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Entries in booking order with the parcel's net after each, in yuan."""

    out: list[dict[str, Any]] = []
    balance = 0
    for e in entries:
        balance += e.amount_fen
        out.append(
            {
                "at": iso(e.at_ms),
                "at_ms": e.at_ms,
                "kind": e.kind,
                "party": e.party,
                "amount_yuan": e.amount_fen / 100,
                "rule_id": e.rule_id,
                "rule_version": e.rule_version,
                "reason": e.reason,
                "evidence": list(e.evidence),
                "entry_id": e.entry_id,
                "balance_yuan": balance / 100,
            }
        )
    return out


def timeline(
    recs: Iterable[AlertRecord],
    notifs: Iterable[Notification],
    entries: Sequence[Entry],
    revisions: dict[str, list[Alert]] | None = None,
) -> list[dict[str, Any]]:
    """One parcel's story, oldest first: every alert revision recorded (the latest record when
    none was), state changes, deliveries, ledger lines."""

    items: list[dict[str, Any]] = []
    for rec in recs:
        a = rec.alert
        for i, rev in enumerate((revisions or {}).get(a.alert_id) or [a]):
            items.append(
                {
                    "at_ms": (rev.onset_at or rev.detected_at) if i == 0 else rev.detected_at,
                    "kind": "alert",
                    "what": f"{rev.alert_type.value} ({rev.severity.value}, revision {rev.revision}, {rev.status.value})",
                    "detail": evidence_words(rev),
                    "alert_id": rev.alert_id,
                    "node_id": rev.node_id,
                    "region": rev.region,
                }
            )
        if rec.acknowledged_by:
            items.append({"at_ms": rec.updated_ms, "kind": "state", "what": f"acknowledged by {rec.acknowledged_by}", "detail": "", "alert_id": a.alert_id})
        if rec.resolved_by or rec.state.value == "resolved":
            items.append({"at_ms": rec.updated_ms, "kind": "state", "what": f"resolved by {rec.resolved_by or 'detector'}", "detail": "", "alert_id": a.alert_id})
        if rec.false_alarm:
            items.append({"at_ms": rec.updated_ms, "kind": "feedback", "what": "marked a false alarm", "detail": "", "alert_id": a.alert_id})
    for n in notifs:
        status = "delivered" if n.delivered_ms else ("failed: " + n.last_error if n.last_error else "pending")
        items.append(
            {
                "at_ms": n.created_ms,
                "kind": "delivery",
                "what": f"{n.kind.key} to {n.receiver}: {status}",
                "detail": f"{n.attempts} attempt(s), webhook-id {n.nid}",
                "alert_id": n.alert_id,
            }
        )
    for row in running_balance(entries):
        items.append(
            {
                "at_ms": row["at_ms"],
                "kind": "liability",
                "what": f"{row['kind']} {row['party']} {row['amount_yuan']:+.2f} yuan ({row['rule_id']} {row['rule_version']})",
                "detail": f"{row['reason']}; balance {row['balance_yuan']:.2f} yuan",
                "alert_id": row["evidence"][0] if row["evidence"] else None,
            }
        )
    items.sort(key=lambda i: (i["at_ms"] or 0, i["kind"]))
    for item in items:
        item["at"] = iso(item["at_ms"])
    return items


def liability_report(entries: Iterable[Entry]) -> dict[str, Any]:
    """Totals per party and per rule, split into charges, re-attributions and reversals (yuan)."""

    by_party: dict[str, dict[str, int]] = {}
    by_rule: dict[str, dict[str, int]] = {}
    n = 0
    for e in entries:
        n += 1
        bucket = _bucket(e)
        for table, key in ((by_party, e.party), (by_rule, e.rule_id)):
            row = table.setdefault(key, {"charged": 0, "reattributed": 0, "reversed": 0, "net": 0})
            row[bucket] += e.amount_fen
            row["net"] += e.amount_fen

    def yuan(table: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
        return [{"name": k, **{c: v / 100 for c, v in row.items()}} for k, row in sorted(table.items())]

    net = sum(r["net"] for r in by_party.values())
    return {"by_party": yuan(by_party), "by_rule": yuan(by_rule), "net_yuan": net / 100, "entries": n}


def _bucket(e: Entry) -> str:
    if e.kind == "reversal":
        return "reattributed" if e.reason.startswith("re-attributed") else "reversed"
    # a charge moved to another party by an exemption is a re-attribution too
    return "reattributed" if e.key.count("|") >= 3 and not e.key.startswith("false-alarm") else "charged"


CSV_FIELDS = ("entry_id", "at", "kind", "waybill_id", "order_id", "party", "amount_yuan", "currency", "rule_id", "rule_version", "reason", "evidence")


def liability_csv(entries: Iterable[Entry]) -> str:
    """The ledger lines as CSV (one row per entry, amounts in yuan, evidence ``;``-joined)."""

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_FIELDS)
    for e in entries:
        # a leading = + - @ makes spreadsheets evaluate a cell: quote text fields that start so
        reason = "'" + e.reason if e.reason[:1] in "=+-@" else e.reason
        w.writerow([e.entry_id, iso(e.at_ms), e.kind, e.waybill_id, e.order_id or "", e.party, f"{e.amount_fen / 100:.2f}", e.currency, e.rule_id, e.rule_version, reason, ";".join(e.evidence)])
    return buf.getvalue()


# ---------------------------------------------------------------------- SVG

_PALETTE = {"charged": "#1f5fa8", "reattributed": "#8a4f00", "reversed": "#2e7d32", "net": "#333333"}


def bar_chart_svg(rows: Sequence[dict[str, Any]], series: Sequence[str], title: str, unit: str = "yuan") -> str:
    """Grouped horizontal bars (one group per row, one bar per series), negative values to the left."""

    width, label_w, bar_h, gap = 640, 140, 12, 10
    height = 40 + len(rows) * (len(series) * bar_h + gap) + 24
    values = [abs(float(r.get(s, 0))) for r in rows for s in series] or [1.0]
    top = max(values) or 1.0
    half = (width - label_w - 20) / 2
    zero = label_w + half
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="t" font-family="system-ui, sans-serif" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="t">{escape(title)}</title>',
        f'<text x="4" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{zero:.1f}" y1="28" x2="{zero:.1f}" y2="{height - 20}" stroke="#666"/>',
    ]
    y = 34
    for r in rows:
        parts.append(f'<text x="4" y="{y + bar_h}" font-size="12">{escape(str(r["name"]))}</text>')
        for s in series:
            v = float(r.get(s, 0))
            w = abs(v) / top * half
            x = zero if v >= 0 else zero - w
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{_PALETTE.get(s, "#555")}">'
                f"<title>{escape(str(r['name']))} {s}: {v:,.2f} {unit}</title></rect>"
            )
            y += bar_h
        y += gap
    lx = label_w
    for s in series:
        parts.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{_PALETTE.get(s, "#555")}"/>')
        parts.append(f'<text x="{lx + 14}" y="{height - 7}" font-size="11">{escape(s)}</text>')
        lx += 110
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(points: Sequence[tuple[int, float]], title: str, unit: str) -> str:
    """A step line of (time ms, value) with min/max labels; an empty series says so."""

    width, height, pad = 640, 220, 44
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="t" font-family="system-ui, sans-serif" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="t">{escape(title)}</title>',
        f'<text x="4" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    if not points:
        parts.append(f'<text x="{pad}" y="{height / 2}" font-size="12">no data yet</text></svg>')
        return "".join(parts)
    t0, t1 = points[0][0], points[-1][0]
    vmax = max(v for _, v in points) or 1.0
    span = (t1 - t0) or 1

    def xy(t: int, v: float) -> tuple[float, float]:
        return pad + (t - t0) / span * (width - 2 * pad), height - pad - v / vmax * (height - 2 * pad)

    path = []
    prev_y = None
    for t, v in points:
        x, y = xy(t, v)
        if prev_y is not None:
            path.append(f"L{x:.1f},{prev_y:.1f}")
        path.append(("M" if prev_y is None else "L") + f"{x:.1f},{y:.1f}")
        prev_y = y
    parts += [
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#666"/>',
        f'<line x1="{pad}" y1="{pad / 2}" x2="{pad}" y2="{height - pad}" stroke="#666"/>',
        f'<path d="{" ".join(path)}" fill="none" stroke="#1f5fa8" stroke-width="2"/>',
        f'<text x="2" y="{pad / 2 + 10}" font-size="11">{vmax:,.0f} {escape(unit)}</text>',
        f'<text x="{pad}" y="{height - pad + 16}" font-size="11">{escape(iso(t0))}</text>',
        f'<text x="{width - pad}" y="{height - pad + 16}" font-size="11" text-anchor="end">{escape(iso(t1))}</text>',
    ]
    for t, v in points:
        x, y = xy(t, v)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f5fa8"><title>{escape(iso(t))}: {v:,.0f} {escape(unit)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
