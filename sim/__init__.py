"""The traffic simulator: realistic, labelled logistics traffic for tests, demos and backtests.

``network`` is the fixed, seeded world (regions, hubs, lanes, carriers,
merchants); ``traffic`` moves parcels through it, injects labelled anomalies
and hub incidents, adds the noise of real feeds and makes malformed records
(``from logiwatch.sim.traffic import generate``). See ``docs/simulator.md``.
"""
