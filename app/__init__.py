"""logiwatch: an always-on streaming logistics anomaly monitor.

Reading guide (data flows one way):

* ``logiwatch.detectors`` (folder ``detectors/``): the pure core. Scan-event
  and alert contracts, the codec, the detection engine and its detectors.
* ``logiwatch.streams`` (``streams/``): the Kafka shell around the engine.
* ``logiwatch.alerts`` (``alerts/``): dedup, grouping, webhooks, lifecycle,
  the liability ledger and the CS board.
* this package (``app/``): the glue. ``cli`` parses commands, ``config``
  builds the one settings object, ``stack`` runs the embedded Tansu + Redis,
  ``simulator`` makes realistic labelled traffic, ``commands/`` holds one
  module per CLI command.
"""

__version__ = "0.1.0"
