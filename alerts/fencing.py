"""Fenced and watched writes on one Redis and on a Redis Cluster.

A write made under a guard (a lease of :mod:`logiwatch.alerts.lease`, or a
consumer batch that read some alert records) must be refused once the guard
no longer holds. On one Redis that is WATCH + MULTI/EXEC (:meth:`Guard.begin`).
On a cluster, WATCH would need redis-py's threaded async cluster transaction
(see docs/operations.md), so the guard instead names its *checks*: keys and the
values they must still have. Each check travels inside the one-slot script of
the writes of its slot (:data:`CHECKED_BATCH_SCRIPT`), so the check and those
writes are atomic; a check whose slot has no writes runs on its own first.
A refused check raises :class:`redis.exceptions.WatchError`, as EXEC does.

That is why the lease keys sit in the slot of what they guard (a receiver's
delivery lease under the receiver's tag, the escalation lease under the index
tag, the liability publisher under the ledger tag): each of their writes is
one atomic, fenced script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis.crc import key_slot
from redis.exceptions import ResponseError, WatchError

from logiwatch.redisconn import RUN_COMMANDS_LUA

#: queues one command (or script call) on a pipeline
Op = Callable[[Any], Awaitable[Any] | Any]

#: a key and the value it must still hold (``None``: the key must be absent)
Check = tuple[str, Any]

#: ARGV: n checks, then per check "1", value (or "0", "" for absent), then the commands as
#: in :data:`logiwatch.redisconn.SLOT_BATCH_SCRIPT`. KEYS: the checked keys, then the written ones.
CHECKED_BATCH_SCRIPT = """
local nc = tonumber(ARGV[1])
for i = 1, nc do
  local got = redis.call('GET', KEYS[i])
  if ARGV[2 * i] == '1' then
    if got ~= ARGV[2 * i + 1] then return redis.error_reply('LWFENCED ' .. KEYS[i]) end
  elseif got then
    return redis.error_reply('LWFENCED ' .. KEYS[i])
  end
end
local i, out = 2 * nc + 2, {}
""" + RUN_COMMANDS_LUA


class Guard(Protocol):
    """A lease (:class:`logiwatch.alerts.lease.Lease`) or a watched read: writes made under it are fenced."""

    async def begin(self, client: Any) -> Any:
        """One Redis: a MULTI pipeline whose EXEC fails once the guard no longer holds."""

    def checks(self) -> list[Check]:
        """A cluster: the keys and values that must still hold when the guarded writes run."""


def slot(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def queue_checked_batch(pipe: Any, checks: Sequence[Check], commands: Sequence[tuple[Any, ...]]) -> None:
    """Queue ``commands`` (keys of one slot) after ``checks`` (same slot) as ONE script call."""

    keys = [k for k, _ in checks] + list(dict.fromkeys(c[1] for c in commands))
    argv: list[Any] = [len(checks)]
    for _key, value in checks:
        argv += ["0", ""] if value is None else ["1", value]
    for c in commands:
        argv += [len(c), *c]
    pipe.execute_command("EVAL", CHECKED_BATCH_SCRIPT, len(keys), *keys, *argv)


def by_slot(checks: Sequence[Check]) -> dict[int, list[Check]]:
    out: dict[int, list[Check]] = {}
    for check in checks:
        out.setdefault(slot(check[0]), []).append(check)
    return out


async def run_checks(client: Any, checks: Sequence[Check]) -> None:
    """Verify ``checks`` now (one script per slot, one round trip); WatchError if one fails."""

    if not checks:
        return
    pipe = client.pipeline(transaction=False)
    for group in by_slot(checks).values():
        queue_checked_batch(pipe, group, [])
    await execute(pipe)


async def execute(pipe: Any) -> list[Any]:
    """``pipe.execute()``, a refused check raised as :class:`WatchError`."""

    try:
        return list(await pipe.execute())
    except ResponseError as exc:
        if "LWFENCED" in str(exc):
            raise WatchError(f"guarded write refused: {exc}") from None
        raise
