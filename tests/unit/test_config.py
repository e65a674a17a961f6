"""Settings (stream/config.py over config/sla-stream.toml): the agreement's defaults, overrides, and errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stream.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings
from stream.sla.exemptions import MAX_NOTE_CHARS
from stream.sla.months import Subscription

CONFIG_DIR = DEFAULT_CONFIG.parent
NO_ENV: dict[str, str] = {}


def whole_second_ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


@pytest.fixture
def load(write_config: Callable[..., Path]) -> Callable[[str], Settings]:
    """Load a user file with this TOML text over the defaults, in an empty environment."""
    return lambda text: load_settings(write_config(text), environ=NO_ENV)


@pytest.fixture
def refusal(write_config: Callable[..., Path]) -> Callable[[str], str]:
    """The ConfigError message for a user file with this TOML text; it must name the file."""

    def check(text: str) -> str:
        path = write_config(text)
        with pytest.raises(ConfigError) as raised:
            load_settings(path, environ=NO_ENV)
        message = str(raised.value)
        assert str(path) in message
        assert "\n" not in message.strip()
        return message

    return check


# defaults


def test_defaults_follow_the_spec() -> None:
    settings = load_settings(environ=NO_ENV)
    policy = settings.policy
    assert policy.timezone == ZoneInfo("Asia/Shanghai")
    assert policy.slot_success_min == Fraction(99, 100)
    assert policy.availability_target == Fraction(999, 1000)
    assert [(t.below, t.percent) for t in policy.compensation_tiers] == [
        (Fraction(999, 1000), 10),
        (Fraction(995, 1000), 20),
        (Fraction(99, 100), 50),
    ]
    assert policy.claim_after_working_days == 5
    assert policy.claim_window_days == 60
    assert settings.apps == {} and settings.exemptions == ()
    assert settings.terms("1400000001").subscriptions == ()


def test_default_topics_are_those_of_the_design() -> None:
    topics = load_settings(environ=NO_ENV).topics
    assert (topics.requests, topics.successes, topics.exemptions, topics.verdicts, topics.dead_letter) == (
        "trtc.room-entry.requests",
        "trtc.room-entry.successes",
        "trtc.sla.exemptions",
        "trtc.sla.slot-verdicts",
        "trtc.sla.dead-letter",
    )


def test_default_addresses_are_local() -> None:
    settings = load_settings(environ=NO_ENV)
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url.startswith("redis://127.0.0.1:6379")


def test_thresholds_are_exact_fractions_not_floats() -> None:
    policy = load_settings(environ=NO_ENV).policy
    assert type(policy.slot_success_min) is Fraction and type(policy.availability_target) is Fraction
    assert all(type(tier.below) is Fraction for tier in policy.compensation_tiers)


# overrides


def test_a_user_file_overrides_only_what_it_names(load: Callable[[str], Settings]) -> None:
    defaults = load_settings(environ=NO_ENV)
    settings = load('[sla]\ntimezone = "Asia/Kolkata"\n[kafka]\npartitions = 12\n')
    assert settings.policy.timezone == ZoneInfo("Asia/Kolkata")
    assert settings.partitions == 12
    assert settings.policy.availability_target == defaults.policy.availability_target
    assert settings.policy.slot_success_min == defaults.policy.slot_success_min
    assert settings.policy.compensation_tiers == defaults.policy.compensation_tiers
    assert settings.topics == defaults.topics
    assert settings.kafka_bootstrap == defaults.kafka_bootstrap
    assert settings.redis_url == defaults.redis_url


def test_a_user_list_of_tiers_replaces_the_default_list(load: Callable[[str], Settings]) -> None:
    settings = load('[sla]\navailability_target = "0.99"\n[[sla.compensation]]\nbelow = "0.99"\npercent = 25\n')
    assert settings.policy.availability_target == Fraction(99, 100)
    assert [(t.below, t.percent) for t in settings.policy.compensation_tiers] == [(Fraction(99, 100), 25)]


def test_environment_overrides_the_addresses(write_config: Callable[..., Path]) -> None:
    path = write_config('[kafka]\nbootstrap = "10.0.0.9:9092"\n[redis]\nurl = "redis://10.0.0.9:6379/0"\n')
    environ = {"KAFKA_BOOTSTRAP": "10.1.2.3:19092", "REDIS_URL": "redis://10.1.2.3:6380/2"}
    for settings in (load_settings(environ=environ), load_settings(path, environ=environ)):
        assert settings.kafka_bootstrap == "10.1.2.3:19092"
        assert settings.redis_url == "redis://10.1.2.3:6380/2"
    from_file = load_settings(path, environ=NO_ENV)
    assert (from_file.kafka_bootstrap, from_file.redis_url) == ("10.0.0.9:9092", "redis://10.0.0.9:6379/0")


def test_customer_terms_are_read_exactly(load: Callable[[str], Settings]) -> None:
    settings = load(
        '[[apps]]\napp_id = "1400000001"\n'
        "subscriptions = [{ activation = 2019-06-17, months = 12 }, { activation = 2019-03-17, months = 3 }]\n"
        'fees = { "2019-03-17" = "600.00", "2019-04-01" = "1234.56" }\n'
    )
    terms = settings.terms("1400000001")
    assert terms.subscriptions == (Subscription(date(2019, 3, 17), 3), Subscription(date(2019, 6, 17), 12))
    assert terms.fees == {date(2019, 3, 17): Decimal("600.00"), date(2019, 4, 1): Decimal("1234.56")}
    assert all(type(fee) is Decimal for fee in terms.fees.values())
    assert str(terms.fees[date(2019, 3, 17)]) == "600.00"


@pytest.mark.parametrize(
    ("zone", "offset_hours"),
    [("Asia/Shanghai", 8), ("Asia/Kolkata", 5.5), ("Asia/Kathmandu", 5.75)],
)
def test_an_exemption_time_without_offset_is_read_on_the_sla_clock(
    load: Callable[[str], Settings], zone: str, offset_hours: float
) -> None:
    settings = load(
        f'[sla]\ntimezone = "{zone}"\n'
        '[[exemptions]]\nstart = 2019-03-10T10:00:00\nend = 2019-03-10T10:30:00\nclause = "force-majeure"\n'
        '[[exemptions]]\napp_id = "1400000001"\nstart = 2019-03-10T10:00:00+00:00\n'
        'end = 2019-03-10T11:00:00Z\nclause = "announced-maintenance"\nnote = "upgrade"\n'
    )
    local, with_offset = settings.exemptions
    ten_local = whole_second_ms(datetime(2019, 3, 10, 10, 0, tzinfo=ZoneInfo(zone)))
    ten_utc_ms = 1552212000000  # 2019-03-10T10:00:00Z
    assert ten_local == ten_utc_ms - int(offset_hours * 3600_000)
    assert (local.start_ms, local.end_ms, local.app_id, local.clause) == (
        ten_local,
        ten_local + 30 * 60_000,
        None,
        "force-majeure",
    )
    assert (with_offset.start_ms, with_offset.end_ms, with_offset.app_id, with_offset.note) == (
        ten_utc_ms,
        ten_utc_ms + 3600_000,
        "1400000001",
        "upgrade",
    )


# errors


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[kafak]\nbootstrap = "127.0.0.1:9092"\n', "kafak"),
        ("[kafka]\npartitons = 3\n", "partitons"),
        ('[redis]\nurll = "redis://x"\n', "urll"),
        ("[events]\nmax_future_secs = 60\n", "max_future_secs"),
        ('[kafka.topics]\nrequest = "x"\n', "request"),
        ('[[apps]]\napp_id = "1"\nfee = { "2019-03-01" = "1.00" }\n', "fee"),
        ('[[apps]]\napp_id = "1"\nsubscriptions = [{ activation = 2019-03-01, months = 1, month = 2 }]\n', "month"),
        (
            '[[exemptions]]\nstart = 2019-03-10T10:00:00\nend = 2019-03-10T11:00:00\nclause = "attack"\n'
            'app = "1400000001"\n',
            "app",
        ),
        ('[[sla.compensation]]\nbelow = "0.999"\npercent = 10\npercnt = 5\n', "percnt"),
        ("[[calendar]]\nyear = 2027\nholiday = [2027-01-01]\n", "holiday"),
        ("verbose = true\n", "verbose"),
    ],
)
def test_an_unknown_key_is_refused_by_name(refusal: Callable[[str], str], text: str, key: str) -> None:
    message = refusal(text)
    assert f"'{key}'" in message and "unknown" in message


@pytest.mark.parametrize("key", ["availabilty_target", "slot_sucess_min", "time_zone"])
def test_an_unknown_key_in_the_sla_table_is_refused(refusal: Callable[[str], str], key: str) -> None:
    message = refusal(f'[sla]\n{key} = "0.5"\n')
    assert f"'{key}'" in message


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Asia/Shangai", "UTC+8", "../etc/passwd"])
def test_a_bad_time_zone_is_refused(refusal: Callable[[str], str], zone: str) -> None:
    message = refusal(f'[sla]\ntimezone = "{zone}"\n')
    assert "timezone" in message and zone in message


@pytest.mark.parametrize(
    "fee",
    ["1200.0", "1200", '"-1.00"', '"12,00"', '"NaN"', '"Infinity"', '""'],
    ids=["float", "int", "negative", "comma", "nan", "infinity", "empty"],
)
def test_a_fee_that_is_not_a_non_negative_decimal_string_is_refused(refusal: Callable[[str], str], fee: str) -> None:
    message = refusal(f'[[apps]]\napp_id = "1400000001"\nfees = {{ "2019-03-01" = {fee} }}\n')
    assert "fees" in message and "2019-03-01" in message


def test_a_fee_keyed_by_something_else_than_a_day_is_refused(refusal: Callable[[str], str]) -> None:
    message = refusal('[[apps]]\napp_id = "1400000001"\nfees = { "March" = "1.00" }\n')
    assert "fees" in message and "March" in message


def test_overlapping_subscriptions_are_refused(refusal: Callable[[str], str]) -> None:
    message = refusal(
        '[[apps]]\napp_id = "1400000001"\n'
        "subscriptions = [{ activation = 2019-01-01, months = 3 }, { activation = 2019-03-31, months = 1 }]\n"
    )
    assert "overlap" in message and "1400000001" in message


def test_back_to_back_subscriptions_are_accepted(load: Callable[[str], Settings]) -> None:
    settings = load(
        '[[apps]]\napp_id = "1400000001"\n'
        "subscriptions = [{ activation = 2019-01-01, months = 3 }, { activation = 2019-04-01, months = 1 }]\n"
    )
    assert len(settings.terms("1400000001").subscriptions) == 2


def test_a_subscription_of_zero_months_is_refused(refusal: Callable[[str], str]) -> None:
    assert "subscriptions[0]" in refusal(
        '[[apps]]\napp_id = "1"\nsubscriptions = [{ activation = 2019-01-01, months = 0 }]\n'
    )


@pytest.mark.parametrize("activation", ["2019-03-17T10:00:00", "2019-03-17T00:00:00+08:00"])
def test_a_subscription_activation_must_be_a_date_not_a_time(refusal: Callable[[str], str], activation: str) -> None:
    message = refusal(f'[[apps]]\napp_id = "1"\nsubscriptions = [{{ activation = {activation}, months = 3 }}]\n')
    assert "activation" in message


def test_an_app_listed_twice_is_refused(refusal: Callable[[str], str]) -> None:
    message = refusal('[[apps]]\napp_id = "1400000001"\n[[apps]]\napp_id = "1400000001"\n')
    assert "1400000001" in message and "twice" in message


def exemption(start: str, end: str, clause: str = "force-majeure") -> str:
    return f'[[exemptions]]\nstart = {start}\nend = {end}\nclause = "{clause}"\n'


def test_an_unknown_exemption_clause_is_refused(refusal: Callable[[str], str]) -> None:
    message = refusal(exemption("2019-03-10T10:00:00", "2019-03-10T11:00:00", "bad-weather"))
    assert "clause" in message and "bad-weather" in message and "exemptions[0]" in message


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2019-03-10T11:00:00", "2019-03-10T10:00:00"),
        ("2019-03-10T10:00:00", "2019-03-10T10:00:00"),
        ("2019-03-10T10:00:00+08:00", "2019-03-10T01:59:59Z"),
    ],
)
def test_an_exemption_that_does_not_end_after_it_starts_is_refused(
    refusal: Callable[[str], str], start: str, end: str
) -> None:
    message = refusal(exemption(start, end))
    assert "exemptions[0]" in message and "end" in message


def test_an_exemption_with_a_date_instead_of_a_time_is_refused(refusal: Callable[[str], str]) -> None:
    assert "start" in refusal(exemption("2019-03-10", "2019-03-11T00:00:00"))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[kafka]\npartitions = 0\n", "partitions"),
        ("[kafka]\npartitions = true\n", "partitions"),
        ('[kafka]\npartitions = "4"\n', "partitions"),
        ("[sla]\nslot_success_min = 0.99\n", "slot_success_min"),  # a float threshold
        ('[sla]\navailability_target = "high"\n', "availability_target"),
        ("[events]\nearliest = 2000-01-01T00:00:00\n", "earliest"),  # no offset
        ("[sla]\nclaim_window_days = 60.5\n", "claim_window_days"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_by_key(refusal: Callable[[str], str], text: str, key: str) -> None:
    assert key in refusal(text)


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("[stream]\ngrace_seconds = 99999999999999999999\n", "stream.grace_seconds", "from 0 to 86,400"),
        ("[stream]\ngrace_seconds = -1\n", "stream.grace_seconds", "from 0 to 86,400"),
        ("[stream]\ndedup_hold_minutes = 20000\n", "stream.dedup_hold_minutes", "from 0 to 10,080"),
        ("[stream]\nidle_lag_seconds = 31622401\n", "stream.idle_lag_seconds", "from 0 to 31,622,400"),
        ("[stream]\nsession_timeout_seconds = 0\n", "stream.session_timeout_seconds", "from 1 to 3,600"),
        ("[events]\nmax_future_seconds = 86401\n", "events.max_future_seconds", "from 0 to 86,400"),
        ("[kafka]\npartitions = 0\n", "kafka.partitions", "from 1 to 10,000"),
        ("[kafka]\nretention_days = 0\n", "kafka.retention_days", "from 1 to 36,600"),
        ("[replay]\nmargin_minutes = 1441\n", "replay.margin_minutes", "from 0 to 1,440"),
        ("[exempt]\nmax_window_days = 400\n", "exempt.max_window_days", "from 1 to 366"),
        ("[sla]\nclaim_window_days = 0\n", "sla.claim_window_days", "from 1 to 3,660"),
        ("[sla]\nsilent_after_minutes = 0\n", "sla.silent_after_minutes", "from 1 to 1,440"),
    ],
)
def test_a_duration_or_count_outside_its_range_is_refused_naming_key_and_range(
    refusal: Callable[[str], str], text: str, key: str, allowed: str
) -> None:
    message = refusal(text)
    assert key in message and allowed in message


def test_the_edges_of_a_range_are_accepted(load: Callable[[str], Settings]) -> None:
    settings = load("[stream]\ngrace_seconds = 86400\ndedup_hold_minutes = 0\n[kafka]\npartitions = 10000\n")
    assert (settings.grace_ms, settings.dedup_hold_ms, settings.partitions) == (86_400_000, 0, 10_000)


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[[apps]]\napp_id = "1400000001"\n# café\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_settings(latin1, environ=NO_ENV)
    message = str(raised.value)
    assert str(latin1) in message and "not UTF-8" in message and "0xe9" in message and "\n" not in message


def test_an_exemption_note_longer_than_the_limit_is_refused(refusal: Callable[[str], str]) -> None:
    long_note = "x" * (MAX_NOTE_CHARS + 1)
    message = refusal(exemption("2026-10-01T00:00:00+08:00", "2026-10-01T01:00:00+08:00") + f'note = "{long_note}"\n')
    assert f"at most {MAX_NOTE_CHARS}" in message and long_note not in message


def test_web_tokens_come_from_the_environment_or_a_file_and_never_show(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text("m3trics\n", encoding="utf-8")
    path = write_config(f'[web]\npages_token_env = "PAGES"\nmetrics_token_file = "{token_file}"\n')
    settings = load_settings(path, environ={"PAGES": "p4ges"})
    assert (settings.web.pages_token, settings.web.metrics_token) == ("p4ges", "m3trics")
    assert "p4ges" not in repr(settings) and "m3trics" not in repr(settings)
    assert load_settings(environ={}).web.pages_token is None  # asked for nothing by default


def test_a_web_token_written_in_the_settings_is_refused_without_echoing_it(refusal: Callable[[str], str]) -> None:
    message = refusal('[web]\npages_token = "in-the-clear"\n')
    assert "web.pages_token" in message and "in-the-clear" not in message


def test_bad_toml_is_refused(refusal: Callable[[str], str]) -> None:
    assert "TOML" in refusal('[sla\ntimezone = "Asia/Shanghai"\n')


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as raised:
        load_settings(missing, environ=NO_ENV)
    assert str(missing) in str(raised.value) and "not found" in str(raised.value)


SHIPPED = sorted(p for p in CONFIG_DIR.glob("*.toml") if p != DEFAULT_CONFIG)


@pytest.mark.parametrize("path", SHIPPED or [CONFIG_DIR / "example.toml"], ids=lambda p: p.name)
def test_every_shipped_config_file_loads_and_keys_fees_by_service_month(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.name} is not written yet")
    settings = load_settings(path, environ=NO_ENV)
    for app_id, terms in settings.apps.items():
        firsts = {m.first_day for s in terms.subscriptions for m in s.service_months()}
        for first_day in terms.fees:
            assert first_day in firsts if terms.subscriptions else first_day.day == 1, (path.name, app_id, first_day)
