"""One place that turns ``redis.url`` into a client, and the hash-tag convention.

``redis://`` and ``rediss://`` URLs (and ``unix://``) give the ordinary
client. ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``
for TLS) gives redis-py's cluster client, seeded with the listed nodes; it
discovers the rest of the cluster itself. A cluster has one database, so a
``/N`` path other than ``/0`` is refused.

On a cluster, a MULTI/EXEC, a Lua script or a multi-key command must touch
keys of one slot, and Redis hashes only the text between the first ``{`` and
the next ``}`` of a key when there is one. Every key layout in logiwatch
therefore puts a :func:`slot_tag` into each key it must write together with
others (one tag per events partition, per alert, per receiver, one for the
ledger), and key prefixes may not contain braces (:func:`check_prefix`): a
brace in the prefix would become the tag of every key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import CoreCommands

from logiwatch.errors import ConfigError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def slot_tag(*parts: str | int) -> str:
    """The hash tag that puts keys in one Redis Cluster slot: ``{part:part}``.

    Keys that carry the same tag are always written in one slot, so they may
    share a MULTI/EXEC or a script.

    >>> slot_tag("logistics.events", 3)
    '{logistics.events:3}'
    """

    text = ":".join(str(p) for p in parts)
    if "{" in text or "}" in text or not text:
        raise ValueError(f"a hash tag needs non-empty parts without braces, got {text!r}")
    return "{" + text + "}"


def check_prefix(prefix: str) -> str:
    """Refuse a key prefix with braces (it would hash-tag every key into one slot)."""

    if "{" in prefix or "}" in prefix:
        raise ConfigError(f"redis.key_prefix {prefix!r} contains a brace: use letters, digits, ':', '-' or '_'")
    return prefix


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes and connection options of a ``redis+cluster://`` URL (ConfigError if malformed)."""

    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"redis.url {redact(url)!r}: cluster seed {item!r} is not host:port "
                "(write redis+cluster://host:port[,host:port...])"
            )
        seeds.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"redis.url {redact(url)!r}: a Redis Cluster has only database 0, drop {parts.path!r}")
    options: dict[str, Any] = {}
    if "@" in parts.netloc:
        user, _, password = parts.netloc.rsplit("@", 1)[0].partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) or None
    if parts.scheme.lower().startswith("rediss"):
        options["ssl"] = True
    return seeds, options


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for error lines and logs)."""

    head, sep, rest = url.partition("://")
    if "@" not in rest.split("/", 1)[0]:
        return url
    creds, _, tail = rest.partition("@")
    user = creds.split(":", 1)[0]
    return f"{head}{sep}{user}:***@{tail}"


def connect(url: str, **options: Any) -> Any:
    """An asyncio client for ``url``: :class:`redis.asyncio.cluster.RedisCluster` for cluster URLs.

    Typed ``Any`` because the two clients share their commands but not a base
    class mypy can see through; callers use the common commands only.
    """

    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **options)
    seeds, extra = cluster_seeds(url)
    nodes = [AsyncClusterNode(host, port) for host, port in seeds]
    return AsyncRedisCluster(startup_nodes=nodes, **{**extra, **_cluster_options(options)})


def connect_sync(url: str, **options: Any) -> Any:
    """A synchronous client for ``url`` (the scrape-time collectors, the stack's tools)."""

    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    seeds, extra = cluster_seeds(url)
    nodes = [ClusterNode(host, port) for host, port in seeds]
    return RedisCluster(startup_nodes=nodes, **{**extra, **_cluster_options(options)})


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    # a failed seed should be dropped quickly, not retried for the default 16 s
    out = dict(options)
    out.setdefault("socket_connect_timeout", 3.0)
    # The single-node client's pool grows without bound; the cluster client's stops at 100
    # connections per node and then raises instead of waiting. Many delivery tasks, the API
    # and per-slot transactions share it, so give it room.
    out.setdefault("max_connections", 1000)
    return out


def validate_url(url: str) -> str:
    """``url`` if a client can be built from it, else a one-line ConfigError naming the fix."""

    if is_cluster_url(url):
        cluster_seeds(url)
        return url
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ConfigError(
            f"redis.url {redact(url)!r} is not a Redis URL ({exc}); write redis://host:port/db "
            "or redis+cluster://host:port[,host:port...]"
        ) from None
    return url


def scan_keys(client: Any, match: str, count: int = 1000) -> Iterator[bytes | str]:
    """Every key matching ``match``; on a cluster, SCAN runs on every primary in turn."""

    if isinstance(client, RedisCluster):
        for node in client.get_primaries():
            yield from client.get_redis_connection(node).scan_iter(match=match, count=count)
        return
    yield from client.scan_iter(match=match, count=count)


def delete_keys(client: Any, keys: list[Any]) -> None:
    """DEL ``keys``; on a cluster one key at a time in a pipeline (they may live in any slot)."""

    if not keys:
        return
    if isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        pipe.execute()
    else:
        client.delete(*keys)


# --------------------------------------------------------------------------- one-slot batches on a cluster

#: The command loop of :data:`SLOT_BATCH_SCRIPT` from ``ARGV[i]`` on; ``i`` and ``out`` are set by
#: the script that includes it (after checks of its own: ``alerts/fencing.CHECKED_BATCH_SCRIPT``).
RUN_COMMANDS_LUA = """
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  out[#out + 1] = redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return out
"""

#: Runs a list of commands, all on keys of one slot, atomically: ARGV is
#: ``n, cmd, arg... , n, cmd, arg...``. Used instead of MULTI/EXEC on a cluster,
#: because redis-py's asyncio cluster transactions run every queued command
#: through a thread of its own (about 20x slower, and blocking the event loop).
SLOT_BATCH_SCRIPT = "local i, out = 1, {}\n" + RUN_COMMANDS_LUA


class CommandRecorder(CoreCommands):
    """Collects the raw commands that redis-py's command methods would send (``rec.sadd(...)``)."""

    _event_dispatcher: Any = None  # the protocol wants one; recording never dispatches events

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any, **options: Any) -> CommandRecorder:
        self.commands.append(args)
        return self


def queue_slot_batch(pipe: Any, commands: list[tuple[Any, ...]]) -> None:
    """Queue ``commands`` (all keyed in one slot, key first) as ONE script call on a cluster pipeline."""

    keys = list(dict.fromkeys(c[1] for c in commands))
    argv: list[Any] = []
    for c in commands:
        argv += [len(c), *c]
    pipe.execute_command("EVAL", SLOT_BATCH_SCRIPT, len(keys), *keys, *argv)
