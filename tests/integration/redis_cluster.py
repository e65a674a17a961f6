"""A real Redis Cluster for the tests that need one (3 masters, 3 replicas on loopback), and its faults.

The cluster is the one ``deploy/redis-cluster.sh`` runs (``make cluster-up``):
Debian's ``redis-server`` on 127.0.0.1, ports ``REDIS_CLUSTER_PORTS`` (default
7100-7105), ``--cluster-node-timeout 3000``. The session fixture starts it when
none of ours runs (``deploy/redis-cluster.sh up``, about 3 s) and stops it at the
end of the session only then; a cluster already running (``make cluster-up``) is
reused and left running. ``REDIS_CLUSTER_URL=redis://host:port`` points at another
cluster instead: nothing is started, and the fault helpers refuse, since they
need to kill and restart nodes (pytest fails, never skips, as for the other
services).

Tests take it with ``pytest_plugins = ["redis_cluster"]`` in the test module and
the ``redis_cluster`` fixture (a :class:`LocalRedisCluster`)::

    async with RedisCluster.from_url(redis_cluster.url) as client: ...
    port = redis_cluster.master_for_key("{app-1}:count")  # the master serving that key's hash slot
    with redis_cluster.replication_cut(port):               # optional: writes now reach the master only
        ...write...
        redis_cluster.kill(port)                            # SIGKILL
    failover = redis_cluster.wait_promoted(port)            # its replica serves its slots; .seconds, .new_master
    redis_cluster.restart(port)                             # back, as a replica of the new master

Reading: ``url``, ``ports``, ``node(port)`` (a plain client of one node),
``topology()``, ``masters()``, ``replicas_of(port)``, ``keyslot(key)``,
``master_for_key(key)``, ``info(port, section)``. Waiting: ``wait_replicated(master)``
(its replicas have everything it wrote), ``wait_promoted(killed)``,
``wait_healthy()``. Faults: ``kill(port)``, ``fail_master(port)`` (kill and wait),
``restart(port)``, ``restore()``, ``replication_cut(master)``. ``FAILOVER_ERRORS``:
what a ``RedisCluster`` call may raise meanwhile, to retry on.

Whatever a test killed is started again after it (``redis_cluster`` is
function-scoped over the session's ``redis_cluster_session``), and the next
test starts on a healthy cluster: ``cluster_state:ok`` everywhere, 3 masters with
a replica each, every replica synced (``master_link_status:up``; a replica that
never synced cannot fail over). Session-scoped fixtures of other modules take
``redis_cluster_session`` (and must not kill nodes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, RedisClusterUnreachableError, SlotNotCoveredError
from redis.retry import Retry

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "redis-cluster.sh"
STATE = ROOT / ".run" / "redis-cluster"
HOST = "127.0.0.1"
DEFAULT_PORTS = "7100 7101 7102 7103 7104 7105"
UP_TIMEOUT_S = 300  # the first `up` on a fresh machine may install redis-server with apt-get
PROMOTION_TIMEOUT_S = 30.0


def configured_ports() -> list[int]:
    """The ports deploy/redis-cluster.sh uses (``REDIS_CLUSTER_PORTS``, comma or space separated)."""
    return [int(p) for p in os.environ.get("REDIS_CLUSTER_PORTS", DEFAULT_PORTS).replace(",", " ").split()]


class ClusterTimeout(AssertionError):
    """A bounded wait on the cluster ran out; the message says what was awaited and what was seen."""


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES`` as one node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]
    """Inclusive ranges of hash slots this node serves (masters only)."""

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


@dataclass(frozen=True)
class Promotion:
    """What :meth:`LocalRedisCluster.wait_promoted` saw: who serves the dead master's slots, and how soon."""

    killed: int
    new_master: int
    seconds: float
    """From the SIGKILL until every live node said ``cluster_state:ok`` with the slots on ``new_master``."""


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """``CLUSTER NODES`` as :class:`ClusterNode` s (slot ranges only; migrating-slot entries are skipped)."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@")[0]  # ip:port@cport[,hostname]
        slots = []
        for spec in fields[8:]:
            if spec.startswith("["):
                continue
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                node_id=fields[0],
                port=int(address.rpartition(":")[2]),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return nodes


class LocalRedisCluster:
    """The cluster's addresses, what it looks like now, and the faults a test can inject into it."""

    FAILOVER_ERRORS = (
        redis.ConnectionError,
        redis.TimeoutError,
        ClusterError,  # CLUSTERDOWN, MASTERDOWN
        SlotNotCoveredError,
        RedisClusterUnreachableError,
    )
    """What redis-py's ``RedisCluster`` may raise while a master fails over (after its own retries): try again."""

    def __init__(self, ports: list[int], host: str = HOST, managed: bool = True, url: str | None = None) -> None:
        self.host = host
        self.ports = list(ports)
        self.url = url or f"redis://{host}:{ports[0]}"
        """A seed URL for ``redis.asyncio.cluster.RedisCluster.from_url`` (it discovers the other nodes)."""
        parts = urlsplit(self.url)
        self._auth = {
            "username": unquote(parts.username or "") or None,
            "password": unquote(parts.password or "") or None,
        }
        self.managed = managed
        """True when deploy/redis-cluster.sh runs the nodes here, so they can be killed and restarted."""
        self.killed: dict[int, float] = {}
        """Ports killed and not restarted yet, with the monotonic time of the SIGKILL."""
        self._slots_of_killed: dict[int, tuple[tuple[int, int], ...]] = {}

    # ------------------------------------------------------------------ reading

    def node(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client of one node, which does not retry; close it after use.

        (redis-py 8 retries a timed-out command 10 times by default: asking a
        stopped node would take a minute instead of ``socket_timeout``.)
        """
        return redis.Redis(
            host=self.host,
            port=port,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
            **self._auth,
        )

    def _ask(self, port: int, *command: str) -> str | None:
        """One command to one node; None when it does not answer."""
        client = self.node(port)
        try:
            return client.execute_command(*command)
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        finally:
            client.close()

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p not in self.killed]

    def topology(self, port: int | None = None) -> list[ClusterNode]:
        """The cluster as node ``port`` sees it (by default the first live node that answers)."""
        for candidate in [port] if port is not None else self.live_ports():
            text = self._ask(candidate, "CLUSTER", "NODES")
            if text is not None:
                return parse_cluster_nodes(text)
        raise ClusterTimeout(f"no node of {self.ports} answers")

    def masters(self) -> list[ClusterNode]:
        """The masters serving slots, as the first live node sees them."""
        return [n for n in self.topology() if n.is_master and n.slots and not n.failing]

    def replicas_of(self, port: int) -> list[int]:
        nodes = self.topology()
        master = next(n for n in nodes if n.port == port)
        return [n.port for n in nodes if n.master_id == master.node_id]

    def keyslot(self, key: str) -> int:
        """The hash slot of ``key`` as the server computes it (``CLUSTER KEYSLOT``; a ``{tag}`` decides)."""
        for port in self.live_ports():
            slot = self._ask(port, "CLUSTER", "KEYSLOT", key)
            if slot is not None:
                return int(slot)
        raise ClusterTimeout(f"no node of {self.ports} answers")

    def master_for_key(self, key: str) -> int:
        """The port of the master serving ``key``'s hash slot now."""
        slot = self.keyslot(key)
        for node in self.masters():
            if node.serves(slot):
                return node.port
        raise ClusterTimeout(f"no live master serves slot {slot} (key {key!r})")

    def info(self, port: int, section: str) -> dict[str, Any]:
        """``INFO section`` of one node, as redis-py parses it (empty when the node does not answer)."""
        client = self.node(port)
        try:
            return client.info(section)
        except (redis.ConnectionError, redis.TimeoutError):
            return {}
        finally:
            client.close()

    def pid(self, port: int) -> int:
        """The node's process id (``INFO server``), checked against the pid file deploy/redis-cluster.sh wrote."""
        pid = self.info(port, "server").get("process_id", 0)
        pidfile = STATE / f"{port}.pid"
        ours = pidfile.exists() and pidfile.read_text().strip() == str(pid)
        if not (self.managed and pid and ours):
            pytest.fail(
                f"node {self.host}:{port} (pid {pid or '?'}) was not started by deploy/redis-cluster.sh here, "
                "so it cannot be killed or restarted (unset REDIS_CLUSTER_URL to let the tests run their own)",
                pytrace=False,
            )
        return pid

    # ------------------------------------------------------------------ waiting

    def wait_replicated(self, master: int, timeout_s: float = 10.0) -> None:
        """Wait until every replica of ``master`` has applied everything the master had written so far."""
        target = int(self.info(master, "replication")["master_repl_offset"])
        deadline = time.monotonic() + timeout_s
        replicas = self.replicas_of(master)
        while True:
            offsets = {p: self.info(p, "replication").get("slave_repl_offset", -1) for p in replicas}
            if replicas and all(o >= target for o in offsets.values()):
                return
            if time.monotonic() > deadline:
                raise ClusterTimeout(f"replicas of {master} did not reach offset {target} in {timeout_s}s: {offsets}")
            time.sleep(0.05)

    def wait_promoted(self, killed: int, timeout_s: float = PROMOTION_TIMEOUT_S) -> Promotion:
        """After :meth:`kill` of a master: wait until one of its replicas serves its slots and the cluster is up.

        Up: every live node says ``cluster_state:ok`` and sees the dead
        master's first slot on the same live master (so a client that reads
        the topology from any node is routed there).
        """
        if killed not in self.killed:
            raise ValueError(f"node {killed} was not killed by kill()")
        if not self._slots_of_killed[killed]:
            raise ValueError(f"node {killed} served no slots when it was killed (a replica): nothing to take over")
        slot = self._slots_of_killed[killed][0][0]
        deadline = self.killed[killed] + timeout_s
        seen = ""
        while True:
            owners = set()
            for port in self.live_ports():
                state = self._ask(port, "CLUSTER", "INFO")
                if state is None or "cluster_state:ok" not in state:
                    owners.add(None)
                    continue
                masters = [n for n in parse_cluster_nodes(self._ask(port, "CLUSTER", "NODES") or "") if n.is_master]
                owners.add(next((n.port for n in masters if n.serves(slot) and not n.failing), None))
            if len(owners) == 1 and (owner := owners.pop()) not in (None, killed):
                return Promotion(killed, owner, time.monotonic() - self.killed[killed])
            seen = f"slot {slot} served by {sorted(owners, key=str)} as the live nodes see it"
            if time.monotonic() > deadline:
                raise ClusterTimeout(f"node {killed}'s slots were not taken over within {timeout_s}s: {seen}")
            time.sleep(0.1)

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Wait until ``deploy/redis-cluster.sh status`` says healthy (every replica synced, no node failing)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, env=_script_env())
            if status.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterTimeout(f"the cluster is not healthy after {timeout_s}s:\n{status.stdout}{status.stderr}")
            time.sleep(0.5)

    # ------------------------------------------------------------------ faults

    def kill(self, port: int) -> float:
        """SIGKILL node ``port`` (no shutdown, no last fsync); returns the monotonic time of the kill.

        Waits until the process is gone (or a zombie, where no init reaps it),
        so its port refuses connections when this returns.
        """
        pid = self.pid(port)
        me = next(n for n in self.topology(port) if n.port == port)
        self._slots_of_killed[port] = me.slots
        os.kill(pid, signal.SIGKILL)
        at = time.monotonic()
        self.killed[port] = at
        while _running(pid):
            if time.monotonic() - at > 10:
                raise ClusterTimeout(f"pid {pid} (node {port}) still runs 10 s after SIGKILL")
            time.sleep(0.01)
        return at

    def fail_master(self, port: int, timeout_s: float = PROMOTION_TIMEOUT_S) -> Promotion:
        """:meth:`kill` master ``port`` and :meth:`wait_promoted`."""
        self.kill(port)
        return self.wait_promoted(port, timeout_s)

    def restart(self, port: int) -> None:
        """Start a killed node again (same directory and nodes.conf) and wait until the cluster is healthy.

        A killed master whose slots were taken over comes back as a replica of
        the node that took them, and syncs from it (what it had written and
        not replicated is gone for good).
        """
        if not (self.managed and (STATE / str(port) / "nodes.conf").exists()):
            pytest.fail(
                f"node {port} was not started by deploy/redis-cluster.sh here, cannot restart it", pytrace=False
            )
        run_script("start-node", str(port))
        self.killed.pop(port, None)

    def restore(self) -> None:
        """Start every node this test killed again and wait until the cluster is healthy (``up`` does both)."""
        if self.killed:
            run_script("up")
            self.killed.clear()

    @contextlib.contextmanager
    def replication_cut(self, master: int) -> Iterator[list[int]]:
        """Inside: writes to ``master`` are acknowledged but reach none of its replicas; yields the replicas' ports.

        Each replica is stopped (SIGSTOP) and the master's links to them are
        closed (``CLIENT KILL TYPE replica``), so nothing written afterwards can
        sit unread in a replica's socket either. Kill the master inside the
        block to lose those writes, as asynchronous replication does when a
        master dies before its replica caught up: on leaving, the replicas
        continue (SIGCONT), and one is promoted without them. Left without a
        kill, the replicas reconnect and catch up. Keep the block short: a
        replica whose link has been down longer than node timeout × 10 + 10 s
        (40 s here) may no longer fail over.
        """
        replicas = self.replicas_of(master)
        pids = [self.pid(p) for p in replicas]
        self.pid(master)  # ours too
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            client = self.node(master)
            try:
                client.execute_command("CLIENT", "KILL", "TYPE", "replica")
            finally:
                client.close()
            yield replicas
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------------- plumbing


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_CLUSTER_URL", None)
    return env


def run_script(*args: str, timeout_s: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run deploy/redis-cluster.sh ARGS; fail the test with its output when it fails."""
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s, env=_script_env()
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"deploy/redis-cluster.sh {' '.join(args)} still ran after {timeout_s}s: {exc.stderr}", pytrace=False
        )
    if done.returncode != 0:
        pytest.fail(
            f"deploy/redis-cluster.sh {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}",
            pytrace=False,
        )
    return done


def _running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie, exited but not reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _discover(url: str) -> LocalRedisCluster:
    """A cluster given by a seed URL: its nodes' ports from ``CLUSTER NODES`` (nothing here manages them)."""
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 6379
    seed = LocalRedisCluster([port], host=host, managed=False, url=url)
    try:
        nodes = seed.topology(port)
    except ClusterTimeout:
        pytest.fail(f"the Redis Cluster at REDIS_CLUSTER_URL={url} does not answer", pytrace=False)
    others = sorted(n.port for n in nodes if n.port != port)
    return LocalRedisCluster([port, *others], host=host, managed=False, url=url)


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[LocalRedisCluster]:
    """The session's cluster: started by deploy/redis-cluster.sh when none of ours runs, then stopped at the end."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield _discover(url)
        return
    before = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, env=_script_env())
    ours_running = before.returncode in (0, 1)
    run_script("up")
    cluster = LocalRedisCluster(configured_ports())
    try:
        yield cluster
    finally:
        if ours_running:
            cluster.restore()  # leave it as healthy as it was found
        else:
            run_script("down")


@pytest.fixture
def redis_cluster(redis_cluster_session: LocalRedisCluster) -> Iterator[LocalRedisCluster]:
    """The session's cluster for one test; any node the test killed is started again after it."""
    redis_cluster_session.restore()  # in case an earlier test's teardown could not
    yield redis_cluster_session
    redis_cluster_session.restore()
