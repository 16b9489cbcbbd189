"""Historical exports -> contract events (``logiwatch ingest import``).

Two tables, CSV (with a header row) or JSONL (by file suffix): an orders
table (one row per parcel: the shipment registration) and a scans table
(one row per scan). A small TOML maps the export's column names onto the
contract's fields (``[orders]`` and ``[scans]``: ``field = "column"``; a field
not mapped is read from the column of its own name) and, under
``[scans.event_types]``, the export's status values onto event types. Times
are epoch milliseconds, or ISO-8601 text (an offset-less time is read in the
zone of the row's country when one decides it, else as UTC).

Rows become :class:`~logiwatch.detectors.model.ShipmentRegistration` and
:class:`~logiwatch.detectors.model.Scan` records, validated by the same
msgspec types as the stream's edge. A row that does not convert goes to the
reject list with its file, line and reason; ``in = out + rejects`` per table.
The output is either the joined v1 scan events in event-time order (the
worker's join, :func:`logiwatch.streams.join.to_scan_event`, applied with
every registration known: a JSONL file for ``logiwatch backtest``), or the
v2 records themselves for Kafka.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from logiwatch.detectors.model import Scan, ScanEvent, ShipmentRegistration
from logiwatch.streams.ingest.locations import TimeError, to_utc_ms
from logiwatch.streams.join import JoinConfig, to_scan_event

_TIME_FIELDS = {"registered_at", "updated_at", "promised_dispatch_by", "promised_delivery_by", "event_time"}
_REG_FIELDS = set(ShipmentRegistration.__struct_fields__) - {"schema_version"}
_SCAN_FIELDS = set(Scan.__struct_fields__) - {"schema_version"}


@dataclass(frozen=True)
class Mapping_:
    """Column names per contract field, and export status -> event type."""

    orders: dict[str, str] = field(default_factory=dict)
    scans: dict[str, str] = field(default_factory=dict)
    event_types: dict[str, str] = field(default_factory=dict)


def mapping_from(doc: Mapping[str, Any]) -> Mapping_:
    """The mapping from a parsed TOML document; ``ValueError`` names a wrong entry."""

    orders = dict(doc.get("orders", {}))
    scans = dict(doc.get("scans", {}))
    event_types = dict(scans.pop("event_types", {}))
    for name, table, fields in (("orders", orders, _REG_FIELDS), ("scans", scans, _SCAN_FIELDS)):
        for key, value in table.items():
            if key not in fields:
                raise ValueError(f"[{name}] maps unknown field {key!r} (fields: {', '.join(sorted(fields))})")
            if not isinstance(value, str):
                raise ValueError(f"[{name}] {key} must be a column name (a string)")
    return Mapping_(orders, scans, {str(k): str(v) for k, v in event_types.items()})


@dataclass(frozen=True)
class Reject:
    file: str
    line: int
    reason: str

    def to_json(self) -> str:
        return json.dumps({"file": self.file, "line": self.line, "reason": self.reason}, ensure_ascii=False)


@dataclass
class Imported:
    registrations: list[ShipmentRegistration] = field(default_factory=list)
    scans: list[Scan] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rows_in: dict[str, int] = field(default_factory=dict)

    def joined(self, config: JoinConfig | None = None) -> list[ScanEvent]:
        """v1 scan events in event-time order (ties keep the file order), each registration applied."""

        config = config or JoinConfig()
        regs = {r.waybill_id: r for r in sorted(self.registrations, key=lambda r: r.version_ms)}
        first: dict[str, int] = {}
        for s in self.scans:
            first[s.waybill_id] = min(first.get(s.waybill_id, s.event_time), s.event_time)
        out = [to_scan_event(s, regs.get(s.waybill_id), first[s.waybill_id], config) for s in self.scans]
        out.sort(key=lambda e: e.event_time)
        return out


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV (header row first) or JSONL table."""

    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, {"\x00error": f"bad_json: {exc.msg}"}
                    continue
                yield lineno, row if isinstance(row, dict) else {"\x00error": "not_object: the line is not an object"}
        return
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            yield reader.line_num, dict(row)


def _time(value: Any, country: str | None) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return to_utc_ms(text, country=country)[0]
    except TimeError as exc:
        raise ValueError(str(exc)) from None


def _convert(row: Mapping[str, Any], columns: Mapping[str, str], fields: set[str], types: Mapping[str, str]) -> dict[str, Any]:
    if "\x00error" in row:
        raise ValueError(row["\x00error"])
    out: dict[str, Any] = {}
    for name in fields:
        col = columns.get(name, name)
        value = row.get(col)
        if value is None or value == "":
            continue  # absent: optional fields stay None, required ones fail below
        if name in _TIME_FIELDS:
            value = _time(value, row.get(columns.get("country", "country")))
        elif name == "event_type":
            value = types.get(str(value), str(value))
        elif name in ("order_amount", "lat", "lon") and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{name} {value!r} is not a number") from None
        out[name] = value
    out["schema_version"] = 2
    return out


def import_tables(orders: Path | None, scans: Path, mapping: Mapping_) -> Imported:
    """Read both tables; every bad row is a reject with its reason, nothing stops the import."""

    result = Imported()
    if orders is not None:
        n = 0
        for lineno, row in read_rows(orders):
            n += 1
            try:
                reg = msgspec.convert(_convert(row, mapping.orders, _REG_FIELDS, {}), ShipmentRegistration)
            except (ValueError, msgspec.ValidationError) as exc:
                result.rejects.append(Reject(str(orders), lineno, str(exc)))
                continue
            result.registrations.append(reg)
        result.rows_in["orders"] = n
    n = 0
    for lineno, row in read_rows(scans):
        n += 1
        try:
            data = _convert(row, mapping.scans, _SCAN_FIELDS, mapping.event_types)
            data.setdefault("source", "import")
            scan = msgspec.convert(data, Scan)
        except (ValueError, msgspec.ValidationError) as exc:
            result.rejects.append(Reject(str(scans), lineno, str(exc)))
            continue
        result.scans.append(scan)
    result.rows_in["scans"] = n
    return result
