"""The traffic simulator: realistic, labelled logistics traffic for tests, demos and backtests.

``network`` is the fixed, seeded world (regions, hubs, lanes, carriers,
merchants); ``scenarios`` the seasons and what each kind of tracking feed
shows; ``context`` one run (its seeded generator, incidents, calendar) and a
parcel's records; ``journeys`` moves one parcel through the network,
``anomalies`` injects what goes wrong and labels it, ``labels`` completes the
labels of a finished journey; ``traffic`` puts it together, adds the noise of
real feeds and makes malformed records (``from logiwatch.sim.traffic import
generate``). See ``docs/simulator.md``.
"""
