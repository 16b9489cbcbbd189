"""The front door end to end: signed pushes over real HTTP -> real Tansu -> the worker's v2 join -> alerts.

The receiver runs in process on a free port (its own event loop in a
thread); the worker is a real ``logiwatch worker`` subprocess; requests are
plain HTTP from urllib, signed with each vendor's scheme (tests/feeds.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis

from logiwatch import stack
from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_alert, decode_record, encode_record, encode_tick
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, Scan, ShipmentRegistration, Tick
from logiwatch.detectors.partitioning import partition_for
from logiwatch.streams.dlq import decode_dead_letter
from logiwatch.streams.ingest.serve import RunningReceiver, start_receiver
from logiwatch.streams.state import partition_keys
from tests import feeds as F
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader, WorkerProcess, produce_raw

SECRETS = {
    "aftership_secret": F.AFTERSHIP_SECRET,
    "seventeentrack_key": F.SEVENTEEN_KEY,
    "kuaidi100_salt": F.KUAIDI_SALT,
}


class ReceiverThread:
    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningReceiver = asyncio.run_coroutine_threadsafe(start_receiver(settings), self.loop).result(30)
        self.url = f"http://127.0.0.1:{self.running.port}"

    def post(self, feed: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.url}/v1/feeds/{feed}", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[Settings], ReceiverThread]]:
    made: list[ReceiverThread] = []

    def make(settings: Settings) -> ReceiverThread:
        made.append(ReceiverThread(settings))
        return made[-1]

    yield make
    for r in made:
        r.close()


def scans_on(reader: TopicReader) -> list[Scan]:
    out = []
    for rec in reader.poll():
        item = decode_record(rec.value, key=rec.key)
        assert isinstance(item, Scan)
        out.append(item)
    return out


def test_signed_pushes_of_each_feed_become_alerts_once_each_with_late_registrations_joined(
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    receiver_factory: Callable[[Settings], ReceiverThread],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    events, alerts, dlq, shipments = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1), topic_factory("sh")
    settings = settings_factory(
        kafka={"topics": {"events": events, "alerts": alerts, "dlq": dlq, "shipments": shipments},
               "worker_group": f"g-{uuid4().hex}"},
        ingest={"port": 0, **SECRETS},
        # the join waits a week of event time for a registration: the fixtures' histories (hours
        # apart, September) wait; the tick at today's time below sends the unregistered ones on
        worker={"join_wait_ms": 7 * 24 * 3600_000},
    )
    rx = receiver_factory(settings)
    tag = uuid4().hex[:8]
    wb_as, wb_st, wb_kd = f"AS-{tag}", f"ST-{tag}", f"KD-{tag}"

    assert rx.post("aftership", *F.aftership(wb_as, F.AS_FIRST))[0] == 200
    # the resend carries the whole history again, plus two checkpoints (one without an offset)
    assert rx.post("aftership", *F.aftership(wb_as, F.AS_FIRST + F.AS_MORE))[0] == 200
    assert rx.post("17track", *F.seventeentrack(wb_st, F.ST_FIRST))[0] == 200
    status, reply = rx.post("kuaidi100", *F.kuaidi100(wb_kd, F.KD_FIRST + F.KD_MORE))
    assert status == 200 and json.loads(reply) == {"result": True, "returnCode": "200", "message": "4 new scans"}
    body, headers = F.aftership(f"AS-BAD-{tag}", F.AS_FIRST, secret="not-the-secret")
    assert rx.post("aftership", body, headers)[0] == 401

    reader = TopicReader(settings.kafka.bootstrap, events)
    try:
        wait_until(lambda: len(reader.poll()) >= 10, timeout=30, what="10 scans on the events topic")
        time.sleep(0.5)  # a duplicate would arrive with the same produce round; give it the chance to show
        scans = scans_on(reader)
    finally:
        reader.close()
    assert len(scans) == 10 and len({s.event_id for s in scans}) == 10
    assert {s.waybill_id for s in scans} == {wb_as, wb_st, wb_kd}  # the bad signature produced nothing
    assert sum(1 for s in scans if s.waybill_id == wb_as) == 4

    # the registration arrives after its parcel's scans
    reg = ShipmentRegistration(
        waybill_id=wb_as, registered_at=1_788_220_000_000, order_id="O-AS", merchant_id="M-AS",
        carrier_id="sf-express", promised_dispatch_by=1_788_300_000_000, promised_delivery_by=1_788_500_000_000,
        order_amount=120.0, category="books", origin_region="CN-Guangdong", dest_region="CN-Beijing",
    )  # fmt: skip
    produce_raw(settings.kafka.bootstrap, shipments, [(wb_as.encode(), encode_record(reg), None, None)])
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        part = partition_for(wb_as, 4)
        key = partition_keys(settings.redis.key_prefix, shipments, part)[0]
        wait_until(lambda: redis_client.hexists(key, wb_as), timeout=90, what=f"the registration in the snapshot ({worker.log_text()})")
        # a tick months after the fixtures' checkpoints: past every wait (event time)
        tick = encode_tick(Tick(tick_time=int(time.time() * 1000), source="test"))
        produce_raw(settings.kafka.bootstrap, events, [(None, tick, p, [(TICK_HEADER, TICK_HEADER_VALUE)]) for p in range(4)])
        alert_reader = TopicReader(settings.kafka.bootstrap, alerts)
        try:
            def by_waybill() -> dict[str, list[Any]]:
                got: dict[str, list[Any]] = {}
                for rec in alert_reader.poll():
                    a = decode_alert(rec.value)
                    got.setdefault(a.waybill_id or "", []).append(a)
                return got if {wb_as, wb_st, wb_kd} <= set(got) else {}

            got = wait_until(by_waybill, timeout=90, what=f"alerts for the three parcels ({worker.log_text()})")
        finally:
            alert_reader.close()
    finally:
        worker.stop()
    assert all(a.merchant_id == "M-AS" and "registration" not in a.evidence for a in got[wb_as])
    assert all(a.evidence.get("registration") == "missing" for a in got[wb_st] + got[wb_kd])


def test_with_the_broker_down_the_receiver_answers_503_and_the_retried_push_lands(
    settings_factory: Callable[..., Settings],
    receiver_factory: Callable[[Settings], ReceiverThread],
    tmp_path: Path,
) -> None:
    port = stack.free_port()
    broker = stack.start_tansu(port, tmp_path, timeout=60.0, name="tansu-own")
    events = f"ev-{uuid4().hex}"
    settings = settings_factory(
        kafka={"bootstrap": broker.url, "topics": {"events": events}},
        ingest={"port": 0, "produce_timeout_s": 3.0, **SECRETS},
    )
    rx = receiver_factory(settings)
    try:
        stack.create_topics(broker.url, {events: 4})
        broker.stop()
        push = F.kuaidi100(f"KD-{uuid4().hex[:8]}", F.KD_FIRST)
        status, reply = rx.post("kuaidi100", *push)
        assert status == 503 and json.loads(reply)["result"] is False
        broker = stack.start_tansu(port, tmp_path, timeout=60.0, name="tansu-own")
        stack.create_topics(broker.url, {events: 4})
        assert wait_until(lambda: rx.post("kuaidi100", *push)[0] == 200, timeout=60, interval=0.5)
        reader = TopicReader(broker.url, events)
        try:
            wait_until(lambda: len(reader.poll()) >= 2, timeout=30, what="the retried push's two scans")
            assert len({s.event_id for s in scans_on(reader)}) == 2
        finally:
            reader.close()
    finally:
        broker.stop()


def test_a_bad_push_gets_400_and_a_dead_letter_and_an_oversize_body_413(
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    receiver_factory: Callable[[Settings], ReceiverThread],
) -> None:
    events, dlq = topic_factory("ev"), topic_factory("dlq", 1)
    settings = settings_factory(
        kafka={"topics": {"events": events, "dlq": dlq}}, ingest={"port": 0, "max_body_bytes": 4096, **SECRETS}
    )
    rx = receiver_factory(settings)
    adapter_body = b'{"event":"tracking_update","msg":{"checkpoints":[]}}'  # no tracking number
    from logiwatch.streams.ingest.aftership import AfterShipAdapter

    sig = AfterShipAdapter(F.AFTERSHIP_SECRET).sign(adapter_body)
    status, _ = rx.post("aftership", adapter_body, {"aftership-hmac-sha256": sig})
    assert status == 400
    big, headers = F.aftership("AS-BIG", F.AS_FIRST * 40)
    assert len(big) > 4096 and rx.post("aftership", big, headers)[0] == 413
    assert rx.post("nosuchfeed", b"{}", {})[0] == 404
    reader = TopicReader(settings.kafka.bootstrap, dlq)
    try:
        records = wait_until(lambda: reader.poll(), timeout=30, what="the dead letter")
        letter = decode_dead_letter(records[0].value)
    finally:
        reader.close()
    assert (letter.reason, letter.topic, letter.original_value()) == ("bad_payload", "ingest/aftership", adapter_body)
