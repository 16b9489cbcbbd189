"""Redis URLs, the hash-tag convention and the key layouts that depend on it (no server needed)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from logiwatch.alerts.ledger import ledger_key
from logiwatch.alerts.store import AlertKeys
from logiwatch.errors import ConfigError
from logiwatch.redisconn import CommandRecorder, cluster_seeds, is_cluster_url, redact, slot_tag, validate_url
from logiwatch.streams.state import partition_keys


def slots(keys: list[str]) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


def test_a_cluster_url_lists_its_seeds_and_credentials_and_refuses_a_database() -> None:
    seeds, options = cluster_seeds("rediss+cluster://app:s3cret@10.0.0.1:7000,[::1]:7001")
    assert seeds == [("10.0.0.1", 7000), ("::1", 7001)]
    assert options == {"username": "app", "password": "s3cret", "ssl": True}
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1/0")
    with pytest.raises(ConfigError, match=r"only database 0, drop '/2'$"):
        cluster_seeds("redis+cluster://h:1/2")
    with pytest.raises(ConfigError) as err:
        validate_url("redis+cluster://app:s3cret@h")
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)
    assert redact("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"


def test_every_checkpoint_key_of_a_partition_shares_one_slot_and_partitions_spread() -> None:
    keys = partition_keys("lw:", "logistics.events", 3)
    assert keys[0] == "lw:parcels:{logistics.events:3}" and len(slots(list(keys))) == 1
    assert len(slots([partition_keys("lw:", "logistics.events", p)[0] for p in range(16)])) == 16


def test_alert_keys_share_a_slot_per_alert_per_receiver_and_for_the_indexes() -> None:
    k = AlertKeys("lw:")
    assert len(slots([k.key(kind, "stall:WB1:r}0") for kind in AlertKeys.PER_ALERT])) == 1  # a brace in the id too
    assert len(slots([k.key(kind, "cs") for kind in AlertKeys.PER_RECEIVER])) == 1
    index = [k.key("state", "open"), k.key("q", "severity"), k.key("qf", "type", "stall"), k.key("escalation"), k.key("tmp", "x") + ":s"]
    assert len(slots(index)) == 1
    assert k.receiver_of_queue(k.key("queue", "ops-team")) == "ops-team"
    assert len(slots([ledger_key("lw:", n) for n in ("ledger", "keys", "totals", "parcel:WB1", "incident-of")])) == 1


def test_slot_tag_refuses_braces_and_the_recorder_keeps_raw_commands() -> None:
    assert slot_tag("a", 1) == "{a:1}"
    with pytest.raises(ValueError):
        slot_tag("a{b")
    rec = CommandRecorder()
    rec.zadd("z", {"m": 1}, nx=True)
    rec.hset("h", mapping={"f": "v"})
    assert rec.commands == [("ZADD", "z", b"NX", 1, "m"), ("HSET", "h", "f", "v")]
