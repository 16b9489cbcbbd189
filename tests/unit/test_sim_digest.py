"""The simulator's output is pinned: the same arguments give the same events and labels, byte for byte.

The digests were computed on main at 01347ae (``sim/traffic.py`` in one
module, before it was split into scenarios, context, journeys, anomalies and
labels) with the function below; a change that moves a single random draw,
event field or label changes them. When a change to the simulator is meant
to change its output, recompute them and say so in the commit.
"""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from logiwatch.sim.traffic import generate, incidents


def digest(scenario: str, seed: int, parcels: int) -> tuple[int, int, str]:
    events, labels = generate(scenario, seed=seed, parcels=parcels)
    h = hashlib.sha256()
    for item in (*events, *labels):
        h.update(msgspec.json.encode(item))
        h.update(b"\n")
    h.update(repr(incidents(scenario, seed)).encode())
    return len(events), len(labels), h.hexdigest()


@pytest.mark.parametrize(
    ("scenario", "seed", "parcels", "expected"),
    [
        ("default", 1, 1500, (14930, 564, "b4bf6c27f23dcb33788c0669b78786109a4b98ee6fb6212c2a6fb79741005d92")),
        ("peak", 3, 500, (14875, 641, "8d31b971cf0d6f19bc06ef101d7df665bacb33893e80799ec4d72340a650f2d1")),
        # recomputed for b436eba's sparse scenario (generous promises, held-up parcels; the split
        # modules give the unsplit module's output for it: sparse seed 21, 4,000 parcels, same bytes)
        ("sparse", 5, 1500, (6910, 362, "599ad1b43c86abc7d89e0b080916a2b72a3f015b94fbac311c1465e60d5d21f2")),
        ("mixed", 7, 1500, (10890, 354, "e5f2131fcbf12f46e19923ecf5a65a916f1ab04a6931be27c9844a3d23d325bd")),
    ],
)
def test_generate_gives_the_output_main_gave_for_the_same_arguments(
    scenario: str, seed: int, parcels: int, expected: tuple[int, int, str]
) -> None:
    assert digest(scenario, seed, parcels) == expected
