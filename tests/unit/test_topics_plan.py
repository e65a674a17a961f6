"""The topic plan (stream/tools/topics.py) from the settings, and how an existing topic is judged against it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stream.config import ConfigError, load_settings
from stream.tools.topics import DAY_MS, Layout, TopicSpec, TopicStatus, plan_topics, topic_problems

RETAINED = {
    "cleanup.policy": "delete",
    "retention.ms": str(100 * DAY_MS),
    "retention.bytes": "-1",
    "min.insync.replicas": "1",
}
COMPACTED = {
    "cleanup.policy": "compact",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "min.insync.replicas": "1",
}
FOUR = Layout(partitions=4, replicas=1)


@pytest.fixture
def requests_spec() -> TopicSpec:
    return plan_topics(load_settings(environ={}))[0]


def test_the_default_plan() -> None:
    plan = {spec.setting: spec for spec in plan_topics(load_settings(environ={}))}
    assert list(plan) == ["requests", "successes", "exemptions", "verdicts", "dead_letter"]
    assert [spec.name for spec in plan.values()] == [
        "trtc.room-entry.requests",
        "trtc.room-entry.successes",
        "trtc.sla.exemptions",
        "trtc.sla.slot-verdicts",
        "trtc.sla.dead-letter",
    ]
    for setting in ("requests", "successes", "dead_letter"):
        assert plan[setting].partitions == 4
        assert plan[setting].configs() == RETAINED
    compacted = {"cleanup.policy": "compact", "min.insync.replicas": "1"}
    assert (plan["exemptions"].partitions, plan["exemptions"].configs()) == (1, compacted)
    assert (plan["verdicts"].partitions, plan["verdicts"].configs()) == (4, compacted)
    assert {spec.replication_factor for spec in plan.values()} == {1}


@pytest.mark.parametrize(("replicas", "min_insync"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_replicas_and_min_insync_follow_the_replication_factor(
    write_config: Callable[..., Path], replicas: int, min_insync: int
) -> None:
    plan = plan_topics(load_settings(write_config(f"[kafka]\nreplication_factor = {replicas}\n"), environ={}))
    assert {(spec.replication_factor, spec.configs()["min.insync.replicas"]) for spec in plan} == {
        (replicas, str(min_insync))
    }


def test_an_existing_topic_with_fewer_replicas_or_a_lower_min_insync_is_a_problem(
    write_config: Callable[..., Path],
) -> None:
    spec = plan_topics(load_settings(write_config("[kafka]\nreplication_factor = 3\n"), environ={}))[0]
    assert topic_problems(spec, Layout(4, 3), RETAINED | {"min.insync.replicas": "2"}) == []
    assert topic_problems(spec, Layout(4, 1), RETAINED | {"min.insync.replicas": "1"}) == [
        "topic trtc.room-entry.requests has 1 replica of a partition; needs at least 3 (kafka.replication_factor)",
        "topic trtc.room-entry.requests has min.insync.replicas=1; needs at least 2 "
        "(kafka.replication_factor less one)",
    ]


def test_partitions_retention_and_names_follow_the_settings(write_config: Callable[..., Path]) -> None:
    path = write_config('[kafka]\npartitions = 12\nretention_days = 400\n[kafka.topics]\nrequests = "in.req"\n')
    plan = {spec.setting: spec for spec in plan_topics(load_settings(path, environ={}))}
    assert plan["requests"].name == "in.req"
    assert {setting: spec.partitions for setting, spec in plan.items()} == {
        "requests": 12,
        "successes": 12,
        "exemptions": 1,
        "verdicts": 12,
        "dead_letter": 12,
    }
    assert plan["successes"].retention_ms == 400 * DAY_MS
    assert plan["verdicts"].retention_ms is None


def test_retention_days_must_be_positive(write_config: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match="retention_days must be from 1 to"):
        load_settings(write_config("[kafka]\nretention_days = 0\n"), environ={})


def test_two_settings_naming_one_topic_are_refused(write_config: Callable[..., Path]) -> None:
    settings = load_settings(write_config('[kafka.topics]\nverdicts = "trtc.sla.exemptions"\n'), environ={})
    with pytest.raises(ConfigError, match="kafka.topics.exemptions and kafka.topics.verdicts both name"):
        plan_topics(settings)


def test_a_topic_as_planned_or_better_has_no_problem(requests_spec: TopicSpec) -> None:
    assert topic_problems(requests_spec, FOUR, RETAINED) == []
    assert topic_problems(requests_spec, Layout(16, 3), RETAINED | {"retention.ms": str(400 * DAY_MS)}) == []
    assert topic_problems(requests_spec, FOUR, RETAINED | {"retention.ms": "-1"}) == []


@pytest.mark.parametrize(
    ("partitions", "configs", "expected"),
    [
        (1, RETAINED, "topic trtc.room-entry.requests has 1 partition; needs at least 4 (kafka.partitions)"),
        (
            4,
            RETAINED | {"retention.ms": str(DAY_MS)},
            "topic trtc.room-entry.requests keeps records 1 day (retention.ms=86400000); "
            "needs at least 100 days (kafka.retention_days)",
        ),
        (
            4,
            RETAINED | {"retention.ms": str(99 * DAY_MS + 1)},
            "needs at least 100 days (kafka.retention_days)",
        ),
        (
            4,
            RETAINED | {"retention.bytes": "268435456"},
            "topic trtc.room-entry.requests caps each partition at retention.bytes=268435456",
        ),
        (4, RETAINED | {"cleanup.policy": "compact"}, "cleanup.policy=compact; must be delete"),
        (4, {}, "cleanup.policy=None; must be delete"),
        (4, RETAINED | {"min.insync.replicas": "0"}, "min.insync.replicas=0; needs at least 1"),
    ],
)
def test_each_shortfall_is_one_line_naming_topic_and_setting(
    requests_spec: TopicSpec, partitions: int, configs: dict[str, str], expected: str
) -> None:
    problems = topic_problems(requests_spec, Layout(partitions, 1), configs)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("topic trtc.room-entry.requests ") and "\n" not in problem for problem in problems)


def test_a_compacted_topic_is_judged_by_partitions_and_policy_only() -> None:
    verdicts = TopicSpec("verdicts", "v", partitions=4, compacted=True)
    assert topic_problems(verdicts, FOUR, COMPACTED | {"retention.bytes": "1000"}) == []
    assert topic_problems(verdicts, FOUR, COMPACTED | {"cleanup.policy": "compact,delete"}) == [
        "topic v has cleanup.policy=compact,delete; must be compact"
    ]


def test_status_lines(requests_spec: TopicSpec) -> None:
    assert TopicStatus(requests_spec, "created").line() == (
        "created  trtc.room-entry.requests: 4 partitions of 1 replica, cleanup.policy=delete, retention 100 days"
    )
    problem = TopicStatus(requests_spec, "problem", ("topic x: a", "topic x: b"))
    assert problem.line() == "problem  topic x: a; topic x: b"
