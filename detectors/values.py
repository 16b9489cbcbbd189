"""The per-parcel values detectors offer each other (declared in ``provides`` / ``needs``).

Each is a typed :class:`~logiwatch.detectors.protocol.Slot`; its key is the name it has in a
parcel's checkpointed state, so these names are part of the checkpoint format.
"""

from __future__ import annotations

from logiwatch.detectors.protocol import Slot

#: event time of a scan the contradiction detector found impossible (a teleport): the others
#: neither learn from it nor take it as where the parcel is
TELEPORT_AT = Slot("teleport_at", int)
#: the silence (s) the parcel's current stage allows before it is overdue: the stall threshold at
#: a node, the leg limit in transit; likely-lost waits a multiple of it
SILENCE_LIMIT_S = Slot("silence_ref_s", float)
#: set while that silence is not learned yet (a cold key): nothing may be concluded from it
SILENCE_COLD = Slot("silence_cold", bool)
#: the stall threshold (s) last armed at the parcel's node (likely-lost's evidence)
STALL_THRESHOLD_S = Slot("stall_thr_s", float)
