"""The real Prometheus sees the input go silent and come back: SlaInputSilent fires, then resolves.

A worker reads a steady trickle of requests and their successes; a real
Prometheus scrapes it every second and evaluates deploy/prometheus/rules/sla.yml,
with SlaInputSilent's 10-minute window (and its recording rule's) shortened to
:data:`WINDOW_S` seconds and its ``for`` to :data:`FOR_S`; a real Alertmanager
notifies a webhook in the test. Shown through Prometheus's HTTP API and the
webhook:

* the worker exports ``sla_dead_letters_total`` for each input topic (the rule
  reads an unread topic as 0 by those names);
* while the producers send, nothing is pending, though the window has passed;
* when they stop, SlaInputSilent fires for both input topics, not before the
  window has passed since the last record, and Alertmanager notifies it;
* when they resume, it resolves (Alertmanager notifies ``resolved``);
* every rule of the missing-data group, SlaAppSilent's weekly offsets
  included, evaluates on the real Prometheus without an error.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from prometheus_stack import PrometheusStack, RuleEdit, Webhook
from stream_harness import Deployment, success_for

from stream.events import RequestEvent

pytest_plugins = ["stream_harness"]

APP = "1400000001"
WINDOW_S = 12
"""SlaInputSilent's 10 minutes, shortened: wider than any pause of a worker reading a steady stream."""
FOR_S = 2
EDITS = {
    "topic:sla_records_read:increase10m": RuleEdit({"[10m]": f"[{WINDOW_S}s]"}),
    "SlaInputSilent": RuleEdit({"offset 10m": f"offset {WINDOW_S}s"}, for_=f"{FOR_S}s"),
}


class Trickle:
    """A request and its success every 0.2 s, from a thread, while switched on."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.sent = 0
        self.last_sent_s = 0.0
        self._on = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._on.wait(0.1):
                    request = RequestEvent(f"r-trickle-{self.sent}", APP, "42", f"u{self.sent % 50}", now_ms())
                    self.d.produce_events([request, success_for(request)])  # returns once Kafka acknowledged
                    self.sent += 1
                    self.last_sent_s = time.time()
                    self._stop.wait(0.2)
        except BaseException as error:  # noqa: BLE001 - raised in the test's thread by check()
            self._error = error

    def start(self) -> None:
        self.check()
        self._on.set()

    def pause(self) -> float:
        """Stop sending; the time the last record was acknowledged (none is sent after it)."""
        self._on.clear()
        time.sleep(0.5)  # a record in flight is acknowledged within it
        self.check()
        return self.last_sent_s

    def check(self) -> None:
        if self._error is not None:
            raise AssertionError(f"the producer thread failed: {self._error!r}") from self._error

    def close(self) -> None:
        self._stop.set()
        self._on.set()
        self._thread.join(timeout=30)


def now_ms() -> int:
    return int(time.time() * 1000)


def silent_alerts(stack: PrometheusStack) -> dict[str, dict[str, Any]]:
    """SlaInputSilent as Prometheus has it now (pending or firing), by topic."""
    alerts = stack.api("/api/v1/alerts")["alerts"]
    return {a["labels"]["topic"]: a for a in alerts if a["labels"]["alertname"] == "SlaInputSilent"}


def firing_topics(stack: PrometheusStack) -> set[str]:
    return {topic for topic, a in silent_alerts(stack).items() if a["state"] == "firing"}


def notified(webhook: Webhook, status: str) -> set[str]:
    return {a["labels"]["topic"] for a in webhook.alerts(status) if a["labels"]["alertname"] == "SlaInputSilent"}


def test_input_silent_fires_when_the_producers_stop_and_resolves_when_they_resume(stream_deployment, tmp_path):
    d = stream_deployment()
    topics = set(d.input_topics)
    worker = d.start_worker()
    webhook = Webhook()
    stack = PrometheusStack(tmp_path / "prometheus", [f"127.0.0.1:{worker.metrics_port}"], webhook, EDITS)
    trickle = Trickle(d)
    try:
        trickle.start()
        started_s = time.time()
        d.wait_for(
            "Prometheus to see both topics read",
            lambda: {s["metric"]["topic"] for s in stack.query("topic:sla_records_read:increase10m > 0")} == topics,
            60,
            lambda: (stack.query("topic:sla_records_read:increase10m"), stack.logs()),
        )
        # A topic no worker read reads 0 by the name the workers export it under in sla_dead_letters_total.
        exported = stack.query('count by (topic) (sla_dead_letters_total{job="sla-stream"})')
        assert {s["metric"]["topic"] for s in exported} == topics, exported
        # The window has passed with traffic in it (and Prometheus watched the job before it): not silent.
        d.wait_for("a window of traffic", lambda: time.time() - started_s > WINDOW_S + 1, WINDOW_S + 5)
        d.wait_for(
            "the alert's guards to hold",
            lambda: bool(stack.query(f'count(up{{job="sla-stream"}} offset {WINDOW_S}s)')),
            30,
        )
        deadline = time.monotonic() + FOR_S + 2
        while time.monotonic() < deadline:
            assert not silent_alerts(stack), f"SlaInputSilent while the producers send: {silent_alerts(stack)}"
            time.sleep(0.25)

        # The producers stop: firing for both topics, not before the window has passed since the last record.
        last_s = trickle.pause()
        d.wait_for(
            "SlaInputSilent firing for both topics",
            lambda: firing_topics(stack) == topics,
            WINDOW_S + FOR_S + 30,
            lambda: (silent_alerts(stack), stack.query("topic:sla_records_read:increase10m"), stack.logs()),
        )
        for topic, alert in silent_alerts(stack).items():
            active_s = datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()
            # The last record read shows in a scrape up to a second or two after it was sent.
            assert active_s >= last_s + WINDOW_S - 3, f"{topic}: pending {active_s - last_s:.1f} s after the last"
            assert alert["labels"]["severity"] == "page"
        d.wait_for("Alertmanager to notify it", lambda: notified(webhook, "firing") == topics, 30, webhook.alerts)

        # They resume: resolved in Prometheus, and through Alertmanager.
        trickle.start()
        d.wait_for("SlaInputSilent resolved", lambda: not silent_alerts(stack), 20, lambda: silent_alerts(stack))
        d.wait_for(
            "Alertmanager to notify it resolved",
            lambda: notified(webhook, "resolved") == topics,
            30,
            lambda: webhook.alerts("resolved"),
        )

        groups = {g["name"]: g for g in stack.api("/api/v1/rules")["groups"]}
        rules = groups["sla-stream-missing-data"]["rules"]
        assert {r["name"] for r in rules} == {"SlaInputSilent", "SlaAppSilent"}
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        assert not [a for a in stack.api("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == "SlaAppSilent"]
    except BaseException:
        print(stack.logs())
        raise
    finally:
        trickle.close()
        stack.close()
        webhook.close()
