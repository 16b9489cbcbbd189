"""The front door: tracking-feed adapters, the HTTP receiver and historical imports.

Contract v2 (``docs/events.md``) is what the feeds can actually give: slim
scans keyed by waybill, with raw locations and local times. Each adapter
(:mod:`.aftership`, :mod:`.seventeentrack`, :mod:`.kuaidi100`) is a pure
mapper from its vendor's push to :class:`~logiwatch.detectors.model.Scan`
records plus a signature check; :mod:`.locations` normalises places into
stable node ids and times into UTC; :mod:`.receiver` is the aiohttp server
(``logiwatch ingest serve``) that checks, maps, deduplicates and produces
before it answers; :mod:`.importer` turns orders and scans tables into
contract events (``logiwatch ingest import``).
"""
