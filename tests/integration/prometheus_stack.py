"""A real Prometheus and Alertmanager for the tests, on free loopback ports, and a webhook that records alerts.

Prometheus scrapes the workers' ``/metrics`` as the job ``sla-stream`` every
second and evaluates the project's rules (deploy/prometheus/rules/sla.yml,
with every group's interval set to one second so a test need not wait 15 s
per step, and the windows of the rules a test names shortened by
:class:`RuleEdit`, so it need not wait 10 minutes either); Alertmanager sends
every notification, firing and resolved, to a :class:`Webhook` in the test
process. Both binaries come from Debian's
packages, installed by deploy/packages.sh (``make up``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from stream_harness import free_port, terminate

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "sla.yml"


class Webhook:
    """Alertmanager's receiver: every notification it POSTs, kept in order."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        """Every alert notified with ``status`` (``firing`` or ``resolved``)."""
        return [a for n in self.notifications for a in n["alerts"] if a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()


@dataclass(frozen=True)
class RuleEdit:
    """A test's change to one rule of sla.yml: texts replaced in its expression, and its ``for``.

    Example: ``RuleEdit({"[10m]": "[12s]"}, for_="2s")``. Each text must occur
    in the expression, so a test fails loudly when the rule changes under it.
    """

    replace: Mapping[str, str] = field(default_factory=dict)
    for_: str | None = None


def edit_rules(rules: dict[str, Any], edits: Mapping[str, RuleEdit]) -> None:
    """Apply ``edits`` (by alert or record name) to the parsed rules file, in place; every name must exist."""
    missing = set(edits)
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            edit = edits.get(name)
            if edit is None:
                continue
            missing.discard(name)
            for old, new in edit.replace.items():
                if old not in rule["expr"]:
                    raise ValueError(f"{name}: {old!r} is not in its expression {rule['expr']!r}")
                rule["expr"] = rule["expr"].replace(old, new)
            if edit.for_ is not None:
                rule["for"] = edit.for_
    if missing:
        raise ValueError(f"no rule named {sorted(missing)} in {RULES}")


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run deploy/packages.sh (make up does)")
    return found


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited while starting:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


class PrometheusStack:
    """Alertmanager, then Prometheus scraping ``targets`` (``host:port`` of workers' metrics).

    ``edits`` change rules by name (:class:`RuleEdit`), e.g. a 10-minute window to seconds.
    """

    def __init__(
        self, root: Path, targets: Sequence[str], webhook: Webhook, edits: Mapping[str, RuleEdit] | None = None
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.processes: list[subprocess.Popen] = []
        am_port, prom_port = free_port(), free_port()
        self.alertmanager_url = f"http://127.0.0.1:{am_port}"
        self.url = f"http://127.0.0.1:{prom_port}"
        (root / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "test",
                        "group_by": ["alertname", "app"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [{"name": "test", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}],
                }
            )
        )
        self._start(
            "alertmanager",
            [
                _binary("prometheus-alertmanager"),
                f"--config.file={root / 'alertmanager.yml'}",
                f"--storage.path={root / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            self.alertmanager_url,
        )
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        edit_rules(rules, edits or {})
        (root / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        (root / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(root / "rules.yml")],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                    "scrape_configs": [{"job_name": "sla-stream", "static_configs": [{"targets": list(targets)}]}],
                }
            )
        )
        self._start(
            "prometheus",
            [
                _binary("prometheus"),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            self.url,
        )

    def _start(self, name: str, argv: list[str], url: str) -> None:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        _wait_ready(url, process, log)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises with Prometheus's error when it does not parse)."""
        data = self.api("/api/v1/query", {"query": promql})
        return data["result"]

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def firing(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Alerts Prometheus has firing now, by ``(alertname, app)``."""
        alerts = self.api("/api/v1/alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("app", "")): a for a in alerts if a["state"] == "firing"}

    def logs(self) -> str:
        return "\n".join(
            f"===== {log.name} =====\n{log.read_text()[-2000:]}" for log in sorted(self.root.glob("*.log"))
        )

    def close(self) -> None:
        for process in reversed(self.processes):
            terminate(process)
