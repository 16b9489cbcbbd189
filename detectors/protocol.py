"""The detector protocol: what a detector declares, and how the engine derives its run from that.

A **parcel detector** (:class:`ParcelDetector`) looks at one parcel at a time. Its
:class:`Contract` (the class attribute ``contract``) declares

- ``handles``: the scan type codes its ``on_event`` acts on (the engine calls it for those only);
- ``emits``: the alert types it raises and each one's lifecycle (:class:`Emits`): resolved by the
  parcel's next scan, by the detector itself, or a sticky fact about the journey;
- ``owns``: its private per-parcel values (:class:`Slot`: typed, kept in the parcel's compact
  state between scans; no other detector reads them);
- ``provides`` / ``needs``: the per-parcel values it offers to others and the ones it reads from
  others (e.g. the silence a parcel's stage allows, offered by stall and abnormal segment and read
  by likely-lost); ``reads_alerts``: the alert types of others whose records it reads (its
  ``on_alert`` runs when one of them fires for the parcel);
- ``baselines``: the duration baselines it owns (name -> factory of the minimum count), and
  ``tables``: its other learned models (named dicts). The engine builds, exports, restores and
  pools them by name: a detector's models need no engine edit.

Deadlines go through :meth:`DetectorBase.set_due` (a parcel has one deadline per detector, kept
in the state the engine owns and read by its deadline heap); when one comes the engine calls
``on_deadline``. The engine derives the evaluation order from the declarations
(:func:`evaluation_order`: a reader after every writer of what it reads, otherwise the order of
registration) and checks the contract when it starts (:func:`check_contract`).

An **aggregate recorder** (:class:`AggregateRecorder`, hub incidents) sees the same scans but
raises nothing per parcel: it records facts the engine hands out per clock tick to a stage that
scores them over every partition (``detectors/hub_stage.py``).

Register a new detector with one line in ``detectors/registry.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from logiwatch.detectors.baselines import DurationBaseline
from logiwatch.detectors.model import AnomalyType, ScanEvent

if TYPE_CHECKING:
    from logiwatch.detectors.hub_incident import HubFact
    from logiwatch.detectors.state import Finding, ParcelState, RouteEntry

T = TypeVar("T", int, float, bool)

#: every scan type code (``state.TYPES`` has ten)
ALL_SCANS: frozenset[int] = frozenset(range(10))


class Slot(Generic[T]):
    """One typed per-parcel value a detector keeps between scans.

    Stored in the parcel's compact state (``ParcelState.note``, one small map per parcel, so an
    idle parcel stays a few hundred encoded bytes), under ``key``; detectors never touch that map
    themselves. ``kind`` is the value's type (``int``, ``float`` or ``bool``): :meth:`get` gives
    it back as that type.

    >>> from logiwatch.detectors.state import ParcelState
    >>> anchor = Slot("stall_anchor", int)
    >>> st = ParcelState("WB1", "O1", "M1", "C1", "", 0.0, "A", "B", 0, 0)
    >>> anchor.get(st) is None
    True
    >>> anchor.set(st, 1_700_000_000_000)
    >>> anchor.get(st), anchor.take(st), anchor.get(st)
    (1700000000000, 1700000000000, None)
    """

    __slots__ = ("key", "kind")

    def __init__(self, key: str, kind: type[T]) -> None:
        self.key = key
        self.kind: type[T] = kind

    def get(self, state: ParcelState) -> T | None:
        v = state.note.get(self.key)
        return None if v is None else self.kind(v)

    def value(self, state: ParcelState, default: T) -> T:
        v = state.note.get(self.key)
        return default if v is None else self.kind(v)

    def has(self, state: ParcelState) -> bool:
        return self.key in state.note

    def set(self, state: ParcelState, value: T) -> None:
        # a flag is stored as 0/1: the map decodes as floats, and msgpack's true is no float
        state.note[self.key] = int(value) if self.kind is bool else value

    def clear(self, state: ParcelState) -> None:
        state.note.pop(self.key, None)

    def take(self, state: ParcelState) -> T | None:
        """The value, removed."""

        v = state.note.pop(self.key, None)
        return None if v is None else self.kind(v)

    def __repr__(self) -> str:
        return f"Slot({self.key!r}, {self.kind.__name__})"


#: a slot of any kind (what the declarations list)
AnySlot = Slot[int] | Slot[float] | Slot[bool]


class Lifecycle(enum.Enum):
    """How an open alert of a type ends."""

    #: the parcel's next scan closes it (it moved again), as does its delivery
    RESOLVE_ON_MOVE = "resolve_on_move"
    #: the detector closes it with a RESOLVED finding (e.g. the dispatch came), or the delivery does
    SELF = "self"
    #: a fact about the journey: it stays open after the delivery, closed when the parcel is forgotten
    STICKY = "sticky"


@dataclass(frozen=True)
class Emits:
    """An alert type a detector raises, and its lifecycle.

    ``benign``: an open alert of this type does not mark the parcel's durations as abnormal for
    learning (a forecast is not an anomaly of the journey).
    """

    alert_type: AnomalyType
    lifecycle: Lifecycle
    benign: bool = False


class ScanContext:
    """What the engine knows about the scan being processed, handed to every ``on_event``.

    ``prev``: the parcel's latest scan before this one (None for its first scan, or when this scan
    is out of order); ``latest``: this scan is the parcel's newest; ``code``: its scan type code.
    """

    __slots__ = ("prev", "latest", "code")

    def __init__(self) -> None:
        self.prev: RouteEntry | None = None
        self.latest = True
        self.code = 0


#: a duration baseline's factory: the engine's ``min_count`` -> the baseline
BaselineFactory = Callable[[int], DurationBaseline]

#: what a detector returns when it finds nothing (one shared empty tuple, no allocation)
NO_FINDINGS: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Contract:
    """What a detector declares (see the module docstring); one per detector class, ``contract``."""

    #: scan type codes its ``on_event`` (``observe``) acts on
    handles: frozenset[int] = ALL_SCANS
    emits: tuple[Emits, ...] = ()
    #: its private per-parcel values
    owns: tuple[AnySlot, ...] = ()
    #: per-parcel values it writes for others to read
    provides: tuple[AnySlot, ...] = ()
    #: per-parcel values of others it reads (it runs after every detector that provides one)
    needs: tuple[AnySlot, ...] = ()
    #: alert types of others whose records (``state.open`` / ``state.fired``) it reads
    reads_alerts: tuple[AnomalyType, ...] = ()
    #: duration baselines it owns: name -> factory of the engine's ``min_count``
    baselines: Mapping[str, BaselineFactory] = field(default_factory=dict)
    #: other learned models it owns, as named tables (dicts) in the engine's models blob
    tables: tuple[str, ...] = ()


class ParcelDetector(Protocol):
    """The protocol every parcel detector follows (see the module docstring).

    Built by the engine as ``cls(env, **knobs)``: ``env`` is the engine's
    :class:`~logiwatch.detectors.state.Env` (models, calendar), the knobs its keyword-only
    settings (``detection.knobs.<name>`` in the configuration).
    """

    name: ClassVar[str]
    contract: ClassVar[Contract]

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]: ...

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]: ...

    def on_alert(self, state: ParcelState, alert_type: AnomalyType, at_ms: int) -> Sequence[Finding]:
        """An alert of a type in ``contract.reads_alerts`` just fired for the parcel (at ``at_ms``)."""
        ...


class AggregateRecorder(Protocol):
    """A recorder of facts over many parcels (hub incidents): it sees scans, raises nothing itself.

    The engine hands its facts out per clock tick (``Engine.take_hub_summaries``) and keeps the
    pending ones in its checkpoint. Of its contract only ``handles`` and ``needs`` apply.
    """

    name: ClassVar[str]
    contract: ClassVar[Contract]
    pending: list[HubFact]

    def observe(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> None: ...


class DetectorBase:
    """The one way to set a deadline (and a default, empty contract)."""

    name: ClassVar[str]
    contract: ClassVar[Contract] = Contract()

    def on_alert(self, state: ParcelState, alert_type: AnomalyType, at_ms: int) -> Sequence[Finding]:
        return NO_FINDINGS

    def set_due(self, state: ParcelState, at_ms: int | None) -> None:
        """This detector's deadline for the parcel (None: no deadline); ``on_deadline`` runs when it comes."""

        if at_ms is None:
            state.due.pop(self.name, None)
        else:
            state.due[self.name] = int(at_ms)


class ContractError(ValueError):
    """The registered detectors' declarations do not fit together."""


def check_contract(parcel: Sequence[type[ParcelDetector]], aggregate: Sequence[type[AggregateRecorder]] = ()) -> None:
    """Raise :class:`ContractError` if the declarations contradict each other.

    Names are unique; a private value has one owner and no other detector provides it; every
    value needed is provided by some registered detector; an alert type has one emitter; every
    baseline and table has one owner.
    """

    every: list[type[ParcelDetector] | type[AggregateRecorder]] = [*parcel, *aggregate]
    names = [c.name for c in every]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ContractError(f"detector names registered twice: {dup}")
    owner: dict[str, str] = {}
    provided: set[str] = set()
    for cls in parcel:
        for s in cls.contract.owns:
            if s.key in owner:
                raise ContractError(f"{cls.name} owns {s.key!r}, already owned by {owner[s.key]}")
            owner[s.key] = cls.name
        provided.update(s.key for s in cls.contract.provides)
    both = sorted(provided & set(owner))
    if both:
        raise ContractError(f"values both private and provided: {both}")
    for cls2 in every:
        for s in cls2.contract.needs:
            if s.key not in provided:
                raise ContractError(f"{cls2.name} needs {s.key!r}, which no registered detector provides")
    emitter: dict[AnomalyType, str] = {}
    for cls in parcel:
        for e in cls.contract.emits:
            if e.alert_type in emitter:
                raise ContractError(f"{cls.name} and {emitter[e.alert_type]} both emit {e.alert_type.value}")
            emitter[e.alert_type] = cls.name
    for cls in parcel:
        for t in cls.contract.reads_alerts:
            if t not in emitter:
                raise ContractError(f"{cls.name} reads {t.value} alerts, which no registered detector emits")
    models: dict[str, str] = {}
    for cls in parcel:
        for m in (*cls.contract.baselines, *cls.contract.tables):
            if m in models:
                raise ContractError(f"model {m!r} owned by both {models[m]} and {cls.name}")
            models[m] = cls.name


def evaluation_order(parcel: Sequence[type[ParcelDetector]]) -> tuple[type[ParcelDetector], ...]:
    """The detectors in an order where each runs after every detector whose output it reads.

    A detector that ``needs`` a value runs after every detector that provides it (and writes it);
    one that ``reads_alerts`` of a type, after the detector that emits it. Among detectors free to
    go, the one registered first goes first, so the order is the registration order wherever the
    declarations allow it. A cycle raises :class:`ContractError`.

    >>> from logiwatch.detectors.registry import BUILT_IN
    >>> [c.name for c in evaluation_order(BUILT_IN.parcel)][:4]
    ['contradiction', 'late_dispatch', 'pickup_timeout', 'stall']
    """

    index = {c: i for i, c in enumerate(parcel)}
    after: dict[type[ParcelDetector], set[type[ParcelDetector]]] = {c: set() for c in parcel}
    emitter = {e.alert_type: c for c in parcel for e in c.contract.emits}
    for c in parcel:
        needed = {s.key for s in c.contract.needs}
        for other in parcel:
            if other is not c and needed & {s.key for s in other.contract.provides}:
                after[c].add(other)
        for t in c.contract.reads_alerts:
            src = emitter.get(t)
            if src is not None and src is not c:
                after[c].add(src)
    done: list[type[ParcelDetector]] = []
    left = set(parcel)
    while left:
        ready = [c for c in left if not (after[c] & left)]
        if not ready:
            raise ContractError(f"detectors read each other in a cycle: {sorted(c.name for c in left)}")
        first = min(ready, key=index.__getitem__)
        done.append(first)
        left.discard(first)
    return tuple(done)


def lifecycle_sets(parcel: Iterable[type[ParcelDetector]]) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(types resolved on the next scan, sticky types, benign types), as alert type values."""

    emits = [e for c in parcel for e in c.contract.emits]
    on_move = frozenset(e.alert_type.value for e in emits if e.lifecycle is Lifecycle.RESOLVE_ON_MOVE)
    sticky = frozenset(e.alert_type.value for e in emits if e.lifecycle is Lifecycle.STICKY)
    benign = frozenset(e.alert_type.value for e in emits if e.benign)
    return on_move, sticky, benign
