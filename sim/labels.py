"""The labels a finished journey earns beyond its injected anomaly: what the feed shows, incidents, promises.

The anomalies label themselves where they strike (:mod:`~logiwatch.sim.anomalies`).
Once a journey ends, three rules complete the parcel's labels, exactly as
``docs/simulator.md`` states them and ``tests/unit/test_simulator.py``
recomputes them from the events: the carrier's feed drops the scans it does
not carry (and with them what it cannot show), every hub visit that overlaps
an incident window is labelled with the incident, and a broken promise is
labelled ``PREDICTED_LATE`` at the onset of its earliest cause. No draws.
"""

from __future__ import annotations

import msgspec

from logiwatch.detectors.model import AnomalyType, EventType
from logiwatch.sim.context import Parcel, SimContext
from logiwatch.sim.scenarios import FEEDS

A = AnomalyType


def apply_feed(p: Parcel) -> None:
    """Drop the scans the parcel's feed does not carry; relabel what the feed shows differently."""

    shown = FEEDS[p.feed][0]
    if shown is None:
        return
    p.scans = [s for s in p.scans if s.etype in shown]
    if EventType.DISPATCHED not in shown:
        # no merchant dispatch scan: a late dispatch is a late hand-over to the carrier
        p.labels = [lb for lb in p.labels if lb.anomaly_type is not A.LATE_DISPATCH]
        handover = next((s.time for s in p.scans if s.etype is EventType.PICKED_UP), None)
        if handover is not None and handover > p.promised_dispatch_by:
            p.label(A.LATE_DISPATCH, p.promised_dispatch_by, p.merchant.node.node_id,
                    "handed to the carrier after promised_dispatch_by")
    if EventType.HUB_ARRIVED not in shown:
        p.visits = []  # hub incidents are not visible in this feed


def label_incidents(ctx: SimContext, p: Parcel) -> None:
    """A ``HUB_INCIDENT`` label for every visit to a hub while it was down."""

    for hub_id, arrived, departed in p.visits:
        inc = ctx.incidents_at.get(hub_id)
        if inc is not None and arrived < inc.end_ms and (departed is None or departed >= inc.start_ms):
            p.label(
                A.HUB_INCIDENT,
                max(inc.start_ms, arrived),
                hub_id,
                f"window {inc.start_ms}..{inc.end_ms}",
                incident=inc.incident_id,
            )


def label_promise(p: Parcel) -> None:
    """``PREDICTED_LATE`` when the promise broke, and every label's ``promise_broken_at``."""

    final_t = min((s.time for s in p.scans if s.etype in (EventType.DELIVERED, EventType.RETURNED)), default=None)
    broken = final_t is None or final_t > p.promised_delivery_by
    if broken:
        causes = [lb.onset_at for lb in p.labels if lb.onset_at <= p.promised_delivery_by]
        if causes:
            onset = min(causes)
            detail = "promise broken; cause: " + ",".join(sorted({lb.anomaly_type.value for lb in p.labels}))
        else:
            onset = max(s.time for s in p.scans if s.time <= p.promised_delivery_by)
            detail = "promise broken by normal variability"
        p.label(A.PREDICTED_LATE, onset, None, detail)
    p.labels = [
        msgspec.structs.replace(lb, promise_broken_at=p.promised_delivery_by if broken else None) for lb in p.labels
    ]
