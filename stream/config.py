"""Settings and customer terms, read from TOML files (config/sla-stream.toml documents every key).

A user file is laid over the defaults table by table, so it need only name
what it changes; lists (tiers, apps, exemptions) replace the default list
whole. ``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` override the addresses. Any
mistake raises :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.connection import parse_url

from stream.events import TimeBounds
from stream.sla.claims import OfficialYear, WorkingDayCalendar
from stream.sla.compensation import CENT
from stream.sla.counting import EventKind
from stream.sla.exemptions import Exemption
from stream.sla.months import Subscription, check_no_overlap
from stream.sla.policy import CompensationTier, SlaPolicy
from stream.sla.slots import instant_ms, to_epoch_ms

MAX_SHARDS = 1024
"""More shards of the live state than this buy nothing (a cluster of 1,024 masters) and cost a step each per batch."""
HOUR_S, DAY_S, WEEK_MIN, YEAR_S = 3_600, 86_400, 7 * 1_440, 366 * 86_400
"""The units of the settings' bounds (:meth:`_Table.bounded`)."""

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "sla-stream.toml"


class ConfigError(ValueError):
    """A settings file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Topics:
    requests: str
    successes: str
    exemptions: str
    verdicts: str
    dead_letter: str

    @property
    def input_kinds(self) -> dict[str, EventKind]:
        """The two input topics and the kind of event each carries."""
        return {self.requests: "request", self.successes: "success"}


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class WebAccess:
    """The tokens the worker's web server asks for (``[web]``; docs/deploy.md): None, nothing is asked.

    ``pages_token`` guards the index and month pages (``.json``, ``.csv``
    too), ``metrics_token`` guards ``/metrics``; the probes are never
    guarded. Read from the environment or a file, left out of ``repr``.
    """

    pages_token: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client authenticates and encrypts (``[kafka.security]``); see docs/security.md.

    Secrets were read from the environment or a file when the settings were
    loaded (never from the TOML), and are left out of ``repr`` so that
    printing the settings cannot show them. Paths are absolute.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    """None with SSL: the system's trusted CAs (a broker with a public certificate)."""
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class AppTerms:
    """What the agreement with one customer application says beyond the SLA itself."""

    app_id: str
    subscriptions: tuple[Subscription, ...] = ()
    fees: Mapping[date, Decimal] = field(default_factory=dict)
    """Fee actually paid per service month, keyed by the service month's first day."""


@dataclass(frozen=True)
class Settings:
    policy: SlaPolicy
    calendar: WorkingDayCalendar
    earliest_event_ms: int
    max_future_ms: int
    grace_ms: int
    group: str
    idle_lag_ms: int
    dedup_hold_ms: int
    session_timeout_ms: int
    """A worker silent this long loses its partitions to the others (Kafka consumer session timeout)."""
    heartbeat_ms: int
    """How often a worker tells the group coordinator it is alive (well under the session timeout)."""
    kafka_bootstrap: str
    kafka_security: KafkaSecurity
    partitions: int
    retention_ms: int
    """How long the input and dead-letter topics keep records (at least 100 days: a month is rebuilt by replay)."""
    replication_factor: int
    """Replicas of each partition of the topics ``sla-stream topics`` creates (``min.insync.replicas``: one less)."""
    topics: Topics
    redis_url: str
    key_prefix: str
    redis_cluster: bool
    """Whether ``redis_url`` names a node of a Redis Cluster (redis-py's ``RedisCluster`` client)."""
    redis_shards: int
    """How many shards the live state is split into by app (:mod:`stream.live.shards`); fixed for a namespace."""
    apps: Mapping[str, AppTerms]
    exemptions: tuple[Exemption, ...]
    replay_margin_ms: int = 3_600_000
    """A replay starts reading at the month's start less this and ``max_future_ms`` (records sent early)."""
    exemption_max_ms: int = 7 * 86_400_000
    """``sla-stream exempt add`` refuses a longer window (a typo in a date should not erase a month)."""
    web: WebAccess = field(default_factory=WebAccess)
    """Who may read the worker's pages and ``/metrics`` (no one is asked for anything by default)."""

    def terms(self, app_id: str) -> AppTerms:
        """The app's terms, or none on record (measured in calendar months, fee unknown)."""
        return self.apps.get(app_id) or AppTerms(app_id)

    def event_bounds(self, now_ms: int) -> TimeBounds:
        """Event times accepted as plausible at wall time ``now_ms``: from the earliest to a little past now."""
        return TimeBounds(self.earliest_event_ms, now_ms + self.max_future_ms)


class _Table:
    """A TOML table read key by key, so leftovers (typos) can be reported."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        self._raw = dict(raw)
        self.where = where

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self._raw:
            if default is ...:
                raise ConfigError(f"{self.where}.{key} is missing")
            return default
        value = self._raw.pop(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{self.where}.{key} must be {names}, got {value!r}")
        return value

    def bounded(self, key: str, low: int, high: int, what: str, kind: type | tuple[type, ...] = int) -> Any:
        """A number from ``low`` to ``high`` (``what``: the range in words, for the refusal).

        A value outside a sane range is a typo or a misunderstanding (a grace
        of years would never close a slot), refused naming the key and the range.
        """
        value = self.take(key, kind)
        if not low <= value <= high:
            raise ConfigError(f"{self.where}.{key} must be from {low:,} to {high:,} ({what}), got {value!r}")
        return value

    def table(self, key: str) -> _Table:
        return _Table(self._raw.pop(key, {}), f"{self.where}.{key}")

    def tables(self, key: str) -> list[_Table]:
        items = self._raw.pop(key, [])
        if not isinstance(items, list):
            raise ConfigError(f"{self.where}.{key} must be a list of tables ([[{key}]])")
        return [_Table(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(items)]

    def done(self) -> None:
        if self._raw:
            raise ConfigError(f"{self.where}: unknown key {sorted(self._raw)[0]!r}")


def _fraction(table: _Table, key: str) -> Fraction:
    text = table.take(key, str)
    try:
        return Fraction(text)
    except ValueError:
        raise ConfigError(f"{table.where}.{key} must be a number written as a string, got {text!r}") from None


def _money(text: Any, where: str) -> Decimal:
    if not isinstance(text, str):
        raise ConfigError(f'{where} must be money written as a string (e.g. "1200.00"), got {text!r}')
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{where} is not an amount: {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"{where} must be a non-negative amount, got {text!r}")
    if amount != amount.quantize(CENT):
        raise ConfigError(f"{where} must be whole cents, got {text!r}")
    return amount


def _date(table: _Table, key: str) -> date:
    """A TOML date; a date-time is refused, since days are what subscriptions count."""
    value = table.take(key, date)
    if isinstance(value, datetime):
        raise ConfigError(f"{table.where}.{key} must be a date (2019-03-17), not a date and time")
    return value


def _policy(sla: _Table) -> SlaPolicy:
    name = sla.take("timezone", str)
    try:
        tz = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{sla.where}.timezone: unknown time zone {name!r}") from None
    tiers = []
    for tier in sla.tables("compensation"):
        tiers.append(CompensationTier(below=_fraction(tier, "below"), percent=tier.take("percent", int)))
        tier.done()
    numbers = {
        "slot_success_min": _fraction(sla, "slot_success_min"),
        "availability_target": _fraction(sla, "availability_target"),
        "claim_after_working_days": sla.bounded("claim_after_working_days", 1, 60, "up to 60 working days"),
        "claim_window_days": sla.bounded("claim_window_days", 1, 10 * 366, "up to ten years"),
        "silent_after_minutes": sla.bounded("silent_after_minutes", 1, DAY_S // 60, "up to a day"),
    }
    sla.done()
    try:
        return SlaPolicy(timezone=tz, compensation_tiers=tuple(tiers), **numbers)
    except ValueError as error:
        raise ConfigError(f"{sla.where}: {error}") from None


def _official_year(table: _Table) -> OfficialYear:
    days = {key: table.take(key, list, []) for key in ("holidays", "makeup_workdays")}
    for key, values in days.items():
        if not all(isinstance(d, date) and not isinstance(d, datetime) for d in values):
            raise ConfigError(f"{table.where}.{key} must be a list of dates (2027-01-01)")
    try:
        return OfficialYear(table.take("year", int), frozenset(days["holidays"]), frozenset(days["makeup_workdays"]))
    except ValueError as error:
        raise ConfigError(f"{table.where}: {error}") from None


def _app_terms(table: _Table) -> AppTerms:
    app_id = table.take("app_id", str)
    subscriptions = []
    for sub in table.tables("subscriptions"):
        activation = _date(sub, "activation")
        try:
            subscriptions.append(Subscription(activation, sub.take("months", int)))
        except ValueError as error:
            raise ConfigError(f"{sub.where}: {error}") from None
        sub.done()
    try:
        check_no_overlap(subscriptions)
    except ValueError as error:
        raise ConfigError(f"{table.where} (app {app_id}): {error}") from None
    fees: dict[date, Decimal] = {}
    for key, amount in table.take("fees", dict, {}).items():
        try:
            first_day = date.fromisoformat(key)
        except ValueError:
            raise ConfigError(f"{table.where}.fees: key {key!r} must be a service month's first day") from None
        fees[first_day] = _money(amount, f"{table.where}.fees.{key!r}")
    return AppTerms(app_id, tuple(sorted(subscriptions)), fees)


def _exemption(table: _Table, tz: ZoneInfo) -> Exemption:
    try:
        return Exemption(
            start_ms=instant_ms(table.take("start", datetime), tz),
            end_ms=instant_ms(table.take("end", datetime), tz),
            app_id=table.take("app_id", str, None),
            clause=table.take("clause", str),
            note=table.take("note", str, ""),
        )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{table.where}: {error}") from None


def _redis_url(url: str, source: str) -> str:
    """``url`` if redis-py can connect by it; the message never repeats it (it may hold a password)."""
    try:
        parse_url(url)
    except ValueError as error:
        reason = str(error).replace(url, "...")
        raise ConfigError(f"{source}: the Redis URL is not usable ({reason}); e.g. redis://127.0.0.1:6379/0") from None
    return url


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _secret(table: _Table, name: str, environ: Mapping[str, str], base: Path) -> str | None:
    """The secret ``{name}_env`` (an environment variable's name) or ``{name}_file`` points to, if either is given.

    Messages name the key, the variable or the file, never a value: a
    password written in the TOML itself is refused without being echoed.
    """
    if table.take(name, object, None) is not None:
        raise ConfigError(
            f"{table.where}.{name}: secrets are not read from the settings file; "
            f"set {name}_env (an environment variable's name) or {name}_file"
        )
    variable = table.take(f"{name}_env", str, None)
    path = table.take(f"{name}_file", str, None)
    if variable is not None and path is not None:
        raise ConfigError(f"{table.where}: give {name}_env or {name}_file, not both")
    if variable is not None:
        if not _ENV_NAME.fullmatch(variable):
            raise ConfigError(f"{table.where}.{name}_env must be an environment variable's name (letters, digits, _)")
        value = environ.get(variable)
        if not value:
            raise ConfigError(f"{table.where}.{name}_env: environment variable {variable} is not set or is empty")
        return value
    if path is not None:
        file = (base / path).resolve()
        try:
            value = file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
            raise ConfigError(f"{table.where}.{name}_file: cannot read {file} ({reason})") from None
        if not value:
            raise ConfigError(f"{table.where}.{name}_file: {file} is empty")
        return value
    return None


def _readable(table: _Table, key: str, base: Path) -> Path | None:
    """The absolute path of the file ``key`` names (relative to ``base``), checked readable now, not at first use."""
    name = table.take(key, str, None)
    if name is None:
        return None
    path = (base / name).resolve()
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ConfigError(f"{table.where}.{key}: cannot read {path} ({error.strerror or error})") from None
    return path


def _kafka_security(table: _Table, environ: Mapping[str, str], base: Path) -> KafkaSecurity:
    """``[kafka.security]``, with every combination that cannot work refused before any connection."""
    protocol = table.take("protocol", str, "PLAINTEXT")
    if protocol not in KAFKA_PROTOCOLS:
        raise ConfigError(f"{table.where}.protocol must be one of {', '.join(KAFKA_PROTOCOLS)}, got {protocol!r}")
    security = KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=table.take("sasl_mechanism", str, None),
        username=table.take("username", str, None),
        password=_secret(table, "password", environ, base),
        ca_file=_readable(table, "ca_file", base),
        cert_file=_readable(table, "cert_file", base),
        key_file=_readable(table, "key_file", base),
        key_password=_secret(table, "key_password", environ, base),
        check_hostname=table.take("check_hostname", bool, True),
    )
    table.done()
    sasl_keys = {
        "sasl_mechanism": security.sasl_mechanism,
        "username": security.username,
        "password_env or password_file": security.password,
    }
    tls_keys = {
        "ca_file": security.ca_file,
        "cert_file": security.cert_file,
        "key_file": security.key_file,
        "key_password_env or key_password_file": security.key_password,
        "check_hostname": None if security.check_hostname else False,  # true is the default: only false is "given"
    }
    for keys, applies, protocols in (
        (sasl_keys, security.sasl, "SASL_PLAINTEXT or SASL_SSL"),
        (tls_keys, security.tls, "SSL or SASL_SSL"),
    ):
        given = [key for key, value in keys.items() if value is not None]
        if given and not applies:
            raise ConfigError(
                f"{table.where}.{given[0]} applies only with protocol {protocols} (protocol is {protocol})"
            )
    if security.sasl:
        missing = [key for key, value in sasl_keys.items() if not value]
        if missing:
            raise ConfigError(f"{table.where}: protocol {protocol} needs {missing[0]}")
        if security.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"{table.where}.sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {security.sasl_mechanism!r}"
            )
    if security.key_file and not security.cert_file:
        raise ConfigError(f"{table.where}.key_file needs cert_file (the client certificate it belongs to)")
    if security.key_password and not security.cert_file:
        raise ConfigError(f"{table.where}: key_password_env/key_password_file need cert_file (the key to unlock)")
    if not security.check_hostname and security.ca_file is None:
        raise ConfigError(
            f"{table.where}.check_hostname = false needs ca_file (your own CA): "
            "with the system's CAs, any public certificate would be accepted"
        )
    return security


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}): "
            "save it as UTF-8"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None


def load_settings(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """The defaults, with ``path`` laid over them and the environment's addresses on top."""
    raw = _read_toml(DEFAULT_CONFIG)
    where = "config"
    if path is not None:
        raw = _merge(raw, _read_toml(path))
        where = str(path)
    root = _Table(raw, where)
    policy = _policy(root.table("sla"))
    tz = policy.timezone

    calendar_years = []
    for year in root.tables("calendar"):
        calendar_years.append(_official_year(year))
        year.done()

    events = root.table("events")
    earliest = events.take("earliest", datetime)
    if earliest.tzinfo is None:
        raise ConfigError(f"{events.where}.earliest needs a UTC offset")
    max_future_s = events.bounded("max_future_seconds", 0, DAY_S, "up to a day")
    events.done()

    stream = root.table("stream")
    grace_s = stream.bounded("grace_seconds", 0, DAY_S, "up to a day: later events still count, as revisions")
    group = stream.take("group", str)
    idle_lag_s = stream.bounded("idle_lag_seconds", 0, YEAR_S, "up to a year: a backfill of old traffic")
    dedup_hold_min = stream.bounded("dedup_hold_minutes", 0, WEEK_MIN, "up to a week: Redis holds every id that long")
    session_timeout_s = stream.bounded("session_timeout_seconds", 1, HOUR_S, "up to an hour", (int, float))
    heartbeat_s = stream.take("heartbeat_seconds", (int, float))
    if not 0 < heartbeat_s * 3 <= session_timeout_s:
        raise ConfigError(
            f"{stream.where}: heartbeat_seconds must be positive and at most a third of session_timeout_seconds"
        )
    stream.done()

    kafka = root.table("kafka")
    bootstrap = kafka.take("bootstrap", str)
    partitions = kafka.bounded("partitions", 1, 10_000, "Kafka's own limits are near")
    retention_days = kafka.bounded("retention_days", 1, 36_600, "up to a hundred years")
    replication_factor = kafka.bounded("replication_factor", 1, 7, "replicas of each partition")
    topic_table = kafka.table("topics")
    topics = Topics(**{name: topic_table.take(name, str) for name in Topics.__dataclass_fields__})
    topic_table.done()
    base = path.parent if path is not None else DEFAULT_CONFIG.parent  # relative paths: from the file naming them
    security = _kafka_security(kafka.table("security"), environ, base)
    kafka.done()

    replay = root.table("replay")
    replay_margin_min = replay.bounded("margin_minutes", 0, DAY_S // 60, "up to a day")
    replay.done()

    exempt = root.table("exempt")
    exemption_max_days = exempt.bounded("max_window_days", 1, 366, "up to a year")
    exempt.done()

    web_table = root.table("web")
    web = WebAccess(
        pages_token=_secret(web_table, "pages_token", environ, base),
        metrics_token=_secret(web_table, "metrics_token", environ, base),
    )
    web_table.done()

    redis = root.table("redis")
    redis_url = redis.take("url", str)
    key_prefix = redis.take("key_prefix", str)
    redis_cluster = redis.take("cluster", bool)
    redis_shards = redis.take("shards", int)
    if not 1 <= redis_shards <= MAX_SHARDS:
        raise ConfigError(f"{redis.where}.shards must be between 1 and {MAX_SHARDS}, got {redis_shards}")
    redis.done()

    apps: dict[str, AppTerms] = {}
    for app in root.tables("apps"):
        terms = _app_terms(app)
        app.done()
        if terms.app_id in apps:
            raise ConfigError(f"{app.where}: app {terms.app_id} is listed twice")
        apps[terms.app_id] = terms

    exemptions = []
    for exemption in root.tables("exemptions"):
        exemptions.append(_exemption(exemption, tz))
        exemption.done()
    root.done()

    if not group or not key_prefix:
        raise ConfigError(f"{where}: stream.group and redis.key_prefix cannot be empty")
    return Settings(
        policy=policy,
        calendar=WorkingDayCalendar(calendar_years),
        earliest_event_ms=to_epoch_ms(earliest),
        max_future_ms=max_future_s * 1000,
        grace_ms=grace_s * 1000,
        group=group,
        idle_lag_ms=idle_lag_s * 1000,
        dedup_hold_ms=dedup_hold_min * 60_000,
        session_timeout_ms=round(session_timeout_s * 1000),
        heartbeat_ms=round(heartbeat_s * 1000),
        kafka_bootstrap=environ.get("KAFKA_BOOTSTRAP") or bootstrap,
        kafka_security=security,
        partitions=partitions,
        retention_ms=retention_days * 86_400_000,
        replication_factor=replication_factor,
        topics=topics,
        redis_url=_redis_url(environ.get("REDIS_URL") or redis_url, "REDIS_URL" if environ.get("REDIS_URL") else where),
        key_prefix=key_prefix,
        redis_cluster=redis_cluster,
        redis_shards=redis_shards,
        apps=apps,
        exemptions=tuple(exemptions),
        replay_margin_ms=replay_margin_min * 60_000,
        exemption_max_ms=exemption_max_days * 86_400_000,
        web=web,
    )
