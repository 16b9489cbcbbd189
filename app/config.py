"""The one configuration object.

Built once by the CLI from (highest first) command-line options, environment
variables with the ``LOGIWATCH_`` prefix (nested sections use ``__``, e.g.
``LOGIWATCH_KAFKA__BOOTSTRAP=host:9092``), an optional TOML file
(``--config`` or ``LOGIWATCH_CONFIG``), and the defaults below, then passed
down. Frozen; secrets are ``SecretStr`` and masked by ``logiwatch config
show``. A bad value stops start-up with one line naming the setting.
"""

from __future__ import annotations

import datetime as dt
import inspect
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from logiwatch import redisconn
from logiwatch.errors import ConfigError

if TYPE_CHECKING:
    from logiwatch.detectors.engine import EngineConfig


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicsConfig(_Section):
    events: str = "logistics.events"
    alerts: str = "logistics.alerts"
    liability: str = "logistics.liability"
    dlq: str = "logistics.events.dlq"
    #: contract v2 shipment registrations; created with ``events_partitions`` (co-partitioned)
    shipments: str = "logistics.shipments"
    events_partitions: int = Field(default=4, ge=1, le=1024)
    alerts_partitions: int = Field(default=4, ge=1, le=1024)
    liability_partitions: int = Field(default=1, ge=1, le=1024)
    dlq_partitions: int = Field(default=1, ge=1, le=1024)


class KafkaConfig(_Section):
    bootstrap: str = "127.0.0.1:19092"
    topics: TopicsConfig = TopicsConfig()
    #: Tansu hands a group's first member its partitions after about half the
    #: session timeout; 10 s keeps start-up near 5 s and failover near 15 s.
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    heartbeat_interval_ms: int = Field(default=2_000, ge=100, le=60_000)
    worker_group: str = "logiwatch-worker"
    alerts_group: str = "logiwatch-alerts"


#: The URL forms ``redis_url_problem`` accepts: redis-py's ``Redis.from_url`` schemes.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def redacted_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``, for messages and logs."""

    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a bracketed host that is no IPv6 address: hide all credentials
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def redis_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a Redis URL, in a few words, or ``None`` if nothing is.

    One place for every accepted form: a scheme of ``REDIS_SCHEMES``; for
    ``redis://`` and ``rediss://`` one server (:func:`_server_problem`) and a
    database number if given; for ``unix://`` a socket path. A form with
    several servers checks each with :func:`_server_problem`.
    """

    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in REDIS_SCHEMES:
        forms = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
        return f"the scheme must be one of {forms} (e.g. redis://127.0.0.1:6379/0)"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"it cannot be parsed ({exc})"
    if scheme == "unix":
        return None if parts.path else "a unix:// URL needs the socket's path (e.g. unix:///run/redis.sock)"
    problem = _server_problem(parts.netloc.rpartition("@")[2])
    if problem is not None:
        return problem
    db = parts.path.strip("/")
    if db and not (db.isascii() and db.isdigit()):
        return f"the database {db!r} is not a number (e.g. /0)"
    return None


def _server_problem(server: str) -> str | None:
    """What is wrong with one ``host[:port]`` (an IPv6 host in brackets), or ``None``."""

    if server.startswith("[") and "]" in server:  # IPv6: [addr] or [addr]:port
        host, _, rest = server.partition("]")
        colon, port = (":", rest[1:]) if rest.startswith(":") else ("", "")
    else:
        host, colon, port = server.partition(":")
    if not host.strip("[]"):
        return "no host (e.g. redis://127.0.0.1:6379/0)"
    if colon and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"the port {port!r} is not a number 1..65535"
    return None


class RedisConfig(_Section):
    #: ``redis://host:port/db``, or ``redis+cluster://host:port[,host:port...]`` for Redis Cluster
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "lw:"

    @field_validator("url")
    @classmethod
    def _a_redis_url(cls, url: str) -> str:
        if redisconn.is_cluster_url(url):  # checked with the prefix below (redisconn.validate_url)
            return url
        problem = redis_url_problem(url)
        if problem is not None:
            raise ValueError(f"{redacted_url(url)!r} is not a Redis URL: {problem}")
        return url

    @model_validator(mode="after")
    def _url_and_prefix(self) -> RedisConfig:
        try:
            redisconn.validate_url(self.url)
            redisconn.check_prefix(self.key_prefix)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class StackConfig(_Section):
    state_dir: Path = Path(".logiwatch")
    kafka_port: int = Field(default=19092, ge=1, le=65535)
    redis_port: int = Field(default=16379, ge=1, le=65535)


class WorkerConfig(_Section):
    batch_max_records: int = Field(default=5_000, ge=1)
    commit_interval_s: float = Field(default=1.0, gt=0)
    #: A partition's state snapshot is written every ``commit_interval_s`` or
    #: after this many records, whichever comes first (0: no count bound).
    checkpoint_max_records: int = Field(default=20_000, ge=0)
    #: Deflate the state a checkpoint writes to Redis (about a third of the bytes and of Redis's
    #: memory for the parcels, for the CPU of one compression per changed parcel; see
    #: docs/benchmarks.md). Loading reads either form, so this can change between runs.
    checkpoint_compression: bool = False
    #: How long the broker may hold a fetch waiting for data; it adds to the
    #: ingest-to-alert latency (Tansu always waits it out).
    fetch_max_wait_ms: int = Field(default=20, ge=1, le=10_000)
    #: The cyclic GC's generation-0 threshold in the worker process (0: Python's
    #: 700). The worker holds ~1e5 long-lived parcel objects that every full
    #: collection walks; collecting less often cuts that cost.
    gc_gen0_threshold: int = Field(default=50_000, ge=0)
    allowed_lateness_ms: int = Field(default=10 * 60_000, ge=0)
    tick_interval_s: float = Field(default=1.0, gt=0)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    #: Loopback by default; containers set 0.0.0.0 so Prometheus can scrape each replica.
    metrics_host: str = "127.0.0.1"
    max_event_bytes: int = Field(default=16 * 1024, ge=256)
    #: Sanity window for event_time against the worker's wall clock; widen
    #: ``max_event_past_ms`` to replay historical exports older than 400 days.
    max_event_past_ms: int = Field(default=400 * 24 * 3600 * 1000, ge=0)
    max_event_future_ms: int = Field(default=24 * 3600 * 1000, ge=0)
    #: Replays of historical exports: no wall-clock window at all (event time only; ticks from
    #: any time are accepted), so a year-old export through Kafka gives the backtest's alerts.
    event_time_only: bool = False
    #: Contract v2 join: how long (event time: the partition's clock, its newest
    #: record or tick) a scan waits for its parcel's registration before it goes
    #: on with defaults (docs/events.md, "The join").
    join_wait_ms: int = Field(default=10 * 60_000, ge=0)
    #: Promises of a parcel without a registration, counted from its first scan.
    join_default_dispatch_ms: int = Field(default=24 * 3600_000, ge=0)
    join_default_delivery_ms: int = Field(default=72 * 3600_000, ge=0)


class PeakConfig(_Section):
    start: str
    end: str
    factor: float = Field(gt=0, le=10)


class CalendarConfig(_Section):
    #: ``[carrier_id, weekday]`` pairs (Monday = 0) on which that carrier does not move parcels
    carrier_days_off: list[tuple[str, int]] = []
    #: ISO dates (UTC days) on which no carrier works
    holidays: list[str] = []
    #: periods in which expected durations stretch by ``factor`` (e.g. Double 11)
    peaks: list[PeakConfig] = []


class DetectionConfig(_Section):
    """The engine's settings and every detector knob (``knobs.<detector>.<argument>``)."""

    retention_ms: int = Field(default=86_400_000, ge=1)
    max_silence_ms: int = Field(default=30 * 86_400_000, ge=1)
    max_age_ms: int = Field(default=400 * 86_400_000, ge=1)
    min_count: int = Field(default=30, ge=1, le=100_000)
    max_seen: int = Field(default=48, ge=1, le=10_000)
    max_route: int = Field(default=24, ge=3, le=1_000)
    #: learning shared across partitions at epochs of this many seconds of the tick clock
    #: (docs/detection.md, "Learning shared across partitions"); 0 = each partition alone.
    #: On by default (6 h) since 2026-12-04: warm-up then does not grow with the partition count
    pool_epoch_s: int = Field(default=21_600, ge=0, le=30 * 86_400)
    #: how long a worker's partition waits for the other partitions' deltas of an epoch before it
    #: goes on without them (a worker down; alerts may then differ from the backtest's)
    pool_wait_s: float = Field(default=300.0, gt=0, le=86_400)
    #: parcels each engine (partition) keeps decoded between batches, the rest msgpack-encoded
    #: (docs/benchmarks.md, "The hot set"); 0 = every parcel encoded at each batch's end
    hot_parcels: int = Field(default=500, ge=0, le=10_000_000)
    #: enabled detectors (default: all of them)
    detectors: list[str] | None = None
    calendar: CalendarConfig = CalendarConfig()
    knobs: dict[str, dict[str, float | bool | str]] = {}


class IngestConfig(_Section):
    """``logiwatch ingest serve``: the tracking-feed receiver. A feed without its secret is off."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: AfterShip signs the body's ``ts``: pushes older or newer than this are refused
    replay_window_s: float = Field(default=900.0, gt=0)
    #: how long a waybill's produced event ids are remembered for resent histories
    dedup_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    produce_timeout_s: float = Field(default=10.0, gt=0)
    aftership_secret: SecretStr | None = None
    seventeentrack_key: SecretStr | None = None
    kuaidi100_salt: SecretStr | None = None


#: The API token's placeholder default: accepted only while the API listens on loopback.
DEFAULT_API_TOKEN = "change-me"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


class AlertsConfig(_Section):
    routes_file: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8088, ge=0, le=65535)
    api_token: SecretStr = SecretStr(DEFAULT_API_TOKEN)
    metrics_port: int = Field(default=9109, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8088"
    #: versioned liability rules (default: the packaged alerts/rules/liability-v1.toml)
    liability_rules_file: Path | None = None
    #: post open alerts to this Prometheus Alertmanager (API v2), e.g. http://127.0.0.1:9093
    alertmanager_url: str | None = None
    alertmanager_resend_s: float = Field(default=60.0, gt=0, le=3600)
    #: HA (several ``alerts serve`` on one prefix): a dead instance's delivery queues, escalation
    #: timers and liability publisher move to a live one within about 4/3 of this (docs/reliability.md)
    lease_ttl_s: float = Field(default=10.0, ge=1, le=300)
    #: this instance's name in the leases and metrics (default: host:pid:random); no "|" or braces
    instance_id: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[^|{}\s]+$")

    @model_validator(mode="after")
    def _no_default_token_beyond_loopback(self) -> AlertsConfig:
        # The mutating API (acknowledge, resolve, false alarm) must not be reachable from
        # other machines with a token everybody knows.
        if self.api_token.get_secret_value() == DEFAULT_API_TOKEN and not _is_loopback(self.api_host):
            raise ValueError(
                f"api_token is the default {DEFAULT_API_TOKEN!r} while api_host {self.api_host!r} is not "
                "loopback: set LOGIWATCH_ALERTS__API_TOKEN (or alerts.api_token)"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOGIWATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    stack: StackConfig = StackConfig()
    worker: WorkerConfig = WorkerConfig()
    alerts: AlertsConfig = AlertsConfig()
    detection: DetectionConfig = DetectionConfig()
    ingest: IngestConfig = IngestConfig()
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    #: ``json`` (one object per line, for log shippers) or ``text`` (terminals)
    log_format: str = Field(default="json", pattern="^(json|text)$")


def _one_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"invalid setting {where} in {source}: {err['msg']}{more}"


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's contents, or ``ConfigError`` with one line naming ``what`` and the file."""

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory: point it at a .toml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start} is not valid UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise ``ConfigError`` with one line on any problem.

    ``overrides`` are nested dicts (e.g. ``kafka={"bootstrap": "h:1"}``) from
    the command line; they win over the environment and the file.
    """

    path = config_file or os.environ.get("LOGIWATCH_CONFIG")
    data: dict[str, Any] = {}
    source = "environment"
    if path:
        p = Path(path)
        source = str(p)
        data = read_toml(p, "config file")
    try:
        env_only = Settings()
        merged = _deep_merge(data, _explicit_env(env_only))
        merged = _deep_merge(merged, overrides)
        return Settings.model_validate(merged) if merged else env_only
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None


def _explicit_env(settings: Settings) -> dict[str, Any]:
    """Only the values the environment actually set (so a file is not overridden by defaults)."""

    return settings.model_dump(exclude_defaults=True)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def iso_ms(text: str, what: str) -> int:
    """An ISO 8601 date or time (``Z`` or an offset; naive means UTC) as epoch ms.

    ``ConfigError`` otherwise, one line starting with ``what`` (the option or
    setting that holds ``text``, e.g. ``--start``).
    """

    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an ISO 8601 date or time (e.g. 2026-11-02T00:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def engine_config(settings: Settings) -> EngineConfig:
    """The detection engine's configuration from the settings; ``ConfigError`` (one line) on a bad knob.

    Every knob is checked against its detector's constructor (name and type), and the
    engine is built once, so a value a detector refuses stops start-up here, naming it.
    """

    from logiwatch.detectors.calendar import DAY_MS, Calendar
    from logiwatch.detectors.engine import DETECTORS, Engine, EngineConfig

    det = settings.detection
    for name in det.detectors or ():
        if name not in DETECTORS:
            raise ConfigError(f"invalid setting detection.detectors: unknown detector {name!r}; known: {sorted(DETECTORS)}")
    for name, knobs in det.knobs.items():
        if name not in DETECTORS:
            raise ConfigError(f"invalid setting detection.knobs.{name}: unknown detector; known: {sorted(DETECTORS)}")
        params = {
            p.name: p for p in inspect.signature(DETECTORS[name]).parameters.values() if p.kind is p.KEYWORD_ONLY
        }
        for key, value in knobs.items():
            where = f"detection.knobs.{name}.{key}"
            if key not in params:
                raise ConfigError(f"invalid setting {where}: {name} has no such knob; knobs: {sorted(params)}")
            default = params[key].default
            if isinstance(default, bool) != isinstance(value, bool) or isinstance(default, str) != isinstance(value, str):
                raise ConfigError(f"invalid setting {where}: expected {type(default).__name__}, got {value!r}")
    cal = det.calendar
    for carrier, weekday in cal.carrier_days_off:
        if not 0 <= weekday <= 6:
            raise ConfigError(f"invalid setting detection.calendar.carrier_days_off: weekday {weekday} of {carrier!r} is not 0..6")
    calendar = Calendar(
        carrier_days_off=frozenset((c, int(d)) for c, d in cal.carrier_days_off),
        holidays=frozenset(iso_ms(d, "invalid setting detection.calendar.holidays") // DAY_MS for d in cal.holidays),
        peaks=tuple(
            (
                iso_ms(p.start, "invalid setting detection.calendar.peaks.start"),
                iso_ms(p.end, "invalid setting detection.calendar.peaks.end"),
                p.factor,
            )
            for p in cal.peaks
        ),
    )
    try:
        config = EngineConfig(
            allowed_lateness_ms=settings.worker.allowed_lateness_ms,
            retention_ms=det.retention_ms,
            max_silence_ms=det.max_silence_ms,
            max_age_ms=det.max_age_ms,
            calendar=calendar,
            detectors=tuple(det.detectors) if det.detectors is not None else tuple(DETECTORS),
            knobs={k: dict(v) for k, v in det.knobs.items()},
            min_count=det.min_count,
            max_seen=det.max_seen,
            max_route=det.max_route,
            pool_epoch_ms=det.pool_epoch_s * 1000,
            hot_parcels=det.hot_parcels,
        )
        Engine(config)  # the detectors validate their knobs
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid setting detection: {exc}") from None
    return config


def detector_knobs(settings: Settings) -> dict[str, dict[str, dict[str, Any]]]:
    """Every detector's knobs: the default and the value in effect (the configured one, else the default).

    The settings are checked first (``engine_config``), so a bad knob stops here as it would
    stop the worker.
    """

    from logiwatch.detectors.engine import DETECTORS

    engine_config(settings)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, cls in sorted(DETECTORS.items()):
        chosen = settings.detection.knobs.get(name, {})
        params = [p for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY]
        out[name] = {p.name: {"default": p.default, "value": chosen.get(p.name, p.default)} for p in params}
    return out


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked."""

    return settings.model_dump(mode="json")  # SecretStr dumps as '**********'
