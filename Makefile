# sla-stream: entry points. `make test` is what CI runs (.ci/run).
#
# Services (Kafka 4.1.2 on 127.0.0.1:9092, Redis on 127.0.0.1:6379) are real
# processes started by deploy/*.sh; their pids, data and logs live in .run/.
# Set KAFKA_BOOTSTRAP / REDIS_URL to use services running elsewhere instead.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-pyproject

.PHONY: venv up down test demo clean

# venv: .venv with the package (editable) and its test extras; reinstalled
# only when pyproject.toml is newer than the stamp.
venv: $(STAMP)
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 (e.g. apt-get install -y python3.11-venv)" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# up: start Kafka and Redis (or reuse running ones) and wait until ready.
up:
	bash deploy/up.sh

# down: stop the Kafka and Redis that `make up` started (and nothing else).
down:
	bash deploy/stop.sh

# test: the whole suite (unit + integration) against real services; the
# services are always stopped afterwards, and the recipe exits with pytest's
# status (make reports it as "Error N" and itself exits 2). After a Ctrl-C,
# run `make down`.
test: venv
	@status=0; \
	$(MAKE) --no-print-directory up && $(PY) -m pytest -q tests || status=$$?; \
	$(MAKE) --no-print-directory down; \
	exit $$status

# demo: simulate a month of events with one incident, then print the report.
demo: venv
	@mkdir -p .run
	$(PY) -m stream.cli simulate --apps 3 --month 2026-10 --incident "2026-10-14T10:00+08:00,30m,0.95" --out .run/demo-events.jsonl --seed 7 && $(PY) -m stream.cli report --events .run/demo-events.jsonl --month 2026-10 --config config/demo.toml --format text

# clean: stop services, remove .run/ (data, logs) and the venv stamp; the
# downloaded Kafka jars in .cache/ are kept.
clean: down
	rm -rf .run $(STAMP)
