"""The simulated logistics world: regions, hubs, outlets, stations, carriers, merchants.

A fixed, seeded network that :mod:`logiwatch.sim.traffic` moves parcels
through. Ten Chinese-style regions with real city coordinates; each has a
gateway hub (which does the inter-region line-haul) and zero to two local
sorting hubs, first-mile outlets tied to a hub, and last-mile stations. Hubs
send line-haul trucks on a daily departure schedule, so a parcel waits for
the next truck: that waiting is why normal dwell is multi-modal. Carriers
differ in speed, reliability and working days (two do not work on Sundays).
The network is built from its own seed, independent of the scenario seed, so
every run happens in the same world. All clock hours are UTC hours: the
simulated world and the event contract share one clock (see
``docs/simulator.md``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from logiwatch.detectors.model import NodeType

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

#: Road distance is longer than the great circle; trucks average this speed.
ROAD_FACTOR = 1.25
TRUCK_KMH = 65.0


@dataclass(frozen=True)
class RegionSpec:
    name: str
    code: str
    lat: float
    lon: float
    origin_weight: float  # share of merchants (e-commerce clusters in the east and south)
    dest_weight: float  # share of buyers
    hubs: int  # sorting hubs, the first one is the gateway


REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("shanghai", "SH", 31.23, 121.47, 0.14, 0.10, 2),
    RegionSpec("zhejiang", "ZJ", 30.27, 120.16, 0.24, 0.11, 3),
    RegionSpec("jiangsu", "JS", 32.06, 118.80, 0.14, 0.12, 2),
    RegionSpec("guangdong", "GD", 23.13, 113.26, 0.24, 0.15, 3),
    RegionSpec("fujian", "FJ", 26.07, 119.30, 0.10, 0.07, 1),
    RegionSpec("beijing", "BJ", 39.90, 116.41, 0.06, 0.10, 2),
    RegionSpec("hubei", "HB", 30.59, 114.31, 0.03, 0.09, 2),
    RegionSpec("sichuan", "SC", 30.57, 104.07, 0.02, 0.10, 2),
    RegionSpec("shaanxi", "SN", 34.34, 108.94, 0.02, 0.07, 1),
    RegionSpec("liaoning", "LN", 41.81, 123.43, 0.01, 0.09, 1),
)


@dataclass(frozen=True)
class Node:
    node_id: str
    node_type: NodeType
    region: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Hub:
    node: Node
    gateway: bool
    #: UTC hours at which line-haul trucks leave (daily cycle).
    departures_h: tuple[float, ...]
    #: median sorting time of an arriving parcel, hours (log-normal).
    processing_median_h: float


@dataclass(frozen=True)
class Carrier:
    carrier_id: str
    speed: float  # line-haul speed multiplier
    anomaly_factor: float  # multiplies every per-parcel anomaly rate (reliability)
    failed_delivery_rate: float
    days_off: tuple[int, ...]  # weekdays (Monday = 0) without pickups or deliveries
    pickup_hours: tuple[float, ...]  # UTC hours of pickup rounds at merchants
    delivery_waves_h: tuple[float, ...]  # UTC hours at which couriers go out
    transit_sigma: float  # log-normal sigma of line-haul times


CARRIERS: tuple[Carrier, ...] = (
    Carrier("SF", 1.15, 0.5, 0.02, (), (2.0, 7.0, 11.0), (0.5, 5.0), 0.12),
    Carrier("ZTO", 1.0, 1.0, 0.03, (), (3.0, 9.0), (1.0, 6.0), 0.16),
    Carrier("YTO", 0.95, 1.2, 0.035, (6,), (3.0, 9.0), (1.0, 6.0), 0.18),
    Carrier("STO", 0.9, 1.4, 0.04, (6,), (4.0, 10.0), (1.5, 6.5), 0.20),
    Carrier("JDL", 1.1, 0.7, 0.02, (), (2.0, 8.0, 12.0), (0.5, 5.5), 0.12),
)
CARRIER_BY_ID = {c.carrier_id: c for c in CARRIERS}

CATEGORIES: tuple[tuple[str, float, float], ...] = (
    # (category, weight, median amount in yuan)
    ("apparel", 0.28, 120.0),
    ("electronics", 0.12, 900.0),
    ("beauty", 0.14, 160.0),
    ("home", 0.16, 200.0),
    ("food", 0.14, 60.0),
    ("books", 0.06, 45.0),
    ("toys", 0.10, 110.0),
)


@dataclass(frozen=True)
class Outlet:
    node: Node
    hub_id: str


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    node: Node
    carriers: tuple[str, ...]
    outlet: Outlet
    cutoff_h: float  # UTC hour after which orders ship the next working day
    slow: bool  # ships a working day later than it could
    works_sunday: bool
    category: str


@dataclass
class Network:
    regions: dict[str, RegionSpec]
    hubs: dict[str, Hub]
    gateway: dict[str, str]  # region -> gateway hub id
    stations: dict[str, list[Node]]  # region -> stations
    customer_areas: dict[str, Node]  # station id -> the delivery area it serves
    merchants: list[Merchant]
    _routes: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def route(self, first_hub: str, dest_region: str) -> tuple[str, ...]:
        """Hubs a parcel passes, from its first hub to the last one before the station."""

        key = (first_hub, dest_region)
        cached = self._routes.get(key)
        if cached is not None:
            return cached
        origin = self.hubs[first_hub].node.region
        path = [first_hub]
        if origin != dest_region:
            gw = self.gateway[origin]
            if gw != first_hub:
                path.append(gw)
            transit = self._transit_region(origin, dest_region)
            if transit is not None:
                path.append(self.gateway[transit])
            path.append(self.gateway[dest_region])
        result = tuple(path)
        self._routes[key] = result
        return result

    def _transit_region(self, origin: str, dest: str) -> str | None:
        # Long lanes go through a national transit gateway that lies roughly
        # on the way: it never moves the parcel away from its destination.
        direct = region_km(self.regions[origin], self.regions[dest])
        if direct < 1200:
            return None
        best: tuple[float, str] | None = None
        for name, spec in self.regions.items():
            if name in (origin, dest):
                continue
            to_dest = region_km(spec, self.regions[dest])
            via = region_km(self.regions[origin], spec) + to_dest
            if to_dest < direct - 300 and via <= 1.2 * direct and (best is None or via < best[0]):
                best = (via, name)
        return best[1] if best else None


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def region_km(a: RegionSpec, b: RegionSpec) -> float:
    return haversine_km(a.lat, a.lon, b.lat, b.lon)


def node_km(a: Node, b: Node) -> float:
    return haversine_km(a.lat, a.lon, b.lat, b.lon)


def _near(rng: random.Random, spec: RegionSpec, km: float) -> tuple[float, float]:
    # a point within about `km` of the region's centre
    dlat = rng.uniform(-km, km) / 111.0
    dlon = rng.uniform(-km, km) / (111.0 * math.cos(math.radians(spec.lat)))
    return round(spec.lat + dlat, 4), round(spec.lon + dlon, 4)


def build_network(seed: int = 20261111, merchants: int = 300) -> Network:
    """The simulated world; the same ``seed`` always builds the same network."""

    rng = random.Random(seed)
    regions = {r.name: r for r in REGIONS}
    hubs: dict[str, Hub] = {}
    gateway: dict[str, str] = {}
    hubs_in: dict[str, list[str]] = {}
    stations: dict[str, list[Node]] = {}
    areas: dict[str, Node] = {}
    outlets: dict[str, list[Outlet]] = {}
    for r_index, spec in enumerate(REGIONS):
        code = spec.code
        hubs_in[spec.name] = []
        for h in range(spec.hubs):
            hub_id = f"HUB-{code}-{h + 1}"
            lat, lon = _near(rng, spec, 25.0)
            is_gw = h == 0
            # Gateways run a truck every 4 hours, local hubs every 8; the
            # offset staggers schedules between hubs.
            offset = (r_index * 1.5 + h * 2.0) % 4.0
            step = 4.0 if is_gw else 8.0
            deps = tuple(sorted(round((offset + k * step) % 24.0, 2) for k in range(int(24 / step))))
            hubs[hub_id] = Hub(
                node=Node(hub_id, NodeType.HUB, spec.name, lat, lon),
                gateway=is_gw,
                departures_h=deps,
                processing_median_h=rng.uniform(1.0, 2.0) if is_gw else rng.uniform(0.6, 1.2),
            )
            hubs_in[spec.name].append(hub_id)
        gateway[spec.name] = hubs_in[spec.name][0]
        stations[spec.name] = []
        for s in range(3):
            lat, lon = _near(rng, spec, 30.0)
            st = Node(f"ST-{code}-{s + 1}", NodeType.STATION, spec.name, lat, lon)
            stations[spec.name].append(st)
            # the area a station serves is close by: couriers drive, they do not fly
            alat = round(lat + rng.uniform(-0.08, 0.08), 4)
            alon = round(lon + rng.uniform(-0.08, 0.08), 4)
            areas[st.node_id] = Node(f"CA-{code}-{s + 1}", NodeType.CUSTOMER, spec.name, alat, alon)
        outlets[spec.name] = []
        for o in range(4):
            lat, lon = _near(rng, spec, 30.0)
            hub_id = hubs_in[spec.name][o % len(hubs_in[spec.name])]
            outlets[spec.name].append(Outlet(Node(f"OUT-{code}-{o + 1}", NodeType.OUTLET, spec.name, lat, lon), hub_id))
    region_names = [r.name for r in REGIONS]
    origin_weights = [r.origin_weight for r in REGIONS]
    carrier_ids = [c.carrier_id for c in CARRIERS]
    cat_names = [c[0] for c in CATEGORIES]
    cat_weights = [c[1] for c in CATEGORIES]
    merchant_list: list[Merchant] = []
    for m in range(merchants):
        region = rng.choices(region_names, origin_weights)[0]
        spec = regions[region]
        lat, lon = _near(rng, spec, 35.0)
        mid = f"M{m + 1:04d}"
        n_carriers = 1 if rng.random() < 0.6 else 2
        merchant_list.append(
            Merchant(
                merchant_id=mid,
                node=Node(f"WH-{mid}", NodeType.MERCHANT, region, lat, lon),
                carriers=tuple(rng.sample(carrier_ids, n_carriers)),
                outlet=rng.choice(outlets[region]),
                cutoff_h=float(rng.choice((6, 7, 8, 9, 10))),
                slow=rng.random() < 0.2,
                works_sunday=rng.random() < 0.6,
                category=rng.choices(cat_names, cat_weights)[0],
            )
        )
    return Network(regions, hubs, gateway, stations, areas, merchant_list)


def weekday(t_ms: int) -> int:
    """UTC weekday, Monday = 0 (1970-01-01 was a Thursday)."""

    return (t_ms // DAY_MS + 3) % 7


def hour_of_day(t_ms: int) -> float:
    return (t_ms % DAY_MS) / HOUR_MS


def next_slot(t_ms: int, hours: tuple[float, ...], day_off: Callable[[int], bool] | None = None) -> int:
    """First daily slot (UTC hours) at or after ``t_ms``, skipping UTC day numbers where ``day_off`` is true."""

    day = t_ms // DAY_MS
    for _ in range(30):
        if day_off is None or not day_off(day):
            for h in hours:
                slot = day * DAY_MS + int(h * HOUR_MS)
                if slot >= t_ms:
                    return slot
        day += 1
    raise AssertionError("no slot within 30 days")  # pragma: no cover - schedules are daily
