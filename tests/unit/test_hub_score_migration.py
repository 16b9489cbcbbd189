"""The hub scorer's state is a typed ``HubScore`` per hub; snapshots from before it still restore.

Older hub-stage snapshots kept the Beta counts, the last on-time departure and the onset of a
bad run under negative keys of each hub's arrival buckets. A stage restored from such a
snapshot must go on exactly as one restored from the new format: same incidents, same state.
"""

from __future__ import annotations

import msgspec

from logiwatch.detectors.engine import Engine
from logiwatch.detectors.hub_incident import (
    OLD_ALPHA,
    OLD_BETA,
    OLD_LAST_DEPARTURE,
    OLD_RUN_ONSET,
    HubSummary,
)
from logiwatch.detectors.hub_stage import HubStage
from logiwatch.detectors.model import Alert
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.detectors.testing import H
from tests.unit.test_hub_incident import CONFIG, hub_scenario


def _summaries() -> list[HubSummary]:
    engine = Engine(CONFIG)
    out: list[HubSummary] = []
    for record in interleave_ticks(hub_scenario(outage=True).events(), H):
        engine.process([record])
        out.extend(engine.take_hub_summaries())
    return out


def _as_old_format(snapshot: bytes) -> bytes:
    blob = msgspec.msgpack.decode(snapshot)
    for hub, (alpha, beta, last, run) in blob.pop("scores").items():
        counts = blob["arrivals"].setdefault(hub, {})
        for key, value in ((OLD_ALPHA, alpha), (OLD_BETA, beta), (OLD_RUN_ONSET, run)):
            if value is not None:
                counts[key] = value
        counts[OLD_LAST_DEPARTURE] = last
    return msgspec.msgpack.encode(blob)


def _run(stage: HubStage, summaries: list[HubSummary]) -> list[Alert]:
    return [a for s in summaries for a in stage.offer(s)]


def test_an_old_snapshot_restores_into_the_same_stage() -> None:
    summaries = _summaries()
    whole = _run(HubStage(1, CONFIG.min_count, None), summaries)
    assert whole, "the outage must raise an incident, or this test checks nothing"
    learned = onset = False
    for cut in range(len(summaries) // 10, len(summaries), len(summaries) // 10):
        stage = HubStage(1, CONFIG.min_count, None)
        before = _run(stage, summaries[:cut])
        scores = stage.env.scores.values()
        learned |= any(s.alpha is not None for s in scores)
        onset |= any(s.run_onset is not None for s in scores)
        snapshot = stage.export()
        new = HubStage.restore(1, CONFIG.min_count, None, snapshot)
        old = HubStage.restore(1, CONFIG.min_count, None, _as_old_format(snapshot))
        assert old.env.scores == new.env.scores == stage.env.scores
        assert old.env.arrivals == new.env.arrivals
        rest_new, rest_old = _run(new, summaries[cut:]), _run(old, summaries[cut:])
        assert rest_old == rest_new
        assert before + rest_new == whole
        assert old.export() == new.export()
    assert learned and onset, "no cut caught a learned rate and a bad run being confirmed"
