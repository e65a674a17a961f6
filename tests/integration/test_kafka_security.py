"""Every command against a Kafka broker and a Redis server that demand credentials and TLS.

A second broker, started for this module from the project's Kafka jars
(:mod:`secure_services`), offers SASL_PLAINTEXT with SCRAM-SHA-256 (19092),
SSL with an optional client certificate (19093) and SASL_SSL with PLAIN and
SCRAM-SHA-512 (19096); a second Redis wants a password, and TLS on its second
port. Through each listener ``sla-stream topics`` creates the topics,
``simulate --kafka`` sends events that a kafka-python consumer with the same
options reads back, and a worker counts events into Redis. A wrong password,
a wrong key password or an untrusted certificate is one line on stderr, exit
status 2, naming the address and holding no password (neither the right nor
the wrong one). The commands run as subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError
from secure_services import (
    HOST,
    REDIS_PORT,
    REDIS_TLS_PORT,
    SASL_PORT,
    SASL_SSL_PORT,
    SSL_PORT,
    Certs,
    Service,
    make_certs,
    start_kafka,
    start_redis,
)

from stream.config import Settings, load_settings
from stream.kafka_security import kafka_python_options

USER = "sla-stream"
PASSWORD = f"kafka-pw-{uuid.uuid4().hex[:10]}"
WRONG_PASSWORD = f"wrong-pw-{uuid.uuid4().hex[:10]}"
KEY_PASSWORD = f"key-pw-{uuid.uuid4().hex[:10]}"
REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex[:10]}"
SECRETS = (PASSWORD, WRONG_PASSWORD, KEY_PASSWORD, REDIS_PASSWORD)
PASSWORD_ENV, KEY_PASSWORD_ENV = "SLA_TEST_KAFKA_PASSWORD", "SLA_TEST_KEY_PASSWORD"
_CONSOLE_SCRIPT = Path(sys.executable).with_name("sla-stream")
SLA_STREAM = [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "stream.cli"]
PERIOD = ["--apps", "2", "--start", "2019-03-10T08:00", "--end", "2019-03-10T08:10", "--peak-per-minute", "60"]
SASL = f'sasl_mechanism = "{{mechanism}}"\nusername = "{USER}"\npassword_env = "{PASSWORD_ENV}"\n'


def listener_security(name: str, certs: Certs) -> tuple[int, str]:
    """The port of a listener of the secured broker and the ``[kafka.security]`` body that gets in."""
    ca = f'ca_file = "{certs.ca}"\n'
    client = (
        f'cert_file = "{certs.client_cert}"\nkey_file = "{certs.client_key}"\nkey_password_env = "{KEY_PASSWORD_ENV}"\n'
    )
    return {
        "sasl-plaintext-scram-sha-256": (
            SASL_PORT,
            'protocol = "SASL_PLAINTEXT"\n' + SASL.format(mechanism="SCRAM-SHA-256"),
        ),
        "ssl-client-certificate": (SSL_PORT, 'protocol = "SSL"\n' + ca + client),
        "ssl-ca-only": (SSL_PORT, 'protocol = "SSL"\n' + ca),
        "sasl-ssl-plain": (SASL_SSL_PORT, 'protocol = "SASL_SSL"\n' + SASL.format(mechanism="PLAIN") + ca),
        "sasl-ssl-scram-sha-512": (
            SASL_SSL_PORT,
            'protocol = "SASL_SSL"\n' + SASL.format(mechanism="SCRAM-SHA-512") + ca,
        ),
    }[name]


@dataclass(frozen=True)
class Run:
    """What one ``sla-stream`` subprocess did."""

    code: int
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def assert_no_secret(self) -> None:
        for secret in SECRETS:
            assert secret not in self.out + self.err, "a password was printed"

    def one_line_error(self) -> str:
        """Exit status 2, one stderr line, no traceback, no password; returns the line."""
        self.assert_no_secret()
        assert self.code == 2, (self.code, self.out, self.err)
        assert "Traceback" not in self.out + self.err and len(self.err_lines) == 1, self.err
        return self.err_lines[0]


def environment(password: str = PASSWORD, **extra: str) -> dict[str, str]:
    """The commands' environment: the secrets in variables, no address overrides (the settings file says where)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL")}
    return {**env, PASSWORD_ENV: password, KEY_PASSWORD_ENV: KEY_PASSWORD, "PYTHONUNBUFFERED": "1", **extra}


def sla_stream(*argv: str | Path, env: Mapping[str, str], cwd: Path | None = None, timeout_s: float = 60) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        [*SLA_STREAM, *map(str, argv)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def write_settings(directory: Path, bootstrap: str, security: str, key_prefix: str | None = None) -> Path:
    """A settings file of its own (topics, group, key prefix) for ``bootstrap`` with this ``[kafka.security]``."""
    tag = uuid.uuid4().hex[:10]
    key_prefix = key_prefix or f"sla-sec-{tag}:"
    names = ("requests", "successes", "exemptions", "verdicts", "dead_letter")
    path = directory / f"settings-{tag}.toml"
    path.write_text(
        f'[stream]\ngroup = "sec-{tag}"\ngrace_seconds = 0\n\n'
        f'[kafka]\nbootstrap = "{bootstrap}"\npartitions = 2\n\n'
        "[kafka.topics]\n" + "".join(f'{name} = "sec-{tag}-{name}"\n' for name in names) + "\n"
        f"[kafka.security]\n{security}\n"
        f'[redis]\nkey_prefix = "{key_prefix}"\n',
        encoding="utf-8",
    )
    return path


def settings_of(path: Path, password: str = PASSWORD) -> Settings:
    return load_settings(path, environ={PASSWORD_ENV: password, KEY_PASSWORD_ENV: KEY_PASSWORD})


def read_events(settings: Settings) -> int:
    """Events on the input topics, read with kafka-python and the same security options the commands use."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **kafka_python_options(settings.kafka_security),
    )
    try:
        names = (settings.topics.requests, settings.topics.successes)
        partitions = [TopicPartition(name, p) for name in names for p in consumer.partitions_for_topic(name)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        events = 0
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                for message in messages:
                    value = json.loads(message.value)
                    events += len(value) if isinstance(value, list) else 1
        return events
    finally:
        consumer.close()


def wait_for_group_coordinator(settings: Settings, timeout_s: float = 20) -> None:
    """Until the broker can coordinate the worker's consumer group.

    A fresh broker creates ``__consumer_offsets`` on the first coordinator
    lookup and answers CoordinatorNotAvailable until it has; the worker's
    start (``worker.earlier_progress``) does not wait for that yet, so on a
    brand-new cluster its first start fails. This broker is brand new.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_python_options(settings.kafka_security)
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                admin.list_group_offsets(settings.group)
                return
            except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError):  # a brand-new __consumer_offsets
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        admin.close()


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"), KEY_PASSWORD)


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Service]:
    broker = start_kafka(tmp_path_factory.mktemp("kafka"), certs, {USER: PASSWORD}, {USER: PASSWORD})
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Service]:
    server = start_redis(tmp_path_factory.mktemp("redis"), certs, REDIS_PASSWORD)
    yield server
    server.stop()


# --------------------------------------------------------------------------- Kafka


@pytest.mark.parametrize(
    "listener", ["sasl-plaintext-scram-sha-256", "ssl-client-certificate", "sasl-ssl-plain", "sasl-ssl-scram-sha-512"]
)
def test_topics_and_simulate_work_through_each_listener(
    secured_kafka: Service, certs: Certs, tmp_path: Path, listener: str
) -> None:
    port, security = listener_security(listener, certs)
    config = write_settings(tmp_path, f"{HOST}:{port}", security)
    created = sla_stream("topics", "--config", config, env=environment())
    created.assert_no_secret()
    assert created.code == 0, created.err
    assert [line.split()[0] for line in created.out.splitlines()] == ["created"] * 5

    sent = sla_stream(
        "simulate", *PERIOD, "--seed", "5", "--kafka", "--batch", "5", "--config", config, env=environment()
    )
    sent.assert_no_secret()
    assert sent.code == 0, sent.err
    counts = re.search(r"sent ([\d,]+) request and ([\d,]+) success events", sent.err)
    assert counts, sent.err
    total = sum(int(n.replace(",", "")) for n in counts.groups())
    assert total > 100
    assert read_events(settings_of(config)) == total


def test_a_wrong_password_is_one_line_naming_the_listener(secured_kafka: Service, certs: Certs, tmp_path: Path) -> None:
    port, security = listener_security("sasl-plaintext-scram-sha-256", certs)
    config = write_settings(tmp_path, f"{HOST}:{port}", security)
    wrong = environment(password=WRONG_PASSWORD)
    startup = sla_stream("worker", "--help", env=wrong).seconds  # the imports, on this machine, now
    for argv in (["topics"], ["simulate", *PERIOD, "--kafka"], ["worker", "--metrics-port", "off"]):
        run = sla_stream(*argv, "--config", config, env=wrong, cwd=tmp_path)
        line = run.one_line_error()
        assert line.startswith(f"sla-stream: Kafka at {HOST}:{SASL_PORT} refused sla-stream"), line
        assert "SCRAM-SHA-256 as user sla-stream" in line and "SaslAuthenticationFailed" in line
        waited = run.seconds - startup
        assert waited < 6, f"a refused password is reported at once, not after the 10 s timeout ({waited:.1f} s)"

    port, security = listener_security("sasl-ssl-plain", certs)
    line = sla_stream("topics", "--config", write_settings(tmp_path, f"{HOST}:{port}", security), env=wrong)
    assert line.one_line_error().startswith(f"sla-stream: Kafka at {HOST}:{SASL_SSL_PORT} refused sla-stream")


def test_tls_mistakes_are_one_line_without_the_key_password(
    secured_kafka: Service, certs: Certs, tmp_path: Path
) -> None:
    port, security = listener_security("ssl-ca-only", certs)
    ok = sla_stream("topics", "--config", write_settings(tmp_path, f"{HOST}:{port}", security), env=environment())
    assert ok.code == 0, ok.err  # the listener asks for a client certificate but does not require one

    _, with_client = listener_security("ssl-client-certificate", certs)
    config = write_settings(tmp_path, f"{HOST}:{port}", with_client)
    line = sla_stream("topics", "--config", config, env=environment(**{KEY_PASSWORD_ENV: WRONG_PASSWORD}))
    assert line.one_line_error().startswith(
        f"sla-stream: kafka.security.cert_file: the client certificate {certs.client_cert} and its key"
    )

    untrusted = write_settings(tmp_path, f"{HOST}:{port}", 'protocol = "SSL"\n')  # the system's CAs only
    line = sla_stream("topics", "--config", untrusted, env=environment()).one_line_error()
    assert line.startswith(f"sla-stream: Kafka at {HOST}:{SSL_PORT} refused sla-stream (SSL, the system's CAs)")
    assert "CERTIFICATE_VERIFY_FAILED" in line


def test_a_worker_counts_through_the_sasl_listener(
    secured_kafka: Service, certs: Certs, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Events produced over SCRAM-SHA-256 get counted into Redis by ``sla-stream worker``."""
    port, security = listener_security("sasl-plaintext-scram-sha-256", certs)
    config = write_settings(tmp_path, f"{HOST}:{port}", security, key_prefix=redis_prefix)
    settings = settings_of(config)
    env = environment(REDIS_URL=redis_url)
    assert sla_stream("topics", "--config", config, env=env).code == 0
    wait_for_group_coordinator(settings)

    now = int(time.time() * 1000) - 60_000
    requests = [
        {"event_id": f"r-{i}", "app_id": "1400000001", "room_id": "r", "user_id": f"u{i}", "ts": now + i}
        for i in range(20)
    ]
    successes = [
        {**r, "event_id": f"s-{i}", "request_id": r["event_id"], "ts": r["ts"] + 100, "request_ts": r["ts"]}
        for i, r in enumerate(requests[:15])
    ]
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **kafka_python_options(settings.kafka_security)
    )
    placed = [
        producer.send(topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
        for topic, events in ((settings.topics.requests, requests), (settings.topics.successes, successes))
        for event in events
    ]
    producer.flush(30)
    last: dict[str, int] = {}
    for future in placed:
        meta = future.get(30)
        last[f"{meta.topic}:{meta.partition}"] = max(meta.offset, last.get(f"{meta.topic}:{meta.partition}", -1))
    producer.close()

    store = redis.Redis.from_url(redis_url, decode_responses=True)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [*SLA_STREAM, "worker", "--config", str(config), "--metrics-port", "off"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 45
        applied: dict[str, str] = {}
        while time.monotonic() < deadline and worker.poll() is None:
            applied = store.hgetall(f"{redis_prefix}offsets")
            if all(int(applied.get(tp, -1)) >= offset for tp, offset in last.items()):
                break
            time.sleep(0.3)
        output = log.read_text(errors="replace")
        assert worker.poll() is None, f"the worker exited with {worker.returncode}:\n{output[-3000:]}"
        assert {tp: int(applied.get(tp, -1)) for tp in last} == last, output[-3000:]
        counted = {"requests": 0, "successes": 0}
        for key in store.scan_iter(match=f"{redis_prefix}slot:1400000001:*"):
            for field, value in store.hgetall(key).items():
                if field in counted:
                    counted[field] += int(value)
        assert counted == {"requests": 20, "successes": 15}
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        store.close()
    output = log.read_text(errors="replace")
    for secret in SECRETS:
        assert secret not in output, "a password is in the worker's log"


# --------------------------------------------------------------------------- Redis


def test_watch_reads_redis_with_a_password_and_over_tls(secured_redis: Service, certs: Certs, tmp_path: Path) -> None:
    config = write_settings(tmp_path, f"{HOST}:{SASL_PORT}", 'protocol = "PLAINTEXT"\n')
    urls = [
        f"redis://:{REDIS_PASSWORD}@{HOST}:{REDIS_PORT}/0",
        f"rediss://:{REDIS_PASSWORD}@{HOST}:{REDIS_TLS_PORT}/0?ssl_ca_certs={certs.ca}",
    ]
    for url in urls:
        run = sla_stream("watch", "--once", "--config", config, env=environment(REDIS_URL=url))
        run.assert_no_secret()
        assert run.code == 0, run.err
        assert run.out.startswith("sla-stream live") and "(no traffic yet)" in run.out


def test_a_wrong_redis_password_or_an_untrusted_certificate_is_one_line(
    secured_redis: Service, certs: Certs, tmp_path: Path
) -> None:
    config = write_settings(tmp_path, f"{HOST}:{SASL_PORT}", 'protocol = "PLAINTEXT"\n')
    wrong = f"redis://:{WRONG_PASSWORD}@{HOST}:{REDIS_PORT}/0"
    line = sla_stream("watch", "--once", "--config", config, env=environment(REDIS_URL=wrong)).one_line_error()
    assert line.startswith(f"sla-stream: Redis at redis://:***@{HOST}:{REDIS_PORT}/0 refused sla-stream"), line

    untrusted = f"rediss://:{REDIS_PASSWORD}@{HOST}:{REDIS_TLS_PORT}/0"  # the test CA is not the system's
    line = sla_stream("watch", "--once", "--config", config, env=environment(REDIS_URL=untrusted)).one_line_error()
    assert line.startswith(f"sla-stream: Redis at rediss://:***@{HOST}:{REDIS_TLS_PORT}/0 is not reachable"), line
    assert "CERTIFICATE_VERIFY_FAILED" in line
