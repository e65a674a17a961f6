"""The Kafka topics sla-stream uses: their plan from the settings, and creating or checking them.

The plan (:func:`plan_topics`):

| topic (``[kafka.topics]``) | partitions | cleanup.policy | retention |
|---|---|---|---|
| ``requests``, ``successes`` | ``kafka.partitions`` | delete | ``kafka.retention_days``, no size cap |
| ``exemptions`` | 1 | compact | latest record per key, kept |
| ``verdicts`` (keyed ``app_id:slot_start``) | ``kafka.partitions`` | compact | latest revision per key, kept |
| ``dead_letter`` | ``kafka.partitions`` | delete | ``kafka.retention_days``, no size cap |

An existing topic is fine when it has at least the planned partitions, the
same ``cleanup.policy``, and, where retention matters, a ``retention.ms`` at
least the plan's and no ``retention.bytes`` cap (a size cap would delete
records before their time, and replay needs them all). Every topic is
created with ``kafka.replication_factor`` replicas of each partition and
``min.insync.replicas`` one less (at least 1: with 3 replicas, a write is
acknowledged by 2, so one broker can be lost without losing an acknowledged
event); an existing topic with fewer replicas or a lower
``min.insync.replicas`` is a problem. Existing topics are never altered: a
problem is reported, in one line naming the topic and the setting.

Example:
    >>> spec = TopicSpec("requests", "requests-topic", partitions=4, compacted=False, retention_ms=100 * DAY_MS)
    >>> found = {"cleanup.policy": "delete", "retention.ms": "86400000", "retention.bytes": "-1"}
    >>> topic_problems(spec, Layout(partitions=4, replicas=1), found | {"min.insync.replicas": "1"})
    ['topic requests-topic keeps records 1 day (retention.ms=86400000); needs at least 100 days (kafka.retention_days)']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from stream.config import ConfigError, Settings, Topics
from stream.kafka_security import describe, kafka_python_options, redact, refusal

DAY_MS = 86_400_000
TIMEOUT_MS = 10_000
"""How long to wait for the broker to answer at all, and for each request."""
UNLIMITED = "-1"
_CHECKED_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas")


class KafkaUnavailable(Exception):
    """The broker did not answer, or refused the security settings; the message names the address, no secret."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the plan. ``setting`` is its key under ``[kafka.topics]``."""

    setting: str
    name: str
    partitions: int
    compacted: bool
    retention_ms: int | None = None
    """The least retention a ``delete`` topic needs; ``None`` for compacted topics (they keep the latest per key)."""
    replication_factor: int = 1

    @property
    def cleanup_policy(self) -> str:
        return "compact" if self.compacted else "delete"

    @property
    def min_insync_replicas(self) -> int:
        """Replicas that must have a write before it is acknowledged: all but one, at least one."""
        return max(1, self.replication_factor - 1)

    def configs(self) -> dict[str, str]:
        """The topic configs to create it with."""
        configs = {"cleanup.policy": self.cleanup_policy, "min.insync.replicas": str(self.min_insync_replicas)}
        if self.retention_ms is not None:
            configs |= {"retention.ms": str(self.retention_ms), "retention.bytes": UNLIMITED}
        return configs

    def describe(self) -> str:
        retention = f", retention {_span(self.retention_ms)}" if self.retention_ms is not None else ""
        return (
            f"{_count(self.partitions, 'partition')} of {_count(self.replication_factor, 'replica')}, "
            f"cleanup.policy={self.cleanup_policy}{retention}"
        )


@dataclass(frozen=True)
class Layout:
    """What an existing topic has: its partitions, and the fewest replicas any of them has."""

    partitions: int
    replicas: int


@dataclass(frozen=True)
class TopicStatus:
    """What was found (or done) for one topic: ``created``, ``ok`` or ``problem`` (with one message or more)."""

    spec: TopicSpec
    state: Literal["created", "ok", "problem"]
    problems: tuple[str, ...] = ()
    exists: bool = True

    def line(self) -> str:
        """``created  NAME: what it is``, ``ok       NAME: ...``, or ``problem  <the problems, each naming NAME>``."""
        if self.problems:
            return f"{self.state:<8} {'; '.join(self.problems)}"
        return f"{self.state:<8} {self.spec.name}: {self.spec.describe()}"


def plan_topics(settings: Settings) -> list[TopicSpec]:
    """The five topics the settings call for, in the order of ``[kafka.topics]``."""
    names = settings.topics
    seen: dict[str, str] = {}
    for setting in Topics.__dataclass_fields__:
        name = getattr(names, setting)
        if name in seen:
            raise ConfigError(f"kafka.topics.{seen[name]} and kafka.topics.{setting} both name topic {name!r}")
        seen[name] = setting
    rf = settings.replication_factor
    retained = {"partitions": settings.partitions, "compacted": False, "retention_ms": settings.retention_ms}
    return [
        TopicSpec("requests", names.requests, **retained, replication_factor=rf),
        TopicSpec("successes", names.successes, **retained, replication_factor=rf),
        TopicSpec("exemptions", names.exemptions, partitions=1, compacted=True, replication_factor=rf),
        TopicSpec("verdicts", names.verdicts, partitions=settings.partitions, compacted=True, replication_factor=rf),
        TopicSpec("dead_letter", names.dead_letter, **retained, replication_factor=rf),
    ]


def _span(ms: int) -> str:
    """A retention for people: ``100 days``, ``36 hours``, ``forever``."""
    if ms < 0:
        return "forever"
    if ms % DAY_MS == 0:
        return _count(ms // DAY_MS, "day")
    return f"{ms / 3_600_000:g} hours"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def topic_problems(spec: TopicSpec, layout: Layout, configs: Mapping[str, str]) -> list[str]:
    """How a topic of ``layout`` with these config values falls short of ``spec`` (empty: it does not)."""
    topic = f"topic {spec.name}"
    problems = []
    if layout.partitions < spec.partitions:
        problems.append(
            f"{topic} has {_count(layout.partitions, 'partition')}; needs at least {spec.partitions} (kafka.partitions)"
        )
    if layout.replicas < spec.replication_factor:
        problems.append(
            f"{topic} has {_count(layout.replicas, 'replica')} of a partition; needs at least "
            f"{spec.replication_factor} (kafka.replication_factor)"
        )
    min_insync = _int(configs.get("min.insync.replicas"))
    if min_insync is None or min_insync < spec.min_insync_replicas:
        problems.append(
            f"{topic} has min.insync.replicas={configs.get('min.insync.replicas')}; needs at least "
            f"{spec.min_insync_replicas} (kafka.replication_factor less one)"
        )
    policy = configs.get("cleanup.policy")
    if policy != spec.cleanup_policy:
        problems.append(f"{topic} has cleanup.policy={policy}; must be {spec.cleanup_policy}")
    if spec.retention_ms is None:
        return problems
    retention_ms = _int(configs.get("retention.ms"))
    if retention_ms is None or 0 <= retention_ms < spec.retention_ms:
        kept = _span(retention_ms) if retention_ms is not None else "an unknown time"
        problems.append(
            f"{topic} keeps records {kept} (retention.ms={configs.get('retention.ms')}); "
            f"needs at least {_span(spec.retention_ms)} (kafka.retention_days)"
        )
    if configs.get("retention.bytes") != UNLIMITED:
        problems.append(
            f"{topic} caps each partition at retention.bytes={configs.get('retention.bytes')}, "
            "which deletes records before their retention.ms; must be -1"
        )
    return problems


def admin_client(settings: Settings, timeout_ms: int | None = None) -> KafkaAdminClient:
    """A connected admin client, or :class:`KafkaUnavailable` naming the bootstrap after ``timeout_ms`` (10 s).

    With a secured protocol, a broker that refuses the settings (wrong
    password, a certificate that does not verify) is reported at once, with
    its reason: kafka-python alone would retry until the timeout, then say
    only that nothing answered.
    """
    timeout_ms = timeout_ms or TIMEOUT_MS
    security = settings.kafka_security
    reason = refusal(settings.kafka_bootstrap, security, timeout_ms / 1000)
    if reason is not None:
        raise KafkaUnavailable(
            redact(
                f"Kafka at {settings.kafka_bootstrap} refused sla-stream ({describe(security)}): {reason}; "
                "check [kafka.security] and the password or certificate it names"
            )
        )
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="sla-stream-topics",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            **kafka_python_options(security),
        )
    except KafkaError:
        raise unavailable(settings, f"no answer within {timeout_ms // 1000} s") from None


def unavailable(settings: Settings, error: Exception | str) -> KafkaUnavailable:
    """The error to raise when the broker fails a request: says where, how, what, and what to do (no secret)."""
    detail = error if isinstance(error, str) else str(error) or type(error).__name__
    security = settings.kafka_security
    secured = security.protocol != "PLAINTEXT"
    how = f" with {describe(security)}" if secured else ""
    advice = "start it (make up), or set KAFKA_BOOTSTRAP" + ("; check [kafka.security]" if secured else "")
    return KafkaUnavailable(redact(f"Kafka at {settings.kafka_bootstrap} is not reachable{how} ({detail}); {advice}"))


def _layouts(admin: KafkaAdminClient, specs: Sequence[TopicSpec]) -> dict[str, Layout | str]:
    """Each topic's layout, or the name of the error describing it (a missing topic: absent)."""
    found: dict[str, Layout | str] = {}
    for topic in admin.describe_topics([spec.name for spec in specs]):
        error = for_code(topic["error_code"])
        if error is UnknownTopicOrPartitionError:
            continue
        if topic["error_code"] != 0:
            found[topic["name"]] = error.__name__
            continue
        partitions = topic["partitions"]
        found[topic["name"]] = Layout(len(partitions), min((len(p["replica_nodes"]) for p in partitions), default=0))
    return found


def _create(admin: KafkaAdminClient, specs: Sequence[TopicSpec]) -> dict[str, str]:
    """Create the topics; the error message of each one the broker refused (already existing is no error)."""
    request = {
        spec.name: {
            "num_partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            "configs": spec.configs(),
        }
        for spec in specs
    }
    response = admin.create_topics(request, timeout_ms=TIMEOUT_MS, raise_errors=False)
    refused = {}
    for topic in response["topics"]:
        error = for_code(topic["error_code"])
        if topic["error_code"] != 0 and error is not TopicAlreadyExistsError:
            refused[topic["name"]] = topic.get("error_message") or error.__name__
    admin.wait_for_topics([spec.name for spec in specs if spec.name not in refused], timeout_ms=TIMEOUT_MS)
    return refused


def _inspect(admin: KafkaAdminClient, specs: Sequence[TopicSpec], create: bool) -> list[TopicStatus]:
    layouts = _layouts(admin, specs)
    missing = [spec for spec in specs if spec.name not in layouts]
    refused = _create(admin, missing) if create and missing else {}
    if create and missing:
        layouts = _layouts(admin, specs)
    existing = [spec.name for spec in specs if isinstance(layouts.get(spec.name), Layout)]
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(_CHECKED_CONFIGS)) for name in existing]
    described = admin.describe_configs(resources, config_filter="all").get("topic", {}) if resources else {}
    statuses = []
    for spec in specs:
        layout = layouts.get(spec.name)
        if spec.name in refused:
            problems = [f"topic {spec.name} could not be created: {refused[spec.name]}"]
        elif layout is None:
            problems = [f"topic {spec.name} (kafka.topics.{spec.setting}) does not exist; sla-stream topics creates it"]
        elif isinstance(layout, str):
            problems = [f"topic {spec.name} (kafka.topics.{spec.setting}) cannot be described: {layout}"]
        else:
            values = {key: entry["value"] for key, entry in described.get(spec.name, {}).items()}
            problems = topic_problems(spec, layout, values)
        created = spec in missing and spec.name not in refused
        state = "problem" if problems else "created" if created else "ok"
        statuses.append(TopicStatus(spec, state, tuple(problems), exists=layout is not None))
    return statuses


def ensure_topics(admin: KafkaAdminClient, specs: Sequence[TopicSpec]) -> list[TopicStatus]:
    """Create the missing topics, then check every one against its spec (existing topics are never altered)."""
    return _inspect(admin, specs, create=True)


def topic_statuses(
    settings: Settings, specs: Sequence[TopicSpec] | None = None, create: bool = False
) -> list[TopicStatus]:
    """Connect to Kafka (as ``[kafka.security]`` says), then check the planned topics or ``specs`` (``create``: first).

    Raises :class:`KafkaUnavailable`, naming the address, when the broker does not answer within 10 seconds.
    """
    admin = admin_client(settings)
    try:
        return _inspect(admin, plan_topics(settings) if specs is None else specs, create)
    except KafkaError as error:
        raise unavailable(settings, error) from None
    finally:
        admin.close()


def check_topics(settings: Settings, specs: Sequence[TopicSpec] | None = None) -> list[str]:
    """What is missing or misconfigured among the planned topics (or ``specs``), one line each; empty when fine.

    For the worker's start. Raises :class:`KafkaUnavailable` (its message names
    the address) when the broker does not answer within 10 seconds.
    """
    return [problem for status in topic_statuses(settings, specs) for problem in status.problems]
