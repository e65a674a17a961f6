"""`make demo` keeps the README's promises: every address it gives answers, the alert it names fires, Ctrl-C is clean.

The README's own text is the list: each ``http://127.0.0.1:...`` address in
it is opened on the running demo (``deploy/demo.sh``, as ``make demo`` runs
it), and the ``amtool`` command it gives is run. Then, as a user would,
Ctrl-C (SIGINT to the demo's process group) must stop everything and exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
DEMO_URLS = sorted(set(re.findall(r"<(http://127\.0\.0\.1:\d+/[^>]*)>", README)))
AMTOOL = re.search(r"`(amtool --alertmanager\.url=http://127\.0\.0\.1:\d+ [^`]+)`", README)
PROMISED_ALERT = "SlaBudgetHalfUsed"
"""The alert the README says fires for the incident's app about two minutes in."""
INCIDENT_APP = "1400000002"
DEMO_PORTS = (9090, 9095, 9464)


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def _until(check: Callable[[], bool], seconds: float, what: str, demo: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            pytest.fail(f"the demo ended (exit {demo.returncode}) before {what}", pytrace=False)
        if check():
            return
        time.sleep(2)
    pytest.fail(f"{what}: not within {seconds:.0f} s of the demo's start", pytrace=False)


@pytest.fixture(scope="module")
def demo() -> Iterator[subprocess.Popen[bytes]]:
    taken = [port for port in DEMO_PORTS if _get(f"http://127.0.0.1:{port}/")[0]]
    assert not taken, f"ports {taken} are taken: the demo needs them"
    log = (REPO / ".run" / "demo-test.log").open("wb")
    process = subprocess.Popen(
        ["bash", str(REPO / "deploy" / "demo.sh")],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DEMO_SECONDS": "600"},
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_the_readme_gives_the_demo_addresses() -> None:
    """A guard: a README without them would leave the test below nothing to open."""
    assert len(DEMO_URLS) >= 3 and AMTOOL is not None


def test_every_address_the_readme_gives_answers(demo: subprocess.Popen[bytes]) -> None:
    for url in DEMO_URLS:
        _until(lambda url=url: _get(url)[0] == 200, 90, f"{url} answers 200", demo)  # type: ignore[misc]
    _until(  # the app series come with the worker's first snapshot of counted traffic
        lambda: "sla_month_availability_ratio{" in _get("http://127.0.0.1:9464/metrics")[1],
        90,
        "the worker's /metrics to carry the apps' months",
        demo,
    )


def test_the_promised_alert_fires_and_reaches_alertmanager(demo: subprocess.Popen[bytes]) -> None:
    assert AMTOOL is not None

    def firing_in_prometheus() -> bool:
        status, body = _get("http://127.0.0.1:9090/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"] if status == 200 else []
        return any(
            a["labels"].get("alertname") == PROMISED_ALERT
            and a["labels"].get("app") == INCIDENT_APP
            and a["state"] == "firing"
            for a in alerts
        )

    _until(firing_in_prometheus, 360, f"{PROMISED_ALERT} firing for {INCIDENT_APP} in Prometheus", demo)

    def listed_by_amtool() -> bool:
        command = [*shlex.split(AMTOOL.group(1)), "--output=json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        return done.returncode == 0 and any(
            a["labels"].get("alertname") == PROMISED_ALERT for a in json.loads(done.stdout or "[]")
        )

    _until(listed_by_amtool, 60, f"the README's amtool command lists {PROMISED_ALERT}", demo)


def test_ctrl_c_stops_the_demo_cleanly(demo: subprocess.Popen[bytes]) -> None:
    assert demo.poll() is None, "the demo should still be running"
    os.killpg(demo.pid, signal.SIGINT)
    assert demo.wait(timeout=60) == 0
    deadline = time.monotonic() + 20
    while any(_get(f"http://127.0.0.1:{port}/")[0] for port in DEMO_PORTS) and time.monotonic() < deadline:
        time.sleep(1)
    assert not [port for port in DEMO_PORTS if _get(f"http://127.0.0.1:{port}/")[0]], "the demo left a server running"
