"""logiwatch: an always-on streaming logistics anomaly monitor.

Reading guide. Data flows one way: scans -> ``streams`` -> ``detectors`` ->
alerts -> ``alerts`` -> webhooks, ledger. Every folder is one import root's
subpackage (``pyproject.toml`` maps them), and import-linter checks the
layers below in ``make lint``: a module may import the layers under it,
never those above, and modules side by side in one layer not each other.

=================  ======================  ==============================================
folder             import                  what
=================  ======================  ==============================================
``detectors/``     ``logiwatch.detectors``  the pure core: scan-event and alert contracts,
                                           codec, engine, one module per detector, river
                                           baselines; imports nothing of ours and no I/O
``streams/``       ``logiwatch.streams``    the Kafka shell: the Faust worker, topics, dead
                                           letters, batching, ticks, state snapshots, its
                                           metrics
``alerts/``        ``logiwatch.alerts``     the action shell: inhibit, mute, group, dedup,
                                           deliver with retry, record; liability rules and
                                           ledger; the HTTP API and CS board
``app/``           ``logiwatch``            the glue (below)
``bench/``         ``logiwatch.bench``      the benchmark harness, one module per phase
``sim/``           ``logiwatch.sim``        the simulator: ``network`` (the seeded world),
                                           ``scenarios`` (seasons, feed kinds), ``context``
                                           (one run), ``journeys``, ``anomalies``,
                                           ``labels``, ``traffic`` (``generate``, noise)
``tests/``         (not installed)          ``unit/`` (no I/O), ``integration/`` (real Tansu,
                                           Redis, receivers), ``faults/``, ``ops/``
``docs/``                                  contracts, operations, figures
``deploy/``                                Prometheus rules, Grafana dashboards
``scripts/``                               lint and test helpers
=================  ======================  ==============================================

The glue, top layer first:

* ``cli`` parses the command line; ``commands/`` has one module per command
  (``configure(parser)``, ``run(args, settings)``), which only turns options
  into a call to a layer below (``commands/_kafka`` holds the topic check the
  Kafka commands share);
* ``bench`` (folder ``bench/``): ``logiwatch bench``; ``demo``: ``logiwatch demo``,
  every piece side by side with a verifying webhook receiver;
* ``stack`` runs the embedded Tansu + Redis; ``backtest`` scores the engine
  on a labelled log; ``producer`` plays events (and clock ticks) to Kafka;
  ``sim`` (folder ``sim/``) makes realistic labelled traffic; these sit
  beside ``alerts`` and ``streams`` and do not import them or each other;
* ``config`` builds the one settings object (only the CLI builds it, then
  passes it down); ``logging`` sets up log output; ``errors`` is the error tree.
"""

__version__ = "0.1.0"
