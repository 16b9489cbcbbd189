"""The registered detectors: one line each (the order is the default evaluation order).

Adding a detector is its module and one line in ``BUILT_IN`` below. The engine builds every
enabled detector from its class, derives the evaluation order from what each declares it reads
and writes (``protocol.evaluation_order``), and builds, exports, restores and pools the models
each declares. A :class:`Registry` checks the declarations when it is made
(``protocol.check_contract``), so declarations that contradict each other fail at import,
naming the detectors. ``EngineConfig.registry`` picks the registry an engine runs (the
built-in one unless a caller brings its own detectors, e.g. a test).
"""

from __future__ import annotations

from collections.abc import Mapping

from logiwatch.detectors import (
    abnormal_segment,
    contradiction,
    hub_incident,
    late_dispatch,
    lost,
    pickup_timeout,
    predicted_late,
    route,
    stall,
    suspicious_delivery,
)
from logiwatch.detectors.protocol import (
    AggregateRecorder,
    BaselineFactory,
    ContractError,
    ParcelDetector,
    check_contract,
    lifecycle_sets,
)

#: keys of the engine's models blob that are its own (a model table may not take one)
CORE_MODEL_KEYS = frozenset(
    {"version", "max_time", "baselines", "hub_pending", "hub_summaries", "feeds", "pool_epochs", "pool_delta"}
)


class Registry:
    """A set of detectors an engine can run, with what their contracts add up to."""

    def __init__(
        self, parcel: tuple[type[ParcelDetector], ...], aggregate: tuple[type[AggregateRecorder], ...] = ()
    ) -> None:
        check_contract(parcel, aggregate)
        self.parcel = parcel
        self.aggregate = aggregate
        every: list[type[ParcelDetector] | type[AggregateRecorder]] = [*parcel, *aggregate]
        #: every detector by name (what ``EngineConfig.detectors`` and ``detection.knobs`` name)
        self.by_name: Mapping[str, type[ParcelDetector] | type[AggregateRecorder]] = {c.name: c for c in every}
        #: alert types resolved by the next scan, sticky ones, and benign ones (as type values)
        self.resolve_on_move, self.sticky, self.benign = lifecycle_sets(parcel)
        #: every detector's baselines (name -> factory) and model tables, in registration order:
        #: an engine builds them all, enabled or not, so disabling a detector keeps its models
        self.baselines: Mapping[str, BaselineFactory] = {
            n: f for c in parcel for n, f in c.contract.baselines.items()
        }
        self.tables: tuple[str, ...] = tuple(t for c in parcel for t in c.contract.tables)
        clash = sorted(set(self.tables) & CORE_MODEL_KEYS)
        if clash:
            raise ContractError(f"model tables {clash} take names of the engine's own models")

    def with_detector(self, cls: type[ParcelDetector]) -> Registry:
        """This registry and one more parcel detector (registered last)."""

        return Registry((*self.parcel, cls), self.aggregate)


BUILT_IN = Registry(
    (
        contradiction.ContradictionDetector,
        late_dispatch.LateDispatchDetector,
        pickup_timeout.PickupTimeoutDetector,
        stall.StallDetector,
        abnormal_segment.AbnormalSegmentDetector,
        lost.LostDetector,
        route.MisrouteDetector,
        suspicious_delivery.SuspiciousDeliveryDetector,
        predicted_late.PredictedLateDetector,
    ),
    (hub_incident.HubFactsRecorder,),
)

#: the built-in detectors by name
DETECTORS = BUILT_IN.by_name
