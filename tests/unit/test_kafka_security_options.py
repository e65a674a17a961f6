"""Kafka security settings (``[kafka.security]``), the client options made from them, and redact().

Every refusal is one line that names the key (and the variable or file), and
never the secret; the option dicts carry the secret to the client but show
``***`` to anything that prints them. Certificates for the TLS cases are made
here with ``openssl``.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from stream import kafka_security
from stream.config import ConfigError, KafkaSecurity, Settings, load_settings
from stream.kafka_security import (
    Hidden,
    aiokafka_options,
    describe,
    faust_app_options,
    kafka_python_options,
    redact,
    ssl_context,
)
from stream.tools import topics

if TYPE_CHECKING:
    from conftest import CliRun

SECRET = "hunter2-s3cr3t"
KEY_PASSWORD = "key-pa55word"
ENV = {"KAFKA_PASSWORD": SECRET}
SCRAM = """
[kafka.security]
protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-256"
username = "alice"
password_env = "KAFKA_PASSWORD"
"""


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate (it serves as CA and as client certificate) and its key, encrypted and plain."""
    directory = tmp_path_factory.mktemp("pem")
    subject = ["-days", "1", "-subj", "/CN=sla-stream-unit"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", "key.pem", "-passout", f"pass:{KEY_PASSWORD}"]
        + ["-out", "cert.pem", *subject],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "pkey", "-in", "key.pem", "-passin", f"pass:{KEY_PASSWORD}", "-out", "plain-key.pem"],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    (directory / "not-a-cert.pem").write_text("hello\n")
    return {name: directory / f"{name}.pem" for name in ("cert", "key", "plain-key", "not-a-cert")}


@pytest.fixture
def load(write_config: Callable[..., Path]) -> Callable[..., Settings]:
    """Settings from a user file with this TOML text, in the environment ``env`` (by default, the password's)."""
    return lambda text, env=ENV: load_settings(write_config(text), environ=env)


@pytest.fixture
def refusal(write_config: Callable[..., Path]) -> Callable[..., str]:
    """The one-line ConfigError for this TOML text; it names the file and never holds a secret."""

    def check(text: str, env: dict[str, str] = ENV) -> str:
        path = write_config(text)
        with pytest.raises(ConfigError) as raised:
            load_settings(path, environ=env)
        message = str(raised.value)
        assert str(path) in message and "\n" not in message
        assert SECRET not in message and KEY_PASSWORD not in message
        return message

    return check


# --------------------------------------------------------------------------- settings


def test_the_default_is_plaintext_without_options() -> None:
    security = load_settings(environ={}).kafka_security
    assert security == KafkaSecurity()
    assert kafka_python_options(security) == aiokafka_options(security) == {"security_protocol": "PLAINTEXT"}


def test_scram_over_plaintext_takes_the_password_from_the_environment(load: Callable[..., Settings]) -> None:
    security = load(SCRAM).kafka_security
    assert (security.protocol, security.sasl_mechanism, security.username) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
        "alice",
    )
    assert security.password == SECRET
    assert SECRET not in repr(security) and SECRET not in repr(load(SCRAM))


def test_a_password_file_is_read_relative_to_the_settings_file(
    load: Callable[..., Settings], write_config: Callable[..., Path]
) -> None:
    password_file = write_config(SECRET + "\n", name="kafka-password")
    text = SCRAM.replace('password_env = "KAFKA_PASSWORD"', f'password_file = "{password_file.name}"')
    assert load(text, env={}).kafka_security.password == SECRET  # the file's line, without its newline


def test_sasl_over_tls_with_a_ca_and_a_client_certificate(load: Callable[..., Settings], pem: dict[str, Path]) -> None:
    text = f"""
[kafka.security]
protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
username = "alice"
password_env = "KAFKA_PASSWORD"
ca_file = "{pem["cert"]}"
cert_file = "{pem["cert"]}"
key_file = "{pem["key"]}"
key_password_env = "KEY_PASSWORD"
"""
    security = load(text, env={**ENV, "KEY_PASSWORD": KEY_PASSWORD}).kafka_security
    assert (security.ca_file, security.key_file, security.key_password) == (pem["cert"], pem["key"], KEY_PASSWORD)
    assert KEY_PASSWORD not in repr(security)
    assert describe(security) == (
        f"SASL_SSL, SCRAM-SHA-512 as user alice, CA {pem['cert']}, client certificate {pem['cert']}"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('protocol = "TLS"', "kafka.security.protocol must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ('sasl_mechanism = "PLAIN"', "kafka.security.sasl_mechanism applies only with protocol SASL_PLAINTEXT"),
        ('username = "alice"', "kafka.security.username applies only with protocol SASL_PLAINTEXT or SASL_SSL"),
        ('password_env = "KAFKA_PASSWORD"', "password_env or password_file applies only with protocol SASL_"),
        (
            'protocol = "SASL_PLAINTEXT"\nca_file = "/etc/hostname"',
            "ca_file applies only with protocol SSL or SASL_SSL",
        ),
        ("check_hostname = false", "kafka.security.check_hostname applies only with protocol SSL or SASL_SSL"),
        ('protocol = "SASL_SSL"', "protocol SASL_SSL needs sasl_mechanism"),
        ('protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"', "protocol SASL_PLAINTEXT needs username"),
        (
            'protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nusername = "alice"',
            "protocol SASL_PLAINTEXT needs password_env or password_file",
        ),
        (
            'protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "GSSAPI"\nusername = "a"\npassword_env = "KAFKA_PASSWORD"',
            "kafka.security.sasl_mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got 'GSSAPI'",
        ),
        ('protocol = "SSL"\ncheck_hostname = false', "kafka.security.check_hostname = false needs ca_file"),
        ('protocol = "SSL"\ncheck_hostname = "no"', "kafka.security.check_hostname must be bool"),
        ('protocol = "SSL"\nkey_file = "/etc/hostname"', "kafka.security.key_file needs cert_file"),
        (
            'protocol = "SSL"\nca_file = "/nonexistent/ca.pem"',
            "kafka.security.ca_file: cannot read /nonexistent/ca.pem",
        ),
        ('pasword_env = "KAFKA_PASSWORD"', "kafka.security: unknown key 'pasword_env'"),
    ],
)
def test_combinations_that_cannot_work_are_refused_naming_the_key(
    refusal: Callable[..., str], text: str, expected: str
) -> None:
    assert expected in refusal(f"[kafka.security]\n{text}\n")


def test_an_unset_variable_is_named_and_its_value_never_shown(refusal: Callable[..., str]) -> None:
    message = refusal(SCRAM, env={})
    assert "kafka.security.password_env: environment variable KAFKA_PASSWORD is not set or is empty" in message
    assert "environment variable KAFKA_PASSWORD is not set" in refusal(SCRAM, env={"KAFKA_PASSWORD": ""})
    # With the variable set, a later mistake in the same table is reported without the password.
    assert "needs username" in refusal(SCRAM.replace('username = "alice"', ""))


def test_a_secret_written_in_the_settings_file_is_refused_without_echoing_it(refusal: Callable[..., str]) -> None:
    message = refusal(SCRAM.replace('password_env = "KAFKA_PASSWORD"', f'password = "{SECRET}"'))
    assert "kafka.security.password: secrets are not read from the settings file" in message
    assert "kafka.security.key_password: secrets" in refusal(f'[kafka.security]\nkey_password = "{KEY_PASSWORD}"\n')
    # A password pasted where a variable's name belongs is not echoed either (it is no variable name).
    message = refusal(SCRAM.replace('"KAFKA_PASSWORD"', f'"{SECRET}!"'))
    assert "kafka.security.password_env must be an environment variable's name" in message


def test_password_sources_are_one_readable_non_empty_source(
    refusal: Callable[..., str], write_config: Callable[..., Path]
) -> None:
    both = SCRAM + 'password_file = "pw"\n'
    assert "give password_env or password_file, not both" in refusal(both)
    missing = SCRAM.replace('password_env = "KAFKA_PASSWORD"', 'password_file = "no-such-file"')
    assert "kafka.security.password_file: cannot read" in refusal(missing)
    assert "no-such-file (No such file or directory)" in refusal(missing)
    write_config("\n", name="empty")
    empty = SCRAM.replace('password_env = "KAFKA_PASSWORD"', 'password_file = "empty"')
    assert "kafka.security.password_file:" in refusal(empty) and "is empty" in refusal(empty)


def test_a_key_password_needs_a_certificate(refusal: Callable[..., str]) -> None:
    text = '[kafka.security]\nprotocol = "SSL"\nkey_password_env = "KAFKA_PASSWORD"\n'
    assert "key_password_env/key_password_file need cert_file" in refusal(text)


# --------------------------------------------------------------------------- client options


def test_sasl_options_hand_over_the_password_but_print_stars() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", username="alice", password=SECRET)
    for options in (kafka_python_options(security), aiokafka_options(security)):
        assert options == {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "alice",
            "sasl_plain_password": SECRET,
        }
        assert isinstance(options["sasl_plain_password"], Hidden)
        assert SECRET not in repr(options) and SECRET not in f"{options}" and "'***'" in repr(options)
        assert options["sasl_plain_password"].encode() == SECRET.encode()  # what the clients send


def test_kafka_python_debug_logs_of_its_configuration_show_no_password(caplog: pytest.LogCaptureFixture) -> None:
    """kafka-python logs an admin client's whole configuration at DEBUG when it starts."""
    security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", username="alice", password=SECRET)
    with caplog.at_level(logging.DEBUG, logger="kafka"), pytest.raises(KafkaError):  # nothing listens on port 1
        KafkaAdminClient(bootstrap_servers="127.0.0.1:1", bootstrap_timeout_ms=100, **kafka_python_options(security))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "sasl_plain_password" in logged and SECRET not in logged


def test_tls_options_share_one_verifying_context(pem: dict[str, Path]) -> None:
    security = KafkaSecurity("SSL", ca_file=pem["cert"])
    options = kafka_python_options(security)
    assert set(options) == {"security_protocol", "ssl_context"} and options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "sla-stream-unit"),),)]
    unchecked = ssl_context(KafkaSecurity("SSL", ca_file=pem["cert"], check_hostname=False))
    assert unchecked is not None and not unchecked.check_hostname and unchecked.verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "a", "b")) is None


def test_without_a_ca_file_the_system_cas_are_trusted() -> None:
    context = ssl_context(KafkaSecurity("SSL"))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_client_certificates_load_with_their_key_and_its_password(pem: dict[str, Path]) -> None:
    plain = KafkaSecurity("SSL", ca_file=pem["cert"], cert_file=pem["cert"], key_file=pem["plain-key"])
    encrypted = KafkaSecurity(
        "SSL", ca_file=pem["cert"], cert_file=pem["cert"], key_file=pem["key"], key_password=KEY_PASSWORD
    )
    assert ssl_context(plain) is not None and ssl_context(encrypted) is not None


@pytest.mark.parametrize("key_password", [None, "wrong-password"], ids=["missing", "wrong"])
def test_an_encrypted_key_without_its_password_is_a_config_error_not_a_prompt(
    pem: dict[str, Path], key_password: str | None
) -> None:
    security = KafkaSecurity(
        "SSL", ca_file=pem["cert"], cert_file=pem["cert"], key_file=pem["key"], key_password=key_password
    )
    with pytest.raises(ConfigError) as raised:
        kafka_python_options(security)
    message = str(raised.value)
    assert message.startswith(f"kafka.security.cert_file: the client certificate {pem['cert']} and its key")
    assert "key_password_env or key_password_file" in message
    assert "wrong-password" not in message and KEY_PASSWORD not in message and "\n" not in message


def test_a_ca_file_without_a_certificate_is_a_config_error(pem: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"^kafka.security.ca_file: no CA certificate could be read from"):
        aiokafka_options(KafkaSecurity("SSL", ca_file=pem["not-a-cert"]))


def test_faust_gets_the_broker_and_credentials_it_turns_into_the_same_aiokafka_options(
    load: Callable[..., Settings], pem: dict[str, Path], write_config: Callable[..., Path]
) -> None:
    plaintext = faust_app_options(load_settings(environ={"KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}))
    assert plaintext == {"broker": "kafka://k1:9092,k2:9092", "broker_credentials": None}

    sasl_ssl = load(SCRAM.replace("SASL_PLAINTEXT", "SASL_SSL") + f'ca_file = "{pem["cert"]}"\n')
    options = faust_app_options(sasl_ssl)
    credentials = options["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials) and SECRET not in repr(credentials)
    auth = credentials_to_aiokafka_auth(credentials)
    ours = aiokafka_options(sasl_ssl.kafka_security)
    assert {k: v for k, v in auth.items() if k != "ssl_context"} == {
        k: v for k, v in ours.items() if k != "ssl_context"
    }
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)

    tls = load(f'[kafka.security]\nprotocol = "SSL"\nca_file = "{pem["cert"]}"\n')
    credentials = faust_app_options(tls)["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


# --------------------------------------------------------------------------- redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        (
            "rediss://default:hunter2@host:6380/0?ssl_ca_certs=/ca.pem",
            "rediss://default:***@host:6380/0?ssl_ca_certs=/ca.pem",
        ),
        ("redis://:p@ss:w0rd@host/0", "redis://:***@host/0"),  # an unescaped @ or : in the password stays hidden
        ("redis://token123@host/0", "redis://***@host/0"),  # a lone user part may be a token
        ("redis://host:6379/0?password=hunter2&db=1", "redis://host:6379/0?password=***&db=1"),
        ("Kafka at alice:hunter2@b1:9092,b2:9092 is down", "Kafka at alice:***@b1:9092,b2:9092 is down"),
        ("SASL_SSL://alice:hunter2@b1:9093", "SASL_SSL://alice:***@b1:9093"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("mail ops@example.com, 10:30 at host:9092", "mail ops@example.com, 10:30 at host:9092"),
        ("Unable to bootstrap from [('127.0.0.1', 19092, <AddressFamily.AF_INET: 2>)]", None),
    ],
)
def test_redact_hides_url_passwords_and_nothing_else(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)
    assert redact(redact(text)) == redact(text)


# --------------------------------------------------------------------------- the commands


def test_an_address_with_a_password_never_reaches_the_terminal(
    cli: Callable[..., CliRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"kafka://alice:{SECRET}@127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setattr(topics, "TIMEOUT_MS", 1_000)
    line = cli("topics", "--check").assert_one_line_error()
    assert line.startswith("sla-stream: Kafka at kafka://alice:***@127.0.0.1:1 is not reachable") and SECRET not in line

    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@127.0.0.1:1/0")
    line = cli("watch", "--once").assert_one_line_error()
    assert line.startswith("sla-stream: Redis at redis://:***@127.0.0.1:1/0 is not reachable") and SECRET not in line


def test_a_secured_broker_that_is_not_there_is_named_with_how_sla_stream_connects(
    cli: Callable[..., CliRun], write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("KAFKA_PASSWORD", SECRET)
    monkeypatch.setattr(topics, "TIMEOUT_MS", 1_000)
    line = cli("topics", "--check", "--config", write_config(SCRAM)).assert_one_line_error()
    assert line.startswith(
        "sla-stream: Kafka at 127.0.0.1:1 is not reachable with SASL_PLAINTEXT, SCRAM-SHA-256 as user alice"
    )
    assert "check [kafka.security]" in line and SECRET not in line


def test_refusal_asks_only_secured_brokers() -> None:
    assert kafka_security.refusal("127.0.0.1:1", KafkaSecurity()) is None
    assert kafka_security.refusal("127.0.0.1:1", KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "a", SECRET), 1.0) is None
