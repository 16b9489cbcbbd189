"""Builds and runs the receiver from the settings (``logiwatch ingest serve``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from logiwatch.config import Settings
from logiwatch.redisconn import connect
from logiwatch.streams.ingest.aftership import AfterShipAdapter
from logiwatch.streams.ingest.dedup import ScanClaims
from logiwatch.streams.ingest.feeds import Adapter
from logiwatch.streams.ingest.kuaidi100 import Kuaidi100Adapter
from logiwatch.streams.ingest.receiver import KafkaProducer, Receiver
from logiwatch.streams.ingest.seventeentrack import SeventeenTrackAdapter
from logiwatch.streams.metrics import IngestMetrics

log = logging.getLogger(__name__)


def adapters_from(settings: Settings) -> dict[str, Adapter]:
    conf = settings.ingest
    out: dict[str, Adapter] = {}
    # a feed without a secret (or with an empty one, as compose passes an unset variable) is off
    if conf.aftership_secret is not None and conf.aftership_secret.get_secret_value():
        out["aftership"] = AfterShipAdapter(conf.aftership_secret.get_secret_value(), conf.replay_window_s)
    if conf.seventeentrack_key is not None and conf.seventeentrack_key.get_secret_value():
        out["17track"] = SeventeenTrackAdapter(conf.seventeentrack_key.get_secret_value())
    if conf.kuaidi100_salt is not None and conf.kuaidi100_salt.get_secret_value():
        out["kuaidi100"] = Kuaidi100Adapter(conf.kuaidi100_salt.get_secret_value())
    return out


@dataclass
class RunningReceiver:
    receiver: Receiver
    runner: web.AppRunner
    port: int
    redis: aioredis.Redis

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.receiver.producer.close()
        await self.redis.aclose()


async def start_receiver(settings: Settings, registry: CollectorRegistry | None = None) -> RunningReceiver:
    """Start the receiver on ``ingest.host:ingest.port`` (0: a free port, see ``.port``)."""

    conf = settings.ingest
    client = connect(settings.redis.url, decode_responses=False, socket_timeout=2.0)
    receiver = Receiver(
        adapters=adapters_from(settings),
        producer=KafkaProducer(settings.kafka.bootstrap, conf.produce_timeout_s),
        # a claim outlives the produce of the push holding it (then it expires: that receiver died)
        claims=ScanClaims(client, settings.redis.key_prefix, conf.dedup_ttl_s, int(conf.produce_timeout_s * 3000)),
        events_topic=settings.kafka.topics.events,
        dlq_topic=settings.kafka.topics.dlq,
        metrics=IngestMetrics(registry if registry is not None else CollectorRegistry()),
        max_body_bytes=conf.max_body_bytes,
        produce_timeout_s=conf.produce_timeout_s,
    )
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, conf.host, conf.port)
    await site.start()
    port = conf.port
    sockets = getattr(site._server, "sockets", None)  # the bound port when 0 asked for any
    if sockets:
        port = sockets[0].getsockname()[1]
    log.info("ingest: receiving %s on %s:%d", sorted(receiver.adapters), conf.host, port)
    return RunningReceiver(receiver, runner, port, client)


async def serve(settings: Settings, duration_s: float | None = None) -> dict[str, dict[str, int]]:
    """Run until SIGTERM/SIGINT or ``duration_s``; returns the receiver's counts."""

    running = await start_receiver(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            if deadline is not None and timeout <= 0:
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout)
            except TimeoutError:
                pass
    finally:
        await running.close()
    return running.receiver.totals
