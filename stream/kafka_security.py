"""Kafka security for every client from one place, and secrets kept out of what is printed.

Three libraries talk to Kafka here: kafka-python (``sla-stream topics``, the
worker's start checks, the bench's producer), aiokafka (``simulate --kafka``,
the bench's reader) and Faust (the worker, on aiokafka). Each takes the
``[kafka.security]`` settings (:class:`~stream.config.KafkaSecurity`) under
its own names, so each gets them from here and every command authenticates
the same way:

- :func:`kafka_python_options`: keyword arguments of ``KafkaAdminClient``,
  ``KafkaConsumer`` and ``KafkaProducer``;
- :func:`aiokafka_options`: of ``AIOKafkaProducer`` and ``AIOKafkaConsumer``;
- :func:`faust_app_options`: ``broker`` and ``broker_credentials`` for
  ``faust.App(...)`` (``faust.SASLCredentials`` or ``faust.SSLCredentials``).

TLS goes through one :class:`ssl.SSLContext` (:func:`ssl_context`). Passwords
are handed to the clients as :class:`Hidden` strings, whose ``repr`` is
``'***'``: kafka-python logs its whole configuration at DEBUG level, and
option dicts end up in logs and tracebacks. :func:`redact` hides passwords in
URLs (a Redis URL, a bootstrap string written with credentials) in any text
that is printed. :func:`refusal` asks a broker why it refuses these settings,
at once, where kafka-python would retry a wrong password until its timeout and
then only say that it could not connect.

Examples:
    >>> redact("Redis at redis://:hunter2@127.0.0.1:6379/0 refused the password")
    'Redis at redis://:***@127.0.0.1:6379/0 refused the password'
    >>> redact("Kafka at kafka://alice:s3cr3t@broker-1:9092,broker-2:9092 and alice:s3cr3t@broker-3:9092")
    'Kafka at kafka://alice:***@broker-1:9092,broker-2:9092 and alice:***@broker-3:9092'
    >>> redact("rediss://cache.example:6380/0?ssl_ca_certs=/etc/ca.pem&password=hunter2 (ops@example.com)")
    'rediss://cache.example:6380/0?ssl_ca_certs=/etc/ca.pem&password=*** (ops@example.com)'
    >>> kafka_python_options(KafkaSecurity())
    {'security_protocol': 'PLAINTEXT'}
    >>> scram = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", username="alice", password="s3cr3t")
    >>> options = aiokafka_options(scram)
    >>> options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_password"]
    ('SASL_PLAINTEXT', 'SCRAM-SHA-256', '***')
    >>> options["sasl_plain_password"] == "s3cr3t"
    True
    >>> describe(scram)
    'SASL_PLAINTEXT, SCRAM-SHA-256 as user alice'
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import IllegalSaslStateError, KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.helpers import create_ssl_context
from faust.types.auth import CredentialsT

from stream.config import ConfigError, KafkaSecurity, Settings

DEFAULT_PORT = 9092
_REFUSALS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError, ssl.SSLError)
"""What a broker that answers says when it will not let these settings in (as opposed to not answering)."""

_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://|(?<![^\s,;=(\[<'\"]))"  # a URL's scheme, or the start of a bare address
    r"(?P<userinfo>[^\s/?#'\"]*)@"  # up to the authority's last @ (an unescaped @ in a password stays hidden)
)
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|secret|token)=)[^&;#\s'\"]*", re.IGNORECASE)


class Hidden(str):
    """A secret: the string itself to whoever uses it, ``'***'`` to ``repr`` (logged option dicts, tracebacks)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def _hide_userinfo(match: re.Match[str]) -> str:
    head, userinfo = match["head"], match["userinfo"]
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{head}{user}:***@"
    # No colon: in a URL the user part alone may be a token; a bare name@host is an address, not a secret.
    return f"{head}***@" if head else match[0]


def redact(text: str) -> str:
    """``text`` with the password of every URL in it (``scheme://user:secret@``, ``?password=``) replaced by ``***``.

    For every address that is printed: Redis URLs carry their password, and a
    bootstrap string may have been written with one.
    """
    return _QUERY_SECRET.sub(r"\g<key>***", _USERINFO.sub(_hide_userinfo, text))


def describe(security: KafkaSecurity) -> str:
    """How sla-stream connects, for messages: protocol, mechanism and user, CA and client certificate (no secret)."""
    parts = [security.protocol]
    if security.sasl:
        parts.append(f"{security.sasl_mechanism} as user {security.username}")
    if security.tls:
        parts.append(f"CA {security.ca_file}" if security.ca_file else "the system's CAs")
        if security.cert_file:
            parts.append(f"client certificate {security.cert_file}")
    return ", ".join(parts)


def _no_key_password() -> str:
    """Stands in for a missing key password: without it, OpenSSL would prompt for one on the terminal."""
    return ""


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of every Kafka connection, None without TLS.

    It trusts ``ca_file`` (else the system's CAs), presents the client
    certificate when one is set, and checks the broker's host name unless
    ``check_hostname`` is false (the chain is verified either way). A file
    that does not load is a :class:`ConfigError` naming its key.
    """
    if not security.tls:
        return None
    try:
        context = create_ssl_context(cafile=security.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"kafka.security.ca_file: no CA certificate could be read from {security.ca_file} ({error})"
        ) from None
    context.check_hostname = security.check_hostname
    if security.cert_file:
        try:
            context.load_cert_chain(security.cert_file, security.key_file, security.key_password or _no_key_password)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"kafka.security.cert_file: the client certificate {security.cert_file} and its key "
                f"{security.key_file or '(in the same file)'} do not load ({error}); an encrypted key needs "
                "key_password_env or key_password_file, with the right password"
            ) from None
    return context


def _client_options(security: KafkaSecurity) -> dict[str, Any]:
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.username,
            "sasl_plain_password": Hidden(security.password or ""),
        }
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    return options


def kafka_python_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for kafka-python's clients (``KafkaAdminClient``, ``KafkaConsumer``, ``KafkaProducer``)."""
    return _client_options(security)


def aiokafka_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for aiokafka's clients (``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``create_conn``).

    aiokafka took kafka-python's names, so today both dicts are alike; each
    library keeps its own function so that either may change on its own.
    """
    return _client_options(security)


def faust_app_options(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for ``faust.App(...)``: ``faust.App(id, **faust_app_options(s), ...)``.

    Faust 0.15.3 hands the credentials to every aiokafka client it makes
    (consumer, producer, topic creation): SASL (PLAIN, SCRAM-SHA-256/512) with
    or without TLS as :class:`faust.SASLCredentials`, TLS alone as
    :class:`faust.SSLCredentials`; none for PLAINTEXT.
    """
    security = settings.kafka_security
    context = ssl_context(security)
    credentials: CredentialsT | None = None
    if security.sasl:
        credentials = faust.SASLCredentials(
            username=security.username,
            password=Hidden(security.password or ""),
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {"broker": f"kafka://{settings.kafka_bootstrap}", "broker_credentials": credentials}


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a bootstrap string (``[v6]:port`` too; no port: Kafka's 9092)."""
    found = []
    for address in bootstrap.split(","):
        host, colon, port = address.strip().rpartition(":")
        if not colon or not port.isdigit():
            host, port = address.strip(), str(DEFAULT_PORT)
        found.append((host.strip("[]"), int(port)))
    return found


async def _first_refusal(bootstrap: str, security: KafkaSecurity, timeout_s: float) -> str | None:
    options = aiokafka_options(security)
    addresses = _addresses(bootstrap)
    refusals = []
    for host, port in addresses:
        try:
            connection = await asyncio.wait_for(
                create_conn(host, port, client_id="sla-stream", request_timeout_ms=int(timeout_s * 1000), **options),
                timeout_s,
            )
        except _REFUSALS as error:
            refusals.append(f"{host}:{port}: {error}" if len(addresses) > 1 else str(error))
            continue
        except (KafkaError, OSError, TimeoutError):  # not answering at all: the clients report it, after their timeout
            continue
        connection.close()
        return None
    return refusals[0] if refusals else None


def refusal(bootstrap: str, security: KafkaSecurity, timeout_s: float = 10.0) -> str | None:
    """Why the brokers at ``bootstrap`` refuse these security settings, or None (one lets a client in, or none answers).

    A wrong password, a mechanism the listener does not offer, a certificate
    that does not verify: aiokafka's connection says which at once. Only
    secured protocols are asked (PLAINTEXT has nothing to refuse). Call it
    outside a running event loop.
    """
    if security.protocol == "PLAINTEXT":
        return None
    return asyncio.run(_first_refusal(bootstrap, security, timeout_s))
