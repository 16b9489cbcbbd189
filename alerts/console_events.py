"""Live updates for the console: ``GET /api/events``, a server-sent event stream.

Every commit of the alert store bumps a counter in Redis (``alerts:changes``), whichever
replica made it. One watcher per service reads that counter every ``interval_s`` while at
least one console listens (one ``GET``, however many agents are connected) and wakes every
stream, which sends ``event: changed`` with the counter; the console then re-reads the page
the agent is on with the filters, page, selection and focus it had. A comment line every
``keepalive_s`` keeps proxies from closing an idle stream; ``retry:`` tells the browser
how soon to reconnect. Streams end when the service shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from aiohttp import web
from redis.exceptions import RedisError

from logiwatch.alerts.store import AlertStore

log = logging.getLogger(__name__)


class ChangeFeed:
    """Watches the store's change counter while anyone listens; wakes the listeners."""

    def __init__(self, store: Callable[[], AlertStore], interval_s: float = 0.5) -> None:
        self.store = store
        self.interval_s = interval_s
        self.version = 0
        self._listeners: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()

    def listen(self) -> asyncio.Event:
        ev = asyncio.Event()
        self._listeners.add(ev)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())
        return ev

    def leave(self, ev: asyncio.Event) -> None:
        self._listeners.discard(ev)

    async def _watch(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            self.version = await self.store().changes()
        while self._listeners and not self.closing.is_set():
            await asyncio.sleep(self.interval_s)
            try:
                now = await self.store().changes()
            except (RedisError, OSError) as exc:  # Redis away: the streams stay open, quiet
                log.debug("change counter unreadable: %s", exc)
                continue
            if now != self.version:
                self.version = now
                for ev in list(self._listeners):
                    ev.set()

    async def close(self) -> None:
        self.closing.set()
        for ev in list(self._listeners):
            ev.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


FEED = web.AppKey("change_feed", ChangeFeed)


async def events(request: web.Request, keepalive_s: float = 15.0) -> web.StreamResponse:
    feed = request.app[FEED]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    ev = feed.listen()
    try:
        await resp.write(f"retry: 3000\nevent: hello\ndata: {json.dumps({'version': feed.version})}\n\n".encode())
        while not feed.closing.is_set():
            try:
                await asyncio.wait_for(ev.wait(), timeout=keepalive_s)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            ev.clear()
            if feed.closing.is_set():
                break
            await resp.write(f"event: changed\ndata: {json.dumps({'version': feed.version})}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass  # the console went away
    finally:
        feed.leave(ev)
    return resp


def install(app: web.Application, store: Callable[[], AlertStore]) -> None:
    """Give ``app`` its change feed (``store`` is read when a console first listens),
    closed when the app shuts down, which ends every stream."""

    app[FEED] = ChangeFeed(store)

    async def _close(app: web.Application) -> None:
        await app[FEED].close()

    app.on_shutdown.append(_close)
