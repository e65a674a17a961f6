"""The ``sla-stream`` command: one subcommand per job, one-line errors, no tracebacks for bad input."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from stream import report
from stream.arguments import calendar_month_argument
from stream.config import ConfigError, load_settings
from stream.formats import month_to_json
from stream.kafka_security import redact
from stream.live import metrics, rebuild, worker
from stream.sla.counting import SlotTally
from stream.sla.months import calendar_month
from stream.tools import producer, simulate, topics, watch


class UsageError(Exception):
    """Bad arguments or input; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line naming the command, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def run_report(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    year, month = args.month
    tz = settings.policy.timezone
    missing = [str(p) for p in args.events if not p.is_file()]
    if missing:
        raise UsageError(f"event file not found: {missing[0]}")
    tally = SlotTally(tz, calendar_month(year, month).span_ms(tz))
    bad_lines = report.count_event_files(args.events, tally, report.now_bounds(settings, datetime.now(timezone.utc)))
    for bad in bad_lines:
        print(f"skipped {bad}", file=sys.stderr)
    app_ids = [args.app] if args.app else sorted(tally.apps() | set(settings.apps))
    if args.app and args.app not in tally.apps() and args.app not in settings.apps:
        print(f"warning: app {args.app} has no events in {year}-{month:02d} and no terms on record", file=sys.stderr)
    result = report.assess_calendar_month(settings, tally, year, month, app_ids)
    for app_id, slots in result.unmeasured_slots.items():
        print(
            f"warning: app {app_id} has traffic in {slots} slots no subscription covers; they are not measured",
            file=sys.stderr,
        )
    assessments = result.assessments
    if args.format == "json":
        print(json.dumps([month_to_json(a, tz) for a in assessments], indent=2))
    else:
        print(report.to_text(assessments, tz, f"SLA month report {year}-{month:02d}"))
    print(
        f"{len(bad_lines)} bad lines skipped, {tally.duplicates} duplicate events counted once, "
        f"{tally.outside_window} events outside {year}-{month:02d} not counted",
        file=sys.stderr,
    )
    return 0


def run_topics(args: argparse.Namespace) -> int:
    statuses = topics.topic_statuses(load_settings(args.config), create=not args.check)
    for status in statuses:
        print(status.line())
    troubled = [status.spec.name for status in statuses if status.problems]
    if troubled:
        print(
            f"sla-stream: {len(troubled)} of {len(statuses)} topics need attention ({', '.join(troubled)}); "
            "existing topics are never altered: fix them (kafka-configs.sh, kafka-topics.sh) or the settings",
            file=sys.stderr,
        )
        return 1
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def run_simulate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    options = producer.options_from_args(args)
    if options is not None:
        sent = producer.send(
            settings, options, lambda period: simulate.plan_from_args(args, settings.policy.timezone, period), _say
        )
        _say(sent.summary())
        return 1 if sent.delivery.failed else 0
    plan = simulate.plan_from_args(args, settings.policy.timezone)
    written = simulate.write_file(plan, args.out)
    print(f"wrote {written} to {args.out}", file=sys.stderr)
    return 0


def _metrics_address(text: str) -> tuple[str, int] | None:
    try:
        return metrics.metrics_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    worker.run_worker(settings, loglevel=args.loglevel, metrics_at=args.metrics_port)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    summary = asyncio.run(rebuild.rebuild(load_settings(args.config), _say, force=args.force))
    _say(summary.line())
    return 0


def run_watch(args: argparse.Namespace) -> int:
    asyncio.run(watch.watch(load_settings(args.config), interval_s=args.interval, once=args.once))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sla-stream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rep = commands.add_parser("report", help="month report from JSON Lines event files")
    rep.add_argument(
        "--events",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help='JSON Lines file of events with "type"; repeat for several files',
    )
    rep.add_argument(
        "--month", type=calendar_month_argument, required=True, metavar="YYYY-MM", help="calendar month to report"
    )
    rep.add_argument("--app", help="report only this app_id")
    rep.add_argument("--config", type=Path, help="settings and customer terms laid over config/sla-stream.toml")
    rep.add_argument("--format", choices=("json", "text"), default="text")
    rep.set_defaults(run=run_report)

    sim = commands.add_parser("simulate", help="realistic room-entry events, to a JSON Lines file or to Kafka")
    simulate.add_arguments(sim)
    producer.add_arguments(sim)
    sim.add_argument("--config", type=Path, help="settings laid over config/sla-stream.toml (for the time zone)")
    sim.set_defaults(run=run_simulate)

    top = commands.add_parser("topics", help="create the Kafka topics, or check them (--check)")
    top.add_argument("--config", type=Path, help="settings laid over config/sla-stream.toml (names, partitions)")
    top.add_argument("--check", action="store_true", help="only check: create nothing")
    top.set_defaults(run=run_topics)

    wrk = commands.add_parser("worker", help="run a stream worker (run more in the same group to scale out)")
    wrk.add_argument("--config", type=Path, help="settings laid over config/sla-stream.toml")
    wrk.add_argument("--loglevel", choices=("debug", "info", "warning", "error"), default="info")
    wrk.add_argument(
        "--metrics-port",
        type=_metrics_address,
        default=metrics.DEFAULT_ADDRESS,
        metavar="[HOST:]PORT",
        help=f"serve Prometheus metrics at http://HOST:PORT/metrics (default {metrics.DEFAULT_ADDRESS}; 0/off: none)",
    )
    wrk.set_defaults(run=run_worker)

    reb = commands.add_parser(
        "rebuild", help="recount the live state in Redis from the topics (after Redis lost it); workers resume after"
    )
    reb.add_argument("--config", type=Path, help="settings laid over config/sla-stream.toml (the workers' own)")
    reb.add_argument("--force", action="store_true", help="recount even though the live state is in place")
    reb.set_defaults(run=run_rebuild)

    wat = commands.add_parser("watch", help="live view of every app's slots and running month, from Redis")
    wat.add_argument("--config", type=Path, help="settings laid over config/sla-stream.toml")
    wat.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    wat.add_argument("--once", action="store_true", help="print one view and exit")
    wat.set_defaults(run=run_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (
        UsageError,
        ConfigError,
        simulate.PlanError,
        topics.KafkaUnavailable,
        worker.WorkerStartError,
        rebuild.RebuildError,
        watch.RedisUnavailable,
    ) as error:
        # Every message goes through redact: an address in it may carry a password (redis://:secret@host).
        message = str(error) if str(error).startswith("sla-stream") else f"sla-stream: {error}"
        print(redact(message), file=sys.stderr)
        return 2
    except OSError as error:
        print(redact(f"sla-stream: {error.strerror or error}: {error.filename or ''}".rstrip(": ")), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
