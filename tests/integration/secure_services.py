"""A second Kafka broker and a Redis server, both secured, started by the security tests themselves.

The project's own services (``make up``) run without authentication; the
security tests need listeners that demand it. This module makes, in a
temporary directory, a test CA and certificates (``openssl``), then starts
from the project's Kafka jars one KRaft broker whose listeners each ask for
something else, and a ``redis-server`` with a password and a TLS port:

| port | listener | what a client needs |
|---|---|---|
| 19092 | SASL_PLAINTEXT | SCRAM-SHA-256 user and password |
| 19093 | SSL | the test CA; a client certificate is verified when offered (``ssl.client.auth=requested``) |
| 19094 | CONTROLLER | (KRaft, the broker's own) |
| 19095 | INTERNAL, PLAINTEXT | (inter-broker, not for the tests) |
| 19096 | SASL_SSL | the test CA and a PLAIN or SCRAM-SHA-512 user and password |
| 16390 | Redis | the password |
| 16391 | Redis TLS | the password and the test CA |

SCRAM users are created when the storage is formatted (``--add-scram``), so
the broker accepts them from its first second. Everything is stopped by the
caller (:meth:`Service.stop`: SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from stream_harness import terminate

REPO = Path(__file__).resolve().parents[2]
KAFKA_LIBS = REPO / ".cache" / "kafka-4.1.2" / "libs"
HOST = "127.0.0.1"
SASL_PORT, SSL_PORT, CONTROLLER_PORT, INTERNAL_PORT, SASL_SSL_PORT = 19092, 19093, 19094, 19095, 19096
REDIS_PORT, REDIS_TLS_PORT = 16390, 16391
START_TIMEOUT_S = 60
CLUSTER_ID = "c2xhLXN0cmVhbS1zZWN1cg"
"""A fixed KRaft cluster id (22 characters of URL-safe base64): every run formats a fresh directory anyway."""


@dataclass(frozen=True)
class Certs:
    """PEM files of the test CA, the servers' certificate (127.0.0.1 and localhost) and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    server_bundle: Path
    """The server key followed by its certificate: Kafka's PEM keystore."""
    client_cert: Path
    client_key: Path
    """Encrypted with the password given to :func:`make_certs`."""


def _openssl(command: str, cwd: Path) -> None:
    """Run ``openssl`` with ``command``'s words (no argument here holds a space)."""
    done = subprocess.run(["openssl", *command.split()], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"openssl {command.split()[0]} failed ({done.returncode}): {done.stderr.strip()}")


def make_certs(directory: Path, client_key_password: str) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    extensions = {
        "ca": "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
        "server": leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        "client": leaf + "extendedKeyUsage=clientAuth\n",
    }
    key_pass = f"pass:{client_key_password}"
    rsa = "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"
    _openssl(f"{rsa} -out ca.key", directory)
    _openssl(f"{rsa} -out server.key", directory)
    _openssl(f"{rsa} -aes256 -pass {key_pass} -out client.key", directory)
    for name, text in extensions.items():
        (directory / f"{name}.ext").write_text(text)
        unlock = f"-passin {key_pass}" if name == "client" else ""
        _openssl(f"req -new -key {name}.key {unlock} -subj /CN=sla-stream-test-{name} -out {name}.csr", directory)
        signer = "-signkey ca.key" if name == "ca" else "-CA ca.crt -CAkey ca.key -CAcreateserial"
        _openssl(f"x509 -req -in {name}.csr {signer} -days 2 -extfile {name}.ext -out {name}.crt", directory)
    bundle = directory / "server-bundle.pem"
    bundle.write_text((directory / "server.key").read_text() + (directory / "server.crt").read_text())
    return Certs(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        server_bundle=bundle,
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


class Service:
    """A server process this module started; stopped with SIGTERM, then SIGKILL.

    Its output goes to ``output``; ``log`` is the file that tells how it is
    doing (the same, unless the server writes a log of its own).
    """

    def __init__(self, name: str, argv: list[str], output: Path, log: Path | None = None) -> None:
        self.name, self.log = name, log or output
        with output.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_until(self, what: str, ready: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll ``ready`` until it holds; stop the service and fail the tests, with its log, if it never does."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "timed out"
                self.stop()
                pytest.fail(f"{self.name}: {what} ({state}); its log ends:\n{self.tail()}", pytrace=False)
            time.sleep(0.2)

    def stop(self, timeout_s: float = 15.0) -> None:
        terminate(self.proc, timeout_s)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _require_free(*ports: int) -> None:
    taken = [port for port in ports if port_open(port)]
    if taken:
        pytest.fail(f"port(s) {taken} on {HOST} are taken; the security tests need them free", pytrace=False)


def _java(*argv: str | Path, log4j: Path) -> list[str]:
    """A ``java`` command line running a class from the Kafka jars, logging as ``log4j`` says."""
    heap = ["-Xms256m", "-Xmx256m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
    return ["java", *heap, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{KAFKA_LIBS}/*", *map(str, argv)]


def start_kafka(
    directory: Path, certs: Certs, scram_users: Mapping[str, str], plain_users: Mapping[str, str]
) -> Service:
    """Format and start the secured broker (see the module's table); returns once it takes connections."""
    if not KAFKA_LIBS.is_dir():
        pytest.fail(f"Kafka jars not found in {KAFKA_LIBS}; run `make up` once to fetch them", pytrace=False)
    if shutil.which("java") is None:
        pytest.fail("java not found; install it with apt-get install -y openjdk-17-jre-headless", pytrace=False)
    _require_free(SASL_PORT, SSL_PORT, CONTROLLER_PORT, INTERNAL_PORT, SASL_SSL_PORT)
    directory.mkdir(parents=True, exist_ok=True)
    plain_jaas = " ".join(f'user_{name}="{password}"' for name, password in plain_users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    listeners = {
        "SASL_PLAINTEXT": SASL_PORT,
        "SSL": SSL_PORT,
        "INTERNAL": INTERNAL_PORT,
        "SASL_SSL": SASL_SSL_PORT,
    }
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{CONTROLLER_PORT}",
        "listeners": ",".join(
            f"{name}://{HOST}:{port}" for name, port in [*listeners.items(), ("CONTROLLER", CONTROLLER_PORT)]
        ),
        "advertised.listeners": ",".join(f"{name}://{HOST}:{port}" for name, port in listeners.items()),
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "SCRAM-SHA-256",
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule"
        f" required {plain_jaas};",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server_bundle),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca),
        "listener.name.ssl.ssl.client.auth": "requested",
        "log.dirs": str(directory / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    properties = directory / "server.properties"
    properties.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    log4j = directory / "log4j2.properties"
    log4j.write_text(
        f"status = warn\nappender.file.type = File\nappender.file.name = FILE\n"
        f"appender.file.fileName = {directory / 'server.log'}\n"
        "appender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = FILE\n"
    )
    scram_args = [
        arg
        for name, password in scram_users.items()
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
    ]
    format_cmd = _java(
        "kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c", properties, *scram_args, log4j=log4j
    )
    done = subprocess.run(format_cmd, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"formatting the secured broker's storage failed: {done.stdout}{done.stderr}", pytrace=False)
    broker = Service(
        "secured Kafka broker",
        _java("kafka.Kafka", properties, log4j=log4j),
        output=directory / "stdout.log",
        log=directory / "server.log",
    )
    broker.wait_until(
        "start", lambda: port_open(SASL_SSL_PORT) and "Kafka Server started" in broker.tail(400), START_TIMEOUT_S
    )
    return broker


def start_redis(directory: Path, certs: Certs, password: str) -> Service:
    """``redis-server`` wanting ``password`` (requirepass) on 16390, and on 16391 over TLS (the test CA's)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found; install it with apt-get install -y redis-server", pytrace=False)
    _require_free(REDIS_PORT, REDIS_TLS_PORT)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"  # the password in a file, not on a command line others can read
    config.write_text(
        f"bind {HOST}\nport {REDIS_PORT}\ntls-port {REDIS_TLS_PORT}\nrequirepass {password}\n"
        f"tls-cert-file {certs.server_cert}\ntls-key-file {certs.server_key}\ntls-ca-cert-file {certs.ca}\n"
        f'tls-auth-clients no\nsave ""\nappendonly no\ndir {directory}\n'
    )
    config.chmod(0o600)
    server = Service("secured Redis", ["redis-server", str(config)], directory / "redis.log")
    server.wait_until("start", lambda: port_open(REDIS_PORT) and port_open(REDIS_TLS_PORT), 20)
    return server
