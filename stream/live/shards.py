"""Which shard of the live state holds an app, and the key prefix of each shard.

The live state is split by app into ``shards`` parts (docs/design.md, "Shards"):
each shard is a whole namespace of its own (its own marker, applied offsets,
open slots, outbox, ledgers), under a prefix whose hash tag puts all of its
keys in one Redis Cluster hash slot, so that every atomic step, which only
ever touches one shard, runs on one node. One shard on a single Redis keeps
the plain prefix (``sla:``), the layout every earlier version wrote.

Why by app: every figure is an app's, so a slot, its verdict, its month and
its duplicate-detection ids are all in the app's shard, and the closer's and
the pages' reads of an app stay on one node. What it costs is one step per
shard for each partition batch (each shard records how far it has applied
every partition), sent concurrently; what it asks of producers is nothing
(duplicates of an event meet in the app's shard whatever the record key).

Example:
    >>> shard_prefixes("sla:", 1, cluster=False)
    ['sla:']
    >>> shard_prefixes("sla:", 3, cluster=False)
    ['sla:{s0.0}:', 'sla:{s1.1}:', 'sla:{s2.1}:']
    >>> [key_slot(prefix.encode()) * 3 // 16384 for prefix in shard_prefixes("sla:", 3, cluster=True)]
    [0, 1, 2]
    >>> [shard_of(app_id, 3) for app_id in ("1400000001", "1400000002", "1400000006")]
    [0, 2, 1]
"""

from __future__ import annotations

import re
import zlib
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


def shard_of(app_id: str, shards: int) -> int:
    """The shard holding ``app_id``: CRC-32 of its UTF-8 bytes, modulo ``shards``.

    CRC-32 rather than ``hash()``: the same in every process and Python version,
    which every worker, replay and rebuild must agree on.
    """
    return zlib.crc32(app_id.encode()) % shards if shards > 1 else 0


@cache
def _tag(shard: int, shards: int) -> str:
    """The hash tag of ``shard``: the first ``s{shard}.{k}`` whose hash slot lies in the shard's share of the slots.

    A cluster created by ``redis-cli --cluster create`` gives each master one
    contiguous range of hash slots, so shards whose tags are spread evenly over
    the slots are spread evenly over the masters (any count of masters that
    divides ``shards``), not wherever CRC16 happens to put ``{0}``, ``{1}``....
    """
    low, high = shard * REDIS_CLUSTER_HASH_SLOTS // shards, (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    k = 0
    while not low <= key_slot(f"{{s{shard}.{k}}}".encode()) < high:
        k += 1
    return f"s{shard}.{k}"


def shard_prefixes(prefix: str, shards: int, cluster: bool) -> list[str]:
    """The key prefix of each shard of the namespace ``prefix``: ``prefix`` itself for one shard on one server."""
    if shards == 1 and not cluster:
        return [prefix]
    return [f"{prefix}{{{_tag(i, shards)}}}:" for i in range(shards)]


_SHARD_TAG = re.compile(r"\{s\d+\.\d+\}:")


def in_some_shard(prefix: str, key: str) -> bool:
    """Whether ``key`` belongs to a shard of the namespace ``prefix`` in any number of shards: what a rebuild
    with another number than before must delete.

    Example:
        >>> [in_some_shard("sla:", key) for key in ("sla:{s1.1}:open", "sla:{s7.20}:meta", "sla:eu:open")]
        [True, True, False]
    """
    return key.startswith(prefix) and _SHARD_TAG.match(key, len(prefix)) is not None
