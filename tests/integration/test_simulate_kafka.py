"""`sla-stream simulate --kafka` against the real broker.

What lands on the input topics is exactly what ``simulate --out`` writes for
the same seed (without ``"type"``), one event or an array of up to --batch
events of one kind per record, keyed as --key says; live traffic is paced and
never ahead of the clock; a missing topic or an unreachable broker is a
one-line error. Each test sends to its own topics, deleted afterwards.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from services import unique_name

from stream.cli import main
from stream.config import load_settings
from stream.tools import topics

PERIOD = ["--apps", "2", "--start", "2019-03-10T08:00", "--end", "2019-03-10T09:00", "--peak-per-minute", "300"]
SEED = ["--seed", "11", "--duplicate-rate", "0.02"]
KEY_FIELDS = {"app": "app_id", "room": "room_id", "user": "user_id"}


class Sent:
    """One record read back: its topic, key, value (decoded JSON) and broker timestamp."""

    def __init__(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.topic, self.key, self.value, self.timestamp_ms = topic, key.decode(), json.loads(value), timestamp_ms

    @property
    def events(self) -> list[dict]:
        return self.value if isinstance(self.value, list) else [self.value]


@pytest.fixture
def input_topics(tmp_path: Path, kafka_admin: KafkaAdminClient) -> Iterator[tuple[Path, dict[str, str]]]:
    """A settings file whose input topics are fresh (3 partitions) and created; they are deleted afterwards."""
    names = {"request": unique_name("sim-requests"), "success": unique_name("sim-successes")}
    path = tmp_path / "simulate.toml"
    path.write_text(
        f'[kafka]\npartitions = 3\n[kafka.topics]\nrequests = "{names["request"]}"\nsuccesses = "{names["success"]}"\n',
        encoding="utf-8",
    )
    specs = [spec for spec in topics.plan_topics(load_settings(path)) if spec.setting in ("requests", "successes")]
    assert [s.state for s in topics.topic_statuses(load_settings(path), specs, create=True)] == ["created"] * 2
    yield path, names
    kafka_admin.delete_topics(list(names.values()), timeout_ms=10_000)


def read_all(bootstrap: str, names: list[str]) -> list[Sent]:
    """Every record of the topics, from the beginning to their current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(name, p) for name in names for p in consumer.partitions_for_topic(name)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        records: list[Sent] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                records += [Sent(m.topic, m.key, m.value, m.timestamp) for m in messages]
        return records
    finally:
        consumer.close()


def run(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


@pytest.mark.parametrize(
    ("batch", "key", "compression"),
    [(1, "room", None), (50, "app", "zstd"), (20, "user", "snappy"), (1, "user", "lz4"), (5, "room", "gzip")],
)
def test_the_topics_hold_what_the_file_holds_packed_and_keyed_as_asked(
    input_topics: tuple[Path, dict[str, str]],
    kafka_bootstrap: str,
    tmp_path: Path,
    batch: int,
    key: str,
    compression: str | None,
) -> None:
    path, names = input_topics
    file = tmp_path / "events.jsonl"
    assert run("simulate", *PERIOD, *SEED, "--out", file) == 0
    expected: Counter[tuple[str, str]] = Counter()
    for line in file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        expected[(record.pop("type"), json.dumps(record, sort_keys=True))] += 1

    started_ms = time.time_ns() // 1_000_000
    sent = ["--kafka", "--config", path, "--batch", str(batch), "--key", key]
    sent += ["--compression", compression] if compression else []
    assert run("simulate", *PERIOD, *SEED, *sent) == 0
    records = read_all(kafka_bootstrap, list(names.values()))

    got: Counter[tuple[str, str]] = Counter()
    kind_of = {topic: kind for kind, topic in names.items()}
    for record in records:
        kind = kind_of[record.topic]
        assert isinstance(record.value, list) == (batch > 1)
        assert 1 <= len(record.events) <= batch
        for event in record.events:
            assert ("request_id" in event) == (kind == "success")
            assert event[KEY_FIELDS[key]] == record.key
            got[(kind, json.dumps(event, sort_keys=True))] += 1
        assert started_ms - 1000 <= record.timestamp_ms <= time.time_ns() // 1_000_000  # sending time, not event time
    assert got == expected
    if key == "app":  # (a user seldom has two events within 5 s: by user, most arrays hold one)
        assert len(records) < sum(expected.values()) / 5  # arrays really carry several events


def test_live_traffic_is_paced_and_never_ahead_of_the_clock(
    input_topics: tuple[Path, dict[str, str]], kafka_bootstrap: str
) -> None:
    path, names = input_topics
    live = ["--apps", "2", "--duration", "1m", "--speed", "12", "--peak-per-minute", "1200", "--late-rate", "0"]
    started_ms = time.time_ns() // 1_000_000
    assert run("simulate", *live, "--duplicate-rate", "0", "--kafka", "--config", path, "--batch", "10") == 0
    ended_ms = time.time_ns() // 1_000_000
    assert 4_800 <= ended_ms - started_ms <= 20_000  # a minute at 12 times real time: 5 s, setup and the tail

    records = read_all(kafka_bootstrap, list(names.values()))
    assert records
    for record in records:
        for event in record.events:
            assert event["ts"] <= record.timestamp_ms + 1000, "an event was sent ahead of the clock"
    sent_at = sorted(record.timestamp_ms for record in records)
    assert sent_at[-1] - sent_at[0] >= 4_000  # spread over the run, not sent at once
    requests = [event["ts"] for record in records if record.topic == names["request"] for event in record.events]
    # the minute ending 5 s after the paced run's start, which is after started_ms and 5 s before ended_ms
    assert started_ms - 55_000 <= min(requests) <= ended_ms - 55_000
    assert ended_ms - 8_000 <= max(requests) <= ended_ms


def test_a_missing_topic_is_an_error_and_is_not_created(
    tmp_path: Path, kafka_admin: KafkaAdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = unique_name("sim-missing")
    path = tmp_path / "missing.toml"
    path.write_text(f'[kafka.topics]\nrequests = "{missing}"\nsuccesses = "{missing}-s"\n', encoding="utf-8")
    assert run("simulate", *PERIOD, "--kafka", "--config", path) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"topic {missing} (kafka.topics.requests) does not exist" in err[0]
    assert missing not in kafka_admin.list_topics()


def test_an_unreachable_broker_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setattr(topics, "TIMEOUT_MS", 2_000)
    assert run("simulate", *PERIOD, "--kafka") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("sla-stream: Kafka at 127.0.0.1:1 is not reachable")
