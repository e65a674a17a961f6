"""The real Redis Cluster the store is to run on, through redis-py's ``redis.asyncio.cluster.RedisCluster``.

What the move to the cluster relies on, proven on 3 masters and 3 replicas
(deploy/redis-cluster.sh): a Lua script given keys of one hash tag runs on
their one node, atomically; a script given keys of two hash slots, or
touching a key it was not given, is refused; a killed master's replica takes
over within seconds and the same client carries on (scripts included, though
the new master has never seen them), with every write the replica had
received; and a write the master acknowledged but had not replicated is lost
with it, the case the store must detect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, MovedError, RedisClusterException
from services import unique_name

if TYPE_CHECKING:  # the module itself comes in as the plugin below, so that pytest rewrites its asserts
    from redis_cluster import LocalRedisCluster, Promotion

pytest_plugins = ["redis_cluster"]

T = TypeVar("T")

STEP = """
local n = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], n)
return {n, redis.call('LLEN', KEYS[2]), redis.call('HLEN', KEYS[3])}
"""
"""One step over three keys: a count, a log and an index; returns what it saw of each."""

TAKEOVER_S = 15.0


def tag_keys(tag: str) -> list[str]:
    return [f"{{{tag}}}:count", f"{{{tag}}}:log", f"{{{tag}}}:index"]


def tags_on_masters(cluster: LocalRedisCluster) -> dict[int, str]:
    """A fresh hash tag served by each master: {master port: tag}."""
    base = unique_name("cluster-test")
    masters = cluster.masters()
    found: dict[int, str] = {}
    for i in range(1000):
        slot = cluster.keyslot(f"{{{base}-{i}}}")
        found.setdefault(next(m.port for m in masters if m.serves(slot)), f"{base}-{i}")
        if len(found) == len(masters):
            return found
    raise AssertionError(f"no hash tag found for every master: {found}")


async def until_served(
    cluster: LocalRedisCluster, call: Callable[[], Awaitable[T]], timeout_s: float, seen: list[str]
) -> T:
    """``call()`` again every 0.1 s while the cluster fails over; the error types met go to ``seen``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except cluster.FAILOVER_ERRORS as exc:
            seen.append(type(exc).__name__)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def drop(client: RedisCluster, *tags: str) -> None:
    for tag in tags:
        await client.delete(*tag_keys(tag))


def test_a_script_on_keys_of_one_hash_tag_runs_atomically(redis_cluster: LocalRedisCluster) -> None:
    tag = unique_name("cluster-test")
    keys = tag_keys(tag)
    assert len({redis_cluster.keyslot(k) for k in keys}) == 1

    async def scenario() -> tuple[list[list[int]], str | None, int, dict[str, str]]:
        # 200 connections: redis-py's asyncio RedisCluster raises MaxConnectionsError beyond max_connections
        # (default 100 a node) instead of waiting for a free one.
        url = redis_cluster.url
        async with RedisCluster.from_url(url, decode_responses=True, max_connections=200) as client:
            step = client.register_script(STEP)
            try:
                seen = await asyncio.gather(*(step(keys=keys, args=[f"e{i}"]) for i in range(200)))
                return seen, await client.get(keys[0]), await client.llen(keys[1]), await client.hgetall(keys[2])
            finally:
                await drop(client, tag)

    seen, count, log_length, index = asyncio.run(scenario())
    # 200 steps sent at once ran one after the other, each whole: every step saw its own three writes and
    # every earlier step's, never part of another's.
    assert sorted(n for n, _, _ in seen) == list(range(1, 201))
    assert all(n == length == entries for n, length, entries in seen)
    assert (count, log_length) == ("200", 200)
    assert sorted(int(n) for n in index.values()) == list(range(1, 201))
    assert len(index) == 200


def test_a_script_across_hash_slots_is_refused(redis_cluster: LocalRedisCluster) -> None:
    by_master = tags_on_masters(redis_cluster)
    (port, tag), (other_port, other_tag) = list(by_master.items())[:2]
    here, there = tag_keys(tag)[0], tag_keys(other_tag)[0]
    refused: dict[str, Exception] = {}

    async def scenario() -> list[str | None]:
        async with RedisCluster.from_url(redis_cluster.url, decode_responses=True) as client:
            step = client.register_script("return redis.call('INCR', KEYS[1]) + redis.call('INCR', KEYS[2])")
            await step(keys=[here, tag_keys(tag)[1]])  # one slot: runs (and loads the script on every master)
            try:
                await step(keys=[here, there])
            except RedisClusterException as exc:  # refused by redis-py before sending: no node could run it
                refused["client"] = exc
            node = redis.asyncio.Redis(host=redis_cluster.host, port=port, decode_responses=True)
            try:
                # The node itself, asked directly: CROSSSLOT ...
                try:
                    await node.evalsha(step.sha, 2, here, there)
                except ClusterCrossSlotError as exc:
                    refused["server"] = exc
                # ... a key the script builds from ARGV, of another node's slot: refused while running ...
                try:
                    await node.eval("return redis.call('INCR', ARGV[1])", 1, here, there)
                except redis.ResponseError as exc:
                    refused["undeclared"] = exc
                # ... keys of another node's slot: MOVED there (RedisCluster follows it by itself).
                try:
                    await node.evalsha(step.sha, 2, there, tag_keys(other_tag)[1])
                except MovedError as exc:
                    refused["moved"] = exc
            finally:
                await node.aclose()
            try:
                return [await client.get(here), await client.get(there)]
            finally:
                await drop(client, tag, other_tag)

    left = asyncio.run(scenario())
    assert "all keys must map to the same key slot" in str(refused.get("client")), refused
    # redis-py raises the server's "CROSSSLOT Keys in request don't hash to the same slot" as this class
    assert isinstance(refused.get("server"), ClusterCrossSlotError), refused
    assert "non local key" in str(refused.get("undeclared")), refused
    moved = refused.get("moved")
    assert isinstance(moved, MovedError) and moved.port == other_port, refused
    assert left == ["1", None]  # only the one-slot call ran, nothing of the refused ones


def test_a_killed_master_fails_over_and_the_same_client_carries_on(redis_cluster: LocalRedisCluster) -> None:
    tag = unique_name("cluster-test")
    keys = tag_keys(tag)
    master = redis_cluster.master_for_key(keys[0])
    replicas = redis_cluster.replicas_of(master)
    seen: list[str] = []

    async def scenario() -> tuple[list[int], list[str], float, Promotion]:
        async with RedisCluster.from_url(redis_cluster.url, decode_responses=True) as client:
            step = client.register_script(STEP)
            try:
                for i in range(10):
                    await step(keys=keys, args=[f"before-{i}"])
                redis_cluster.wait_replicated(master)  # the replica has all ten
                killed_at = redis_cluster.kill(master)
                # The same client and script object, called again as a store retries a batch, while the
                # cluster notices and promotes the replica (which has never loaded the script).
                after, promotion = await asyncio.gather(
                    until_served(redis_cluster, lambda: step(keys=keys, args=["after-0"]), TAKEOVER_S, seen),
                    asyncio.to_thread(redis_cluster.wait_promoted, master, TAKEOVER_S),
                )
                served_after = time.monotonic() - killed_at
                more = await step(keys=keys, args=["after-1"])
                return [after[0], more[0]], await client.lrange(keys[1], 0, -1), served_after, promotion
            finally:
                await drop(client, tag)

    counts, log, served_after, promotion = asyncio.run(scenario())
    print(f"\n{promotion}; the client was served again {served_after:.1f} s after the kill, having met {seen}")
    assert promotion.new_master in replicas
    assert served_after < TAKEOVER_S
    assert counts == [11, 12]  # the ten replicated steps survived, and each retried step ran once
    assert log == [f"before-{i}" for i in range(10)] + ["after-0", "after-1"]

    redis_cluster.restart(master)
    assert redis_cluster.info(master, "replication")["role"] == "slave"
    # The node that answers CLUSTER NODES may learn of the rejoined replica by gossip a moment later (seen once on a
    # machine at load 4): wait for it, within bounds.
    deadline = time.monotonic() + TAKEOVER_S
    while redis_cluster.replicas_of(promotion.new_master) != [master] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis_cluster.replicas_of(promotion.new_master) == [master]


def test_a_write_the_master_did_not_replicate_is_lost_with_it(redis_cluster: LocalRedisCluster) -> None:
    tag = unique_name("cluster-test")
    kept, lost, _ = tag_keys(tag)
    master = redis_cluster.master_for_key(kept)

    async def scenario() -> tuple[str | None, str | None, str | None, str | None]:
        async with RedisCluster.from_url(redis_cluster.url, decode_responses=True) as client:
            try:
                await client.set(kept, "replicated")
                redis_cluster.wait_replicated(master)
                with redis_cluster.replication_cut(master):
                    await client.set(lost, "acknowledged")
                    acknowledged = await client.get(lost)
                    redis_cluster.kill(master)
                await asyncio.to_thread(redis_cluster.wait_promoted, master, TAKEOVER_S)
                values = await until_served(redis_cluster, lambda: client.mget(kept, lost), TAKEOVER_S, [])
                await asyncio.to_thread(redis_cluster.restart, master)  # back as a replica: it drops its own copy
                after_restart = await client.get(lost)
            finally:
                await drop(client, tag)
        return acknowledged, values[0], values[1], after_restart

    acknowledged, kept_value, lost_value, after_restart = asyncio.run(scenario())
    assert acknowledged == "acknowledged"
    assert kept_value == "replicated"
    assert lost_value is None
    assert after_restart is None
