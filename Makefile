# sla-stream: entry points. `make test` is what CI runs (.ci/run).
#
# Services (Kafka 4.1.2 on 127.0.0.1:9092, Redis on 127.0.0.1:6379) are real
# processes started by deploy/*.sh; their pids, data and logs live in .run/.
# Set KAFKA_BOOTSTRAP / REDIS_URL to use services running elsewhere instead.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
SLA    := $(VENV)/bin/sla-stream
STAMP  := $(VENV)/.stamp-pyproject
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.stamp-pyproject

.PHONY: venv bench-venv up down cluster-up cluster-down test test-fast demo report-demo bench bench-report lint clean dashboard

# venv: .venv with the package (editable) and its test extras; reinstalled
# only when pyproject.toml is newer than the stamp.
venv: $(STAMP)
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 (e.g. apt-get install -y python3.11-venv)" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# bench-venv: .venv-bench with the package (editable) and its bench extra:
# Quix Streams for bench/quix_peer.py (the bench's Quix peer), py-spy for
# bench_stream.py --profile; a venv of its own because quixstreams needs an
# older confluent-kafka than the tests use. Reinstalled only when
# pyproject.toml is newer than its stamp.
bench-venv: $(BENCH_STAMP)
$(BENCH_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 (e.g. apt-get install -y python3.11-venv)" >&2; exit 1; }
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[bench]'
	touch $@

# up: start Kafka and Redis (or reuse running ones) and wait until ready.
up:
	bash deploy/up.sh

# down: stop the Kafka and Redis that `make up` started (and nothing else).
down:
	bash deploy/stop.sh

# cluster-up: a local Redis Cluster, 3 masters and 3 replicas on 127.0.0.1:7100-7105
# (REDIS_CLUSTER_PORTS), or reuse a running one; waits until every replica has
# synced (about 3 s). The cluster tests start it themselves when it is not running
# (tests/integration/redis_cluster.py); `bash deploy/redis-cluster.sh status` shows it.
cluster-up:
	bash deploy/redis-cluster.sh up

# cluster-down: stop the Redis Cluster nodes that `make cluster-up` started (data
# kept in .run/redis-cluster/; `bash deploy/redis-cluster.sh reset` removes it).
cluster-down:
	bash deploy/redis-cluster.sh down

# test: the whole suite (unit, component on Redis, integration on Kafka and Redis, and on a Redis Cluster the
# cluster tests start and stop themselves) against real services; the services are always stopped afterwards, and the recipe exits with pytest's
# status (make reports it as "Error N" and itself exits 2). After a Ctrl-C,
# run `make down`.
test: venv lint
	@status=0; \
	$(MAKE) --no-print-directory up && $(PY) -m pytest -q || status=$$?; \
	$(MAKE) --no-print-directory down; \
	exit $$status

# test-fast: the edit-test loop: the tests that need no service (tests/unit and
# the doctests of stream/), in about two minutes; `make test` runs them too.
test-fast: venv
	$(PY) -m pytest -q tests/unit stream

# demo: the live stream: Kafka, Redis, one worker and accelerated simulated
# traffic with an incident, watched in the terminal until Ctrl-C.
demo: venv
	bash deploy/demo.sh

# report-demo: a month of simulated traffic (October 2026, 1.1 million events,
# three incidents) and its month report for the terms in config/demo.toml.
report-demo: venv
	@mkdir -p .run
	$(SLA) simulate --apps 3 --month 2026-10 --seed 7 --out .run/demo-events.jsonl \
	    --incident "2026-10-14T10:00+08:00,30m,0.9" \
	    --incident "2026-10-21T20:00+08:00,2h,0.8,1400000002" \
	    --incident "2026-10-27T02:00+08:00,1h,0.5,1400000003"
	$(SLA) report --events .run/demo-events.jsonl --month 2026-10 --config config/demo.toml --format text

# bench: throughput and memory of one worker, two workers and Quix Streams
# against a raw aiokafka reader of the same topics, then what a storm of page
# requests costs a counting worker (bench/bench_web.py), then `sla-stream replay`'s
# over a month of events, then `sla-stream report`'s over months of event files
# against a plain read of them (not part of the tests); starts Kafka and Redis,
# stops them after. BENCH_ARGS (e.g. --profile), WEB_ARGS, REPLAY_ARGS and REPORT_ARGS
# (e.g. --sizes 5M) go to bench/bench_stream.py, bench/bench_web.py,
# bench/bench_replay.py and bench/bench_report.py.
bench: venv bench-venv
	@status=0; \
	$(MAKE) --no-print-directory up && $(PY) bench/bench_stream.py $(BENCH_ARGS) \
	    && $(PY) bench/bench_web.py $(WEB_ARGS) \
	    && $(PY) bench/bench_replay.py $(REPLAY_ARGS) \
	    && $(PY) bench/bench_report.py $(REPORT_ARGS) || status=$$?; \
	$(MAKE) --no-print-directory down; \
	exit $$status

# bench-scale: issue 19's fleet-size figures of the live path (bench/bench_scale.py):
# 10,000 apps x 24 slots x 10 requests, one worker then two, JSON arrays (every
# figure) and single events (counting only, on 2,000 apps): events/s counted,
# slots closed/s, worker idle CPU, /metrics series and bytes per scrape, Redis
# memory per held event id and per closed slot, every count and verdict checked
# against a truth computed from the plan (exit 1 when one differs). Every run
# on the single Redis and on the 3-master Redis Cluster (12 shards of the live
# state), and one worker's counting rate on the cluster over the single Redis's.
# Figures on stdout and in .run/bench-scale/*.json. Starts Kafka and Redis if
# they are not running (`make up`), and the cluster (deploy/redis-cluster.sh up)
# if none answers, and leaves them running; each run has its own topics,
# consumer group, Redis key prefix and metrics ports, and removes them after.
# SCALE_ARGS go to bench/bench_scale.py, e.g. --apps 1000 (a quick check),
# --workers 1, --redis single (or cluster), --shards 12 (or single=1,cluster=24),
# --profile (py-spy: `make bench-venv` first), --compare FILE.
.PHONY: bench-scale
bench-scale: venv
	@$(MAKE) --no-print-directory up
	$(PY) bench/bench_scale.py $(SCALE_ARGS)

# bench-web: only bench/bench_web.py: a worker counting a backlog, quiet and under
# a storm of 200 page clients alternately (its counting rate, the slowest /metrics
# scrape), then a burst of 500 connections. WEB_ARGS go to it.
.PHONY: bench-web
bench-web: venv
	@$(MAKE) --no-print-directory up
	$(PY) bench/bench_web.py $(WEB_ARGS)

# bench-monthend: issue 19's month-end figures (bench/bench_monthend.py): a sparse
# month of 10,000 apps (about 50 million events, both record shapes) replayed with
# `sla-stream replay` and rebuilt with `sla-stream rebuild`, each timed (seconds,
# events/s, where the time goes) with its peak RSS and Redis's, every app's figures
# checked against a truth computed from the plan and the live month ledgers against
# the replay's statements (exit 1 when one differs). Figures on stdout and in
# .run/bench-monthend/*.json. Starts Kafka and Redis if they are not running (`make
# up`) and leaves them running; each shape's topics and Redis keys are removed after.
# MONTHEND_ARGS go to bench/bench_monthend.py, e.g. --apps 300 --events 1000000 (a
# quick check), --shapes array, --redis cluster, --profile, --keep.
.PHONY: bench-monthend
bench-monthend: venv
	@$(MAKE) --no-print-directory up
	$(PY) bench/bench_monthend.py $(MONTHEND_ARGS)

# bench-report: only bench/bench_report.py: `sla-stream report` over a month of
# 5 and 50 million events (files generated once into .cache/report-bench/,
# some 6 GB) against a plain read of them; needs no Kafka or Redis.
# REPORT_ARGS as for bench.
bench-report: venv
	$(PY) bench/bench_report.py $(REPORT_ARGS)

# lint: ruff over the package and the tests (part of `make test`).
lint: venv
	$(VENV)/bin/ruff check stream tests deploy bench
	$(VENV)/bin/ruff format --check stream tests deploy bench

# clean: stop services (the Redis Cluster too), remove .run/ (data, logs) and
# the venvs' stamps; the downloaded Kafka jars in .cache/ are kept.
clean: down cluster-down
	rm -rf .run $(STAMP) $(BENCH_STAMP)

# dashboard: rebuild deploy/grafana/sla-stream.json from deploy/grafana/build_dashboard.py.
dashboard: venv
	$(PY) deploy/grafana/build_dashboard.py
