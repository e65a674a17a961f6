"""Settings and customer terms, read from TOML files (config/sla-stream.toml documents every key).

A user file is laid over the defaults table by table, so it need only name
what it changes; lists (tiers, apps, exemptions) replace the default list
whole. ``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` override the addresses. Any
mistake raises :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream.sla.claims import OfficialYear, WorkingDayCalendar
from stream.sla.compensation import CENT
from stream.sla.exemptions import Exemption
from stream.sla.months import Subscription, check_no_overlap
from stream.sla.policy import CompensationTier, SlaPolicy
from stream.sla.slots import to_epoch_ms

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
    kafka_bootstrap: str
    partitions: int
    retention_ms: int
    """How long the input and dead-letter topics keep records (at least 100 days: a month is rebuilt by replay)."""
    topics: Topics
    redis_url: str
    key_prefix: str
    apps: Mapping[str, AppTerms]
    exemptions: tuple[Exemption, ...]

    def terms(self, app_id: str) -> AppTerms:
        """The app's terms, or none on record (measured in calendar months, fee unknown)."""
        return self.apps.get(app_id) or AppTerms(app_id)


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


def _instant(table: _Table, key: str, tz: ZoneInfo) -> int:
    """Epoch ms of a TOML datetime; one without an offset is read on the SLA's clock."""
    value = table.take(key, datetime)
    return to_epoch_ms(value if value.tzinfo else value.replace(tzinfo=tz))


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
        "claim_after_working_days": sla.take("claim_after_working_days", int),
        "claim_window_days": sla.take("claim_window_days", int),
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
            start_ms=_instant(table, "start", tz),
            end_ms=_instant(table, "end", tz),
            app_id=table.take("app_id", str, None),
            clause=table.take("clause", str),
            note=table.take("note", str, ""),
        )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{table.where}: {error}") from None


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
    max_future_s = events.take("max_future_seconds", int)
    events.done()

    stream = root.table("stream")
    grace_s = stream.take("grace_seconds", int)
    group = stream.take("group", str)
    idle_lag_s = stream.take("idle_lag_seconds", int)
    dedup_hold_min = stream.take("dedup_hold_minutes", int)
    stream.done()

    kafka = root.table("kafka")
    bootstrap = kafka.take("bootstrap", str)
    partitions = kafka.take("partitions", int)
    if partitions < 1:
        raise ConfigError(f"{kafka.where}.partitions must be at least 1")
    retention_days = kafka.take("retention_days", int)
    if retention_days < 1:
        raise ConfigError(f"{kafka.where}.retention_days must be at least 1")
    topic_table = kafka.table("topics")
    topics = Topics(**{name: topic_table.take(name, str) for name in Topics.__dataclass_fields__})
    topic_table.done()
    kafka.done()

    redis = root.table("redis")
    redis_url = redis.take("url", str)
    key_prefix = redis.take("key_prefix", str)
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

    if min(grace_s, max_future_s, idle_lag_s, dedup_hold_min) < 0:
        raise ConfigError(f"{where}: [stream] and [events] durations cannot be negative")
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
        kafka_bootstrap=environ.get("KAFKA_BOOTSTRAP") or bootstrap,
        partitions=partitions,
        retention_ms=retention_days * 86_400_000,
        topics=topics,
        redis_url=environ.get("REDIS_URL") or redis_url,
        key_prefix=key_prefix,
        apps=apps,
        exemptions=tuple(exemptions),
    )
