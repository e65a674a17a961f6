"""`sla-stream topics` against the real broker: created as planned, idempotent, problems reported, broker down.

Every test names its own topics (unique per run) in a settings file and
deletes them afterwards, so the real topics of a local deployment are never
touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from services import unique_name

from stream.cli import main
from stream.config import Topics, load_settings
from stream.tools import topics

DAY_MS = 86_400_000
CHECKED = ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas")
Run = Callable[..., tuple[int, list[str], list[str]]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``sla-stream`` in process: (exit status, stdout lines, stderr lines)."""

    def run_cli(*argv: str | Path) -> tuple[int, list[str], list[str]]:
        capsys.readouterr()
        code = main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err.splitlines()

    return run_cli


@pytest.fixture
def topic_settings(tmp_path: Path, kafka_admin: KafkaAdminClient) -> Iterator[tuple[Path, dict[str, str]]]:
    """A settings file naming five fresh topics (3 partitions, 100 days); whichever exist afterwards are deleted."""
    names = {setting: unique_name(f"topics-{setting.replace('_', '-')}") for setting in Topics.__dataclass_fields__}
    path = tmp_path / "topics.toml"
    lines = ["[kafka]", "partitions = 3", "retention_days = 100", "[kafka.topics]"]
    path.write_text("\n".join(lines + [f'{key} = "{name}"' for key, name in names.items()]) + "\n", encoding="utf-8")
    yield path, names
    existing = set(kafka_admin.list_topics()) & set(names.values())
    if existing:
        kafka_admin.delete_topics(sorted(existing), timeout_ms=10_000)


def read_back(admin: KafkaAdminClient, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic's partition count and checked configs, as the broker reports them."""
    partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(CHECKED)) for name in names]
    configs = admin.describe_configs(resources, config_filter="all")["topic"]
    return {name: (partitions[name], {k: v["value"] for k, v in configs[name].items()}) for name in names}


def test_topics_are_created_as_planned_and_a_second_run_finds_them_ok(
    run: Run, topic_settings: tuple[Path, dict[str, str]], kafka_admin: KafkaAdminClient
) -> None:
    path, names = topic_settings
    code, out, err = run("topics", "--config", path)
    assert (code, err) == (0, [])
    assert [line.split()[:2] for line in out] == [["created", f"{name}:"] for name in names.values()]

    retained = {
        "cleanup.policy": "delete",
        "retention.ms": str(100 * DAY_MS),
        "retention.bytes": "-1",
        "min.insync.replicas": "1",
    }
    found = read_back(kafka_admin, list(names.values()))
    assert found[names["requests"]] == (3, retained)
    assert found[names["successes"]] == (3, retained)
    assert found[names["dead_letter"]] == (3, retained)
    assert found[names["exemptions"]][0] == 1
    assert found[names["verdicts"]][0] == 3
    for compacted in ("exemptions", "verdicts"):
        assert found[names[compacted]][1]["cleanup.policy"] == "compact"

    code, out, err = run("topics", "--config", path)
    assert (code, err) == (0, [])
    assert [line.split()[:2] for line in out] == [["ok", f"{name}:"] for name in names.values()]
    assert run("topics", "--config", path, "--check")[0] == 0
    assert topics.check_topics(load_settings(path)) == []
    assert read_back(kafka_admin, list(names.values())) == found  # nothing was altered


def test_misconfigured_and_missing_topics_are_reported_and_never_altered(
    run: Run, topic_settings: tuple[Path, dict[str, str]], kafka_admin: KafkaAdminClient
) -> None:
    path, names = topic_settings
    kafka_admin.create_topics(
        {
            names["requests"]: {"num_partitions": 1, "configs": {"retention.ms": str(DAY_MS)}},
            names["verdicts"]: {"num_partitions": 3, "configs": {"cleanup.policy": "delete"}},
        },
        timeout_ms=10_000,
        wait_for_metadata=True,
    )
    before = read_back(kafka_admin, [names["requests"], names["verdicts"]])

    code, out, err = run("topics", "--config", path, "--check")
    assert code == 1
    assert [line.split()[0] for line in out] == ["problem"] * 5
    requests_line, successes_line, _, verdicts_line, _ = out
    assert f"topic {names['requests']} has 1 partition; needs at least 3 (kafka.partitions)" in requests_line
    assert f"topic {names['requests']} keeps records 1 day (retention.ms=86400000)" in requests_line
    assert "needs at least 100 days (kafka.retention_days)" in requests_line
    assert f"topic {names['successes']} (kafka.topics.successes) does not exist" in successes_line
    assert f"topic {names['verdicts']} has cleanup.policy=delete; must be compact" in verdicts_line
    assert len(err) == 1 and "5 of 5 topics need attention" in err[0]
    assert not set(kafka_admin.list_topics()) & {names["successes"], names["exemptions"], names["dead_letter"]}

    code, out, err = run("topics", "--config", path)  # creates the missing, reports the rest
    assert code == 1
    assert [line.split()[0] for line in out] == ["problem", "created", "created", "problem", "created"]
    assert len(err) == 1 and "2 of 5 topics need attention" in err[0]
    problems = topics.check_topics(load_settings(path))
    assert {problem.split()[1] for problem in problems} == {names["requests"], names["verdicts"]}
    assert all("\n" not in problem for problem in problems)
    assert read_back(kafka_admin, [names["requests"], names["verdicts"]]) == before


def test_a_replication_factor_the_cluster_cannot_hold_is_refused_per_topic_in_one_line(
    run: Run, topic_settings: tuple[Path, dict[str, str]], kafka_admin: KafkaAdminClient
) -> None:
    """The test broker is a single node: 3 replicas cannot be placed, and `topics` says so, creating nothing."""
    path, names = topic_settings
    path.write_text(path.read_text(encoding="utf-8").replace("[kafka]\n", "[kafka]\nreplication_factor = 3\n", 1))
    code, out, err = run("topics", "--config", path)
    assert code == 1
    assert len(out) == 5 and all(line.startswith("problem  topic ") for line in out)
    assert all("could not be created" in line and "replication factor" in line.lower() for line in out), out
    assert len(err) == 1 and "5 of 5 topics need attention" in err[0]
    assert not set(kafka_admin.list_topics()) & set(names.values())


def test_an_unreachable_broker_is_a_one_line_error_naming_the_address(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setattr(topics, "TIMEOUT_MS", 2_000)  # the command waits 10 s; the test need not
    started = time.monotonic()
    code, out, err = run("topics", "--check")
    assert time.monotonic() - started < 6
    assert (code, out) == (2, [])
    assert len(err) == 1
    assert err[0].startswith("sla-stream: Kafka at 127.0.0.1:1 is not reachable (no answer within 2 s); start it")
    with pytest.raises(topics.KafkaUnavailable, match="127.0.0.1:1"):
        topics.check_topics(load_settings())
