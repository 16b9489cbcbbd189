"""Kafka's default key partitioner, in pure Python.

The backtest splits an event log into the same partitions Kafka would, so a
per-partition engine sees exactly the records a worker's engine sees and the
two paths give identical alerts. This is the murmur2 hash of the Java client
(and of kafka-python's and aiokafka's default partitioners), positive-masked
and taken modulo the partition count.
"""

from __future__ import annotations

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """32-bit murmur2 with Kafka's seed, returned as a signed Java int.

    >>> murmur2(b"21")
    -973932308
    """

    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    nblocks = length // 4
    for i in range(nblocks):
        j = i * 4
        k = data[j] | (data[j + 1] << 8) | (data[j + 2] << 16) | (data[j + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    tail = nblocks * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes | str, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""

    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % num_partitions
