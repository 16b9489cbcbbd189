"""The lease keeper: runs the shared work this instance holds a lease for.

Every ``renew_s`` (a third of the TTL) the keeper heartbeats the members
set, renews what it holds (a lease it could not renew is lost: its task is
cancelled at once), gives back one lease when it holds more than its
:func:`~logiwatch.alerts.lease.fair_share` of the live instances, and tries
to take free or expired ones up to that share. Each held lease runs one
task (``work[name](lease)``) until it ends, raises, or the lease is lost; a
task that ends is restarted at the next tick if the lease is still ours.

A dead instance's leases expire after at most ``lease_ttl_s``; a survivor
takes them at its next tick, so work moves within ``lease_ttl_s + renew_s``
of the last renewal (measured in ``docs/reliability.md``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from logiwatch.alerts.lease import FENCED, FRESH, HANDOVER, TAKEOVER, Lease, Leases, fair_share
from logiwatch.alerts.metrics import AlertMetrics

log = logging.getLogger(__name__)

Work = Callable[[Lease], Awaitable[None]]


class LeaseKeeper:
    """Holds up to a fair share of ``work``'s leases and runs each held one's task."""

    def __init__(self, leases: Leases, work: dict[str, Work], metrics: AlertMetrics, status: dict[str, Any] | None = None) -> None:
        self.leases = leases
        self.work = work
        self.metrics = metrics
        self.status = status if status is not None else {}
        self.renew_s = leases.ttl_s / 3
        self.held: dict[str, Lease] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        for name in work:
            metrics.lease_held.labels(name).set(0)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except redis.exceptions.RedisError as exc:
                    log.warning("lease tick failed (%s); leases not renewed may be taken over", exc)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.renew_s)
                except TimeoutError:
                    pass
        finally:
            for name in list(self.held):
                await self._drop(name, release=True)
            try:
                await self.leases.leave()
            except redis.exceptions.RedisError:
                pass

    async def tick(self) -> None:
        members = await self.leases.heartbeat()
        for name in list(self.held):
            lease = self.held[name]
            if lease.lost or not await self.leases.renew(lease):
                log.warning("lease %s lost (token %d): another instance holds it now", name, lease.token)
                self.metrics.lease_lost.labels(name).inc()
                await self._drop(name, release=False)
        share = fair_share(len(self.work), len(members))
        if len(self.held) > share:
            # hand one back per tick (the last in name order), so a newcomer gets work without a storm
            name = sorted(self.held)[-1]
            log.info("handing lease %s over: %d held, fair share %d of %d instances", name, len(self.held), share, len(members))
            await self._drop(name, release=True)
        for name in self._order(members):
            if name in self.held:
                self._ensure_task(name)
                continue
            if len(self.held) >= share:
                continue
            got = await self.leases.acquire(name)
            if got is None:
                continue
            lease, how = got
            self.held[name] = lease
            self.metrics.lease_held.labels(name).set(1)
            self.metrics.lease_acquired.labels(name).inc()
            if how == TAKEOVER:
                self.metrics.lease_takeovers.labels(name).inc()
            how_s = {FRESH: "first holder", TAKEOVER: "taken over from an expired holder", HANDOVER: "handed over"}.get(how, "renewed")
            log.info("lease %s acquired (token %d, %s)", name, lease.token, how_s)
            self._ensure_task(name)
        self.status["instance"] = self.leases.owner
        self.status["leases"] = {n: lease.token for n, lease in sorted(self.held.items())}

    def _order(self, members: list[str]) -> list[str]:
        """Lease names, rotated by this instance's rank so instances start on different ones."""

        names = sorted(self.work)
        rank = members.index(self.leases.owner) if self.leases.owner in members else 0
        k = rank % len(names) if names else 0
        return names[k:] + names[:k]

    def _ensure_task(self, name: str) -> None:
        task = self.tasks.get(name)
        if task is not None and not task.done():
            return
        lease = self.held[name]
        self.tasks[name] = asyncio.create_task(self._guarded(name, lease), name=f"lease-{name}")

    async def _guarded(self, name: str, lease: Lease) -> None:
        try:
            await self.work[name](lease)
        except FENCED as exc:
            lease.lost = True
            self.metrics.fenced_writes.labels(name).inc()
            log.warning("lease %s: write refused (%s); stopping its work", name, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("work under lease %s failed; restarted at the next tick", name)

    async def _drop(self, name: str, *, release: bool) -> None:
        lease = self.held.pop(name)
        lease.lost = True
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.metrics.lease_held.labels(name).set(0)
        if release:
            try:
                await self.leases.release(lease)
            except redis.exceptions.RedisError as exc:
                log.warning("releasing lease %s failed (%s); it expires by itself", name, exc)
