"""The ``sla-stream`` command: one subcommand per job, one-line errors, no tracebacks for bad input.

The texts of :func:`build_parser` are the user's guide on the command line
(``--help`` on each command); ``tests/unit/test_cli_help.py`` checks that every
command and option has one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from stream import __version__, report
from stream.arguments import calendar_month_argument, part_argument, run_name_argument
from stream.config import ConfigError, Settings, load_settings
from stream.kafka_security import redact
from stream.live import metrics, rebuild, worker
from stream.live.store import LayoutMismatch
from stream.monthend import exempt, parts, progress, replay
from stream.months_output import MonthsOutput
from stream.offline import counting as offline_counting
from stream.offline.files import EventFilesError, event_files
from stream.sla.coverage import month_label
from stream.sla.exemptions import CLAUSES, MAX_NOTE_CHARS
from stream.sla.months import calendar_month
from stream.sla.slots import local_time, to_epoch_ms
from stream.tools import producer, simulate, topics, watch

INCOMPLETE_DATA = 3
"""``report --strict``'s exit status when the events leave a silent period in the month."""


class UsageError(Exception):
    """Bad arguments or input; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line naming the command, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def run_report(args: argparse.Namespace) -> int:
    _check_output(args)
    settings = load_settings(args.config)
    if args.exemptions is not None:  # refused before the files are counted, which can take minutes
        if not args.exemptions.is_file():
            raise UsageError(f"exemptions file not found: {args.exemptions}")
        settings = report.with_exemptions_file(settings, args.exemptions)
    year, month = args.month
    label = month_label(year, month)
    tz = settings.policy.timezone
    now = datetime.now(timezone.utc)
    now_ms = to_epoch_ms(now)
    span = calendar_month(year, month).span_ms(tz)
    if span[0] > now_ms:
        raise UsageError(f"{label} has not begun: it starts {local_time(span[0], tz).isoformat(timespec='minutes')}")
    paths = event_files(args.events)

    def shown(label: str, total: int, unit: str) -> progress.ReadProgress:
        return progress.progress_for(f"report {year}-{month:02d}: {label}", total, sys.stderr, unit=unit)

    tally = offline_counting.count_event_files(
        paths,
        tz,
        span,
        report.now_bounds(settings, now),
        lambda bad: print(f"skipped {bad}", file=sys.stderr),
        shown,
    )
    print(
        f"{tally.bad_lines} bad lines skipped, {tally.duplicates} duplicate events counted once, "
        f"{tally.outside_window} events outside {label} not counted",
        file=sys.stderr,
    )
    if next(tally.covered.minutes(), None) is None:
        raise UsageError(
            f"no events of {label} in {', '.join(args.events)}: nothing to report (no figure without data)"
        )
    if args.app and args.app not in tally.apps() and args.app not in settings.apps:
        raise UsageError(f"unknown app {args.app}: no events of it in {label} and no terms on record")
    app_ids = [args.app] if args.app else sorted(tally.apps() | set(settings.apps))
    result = report.assess_calendar_month(settings, tally, year, month, app_ids, tally.covered, now_ms)
    for app_id, slots in result.unmeasured_slots.items():
        print(
            f"warning: app {app_id} has traffic in {slots} slots no subscription covers; they are not measured",
            file=sys.stderr,
        )
    for app_id, later in result.not_begun.items():
        begins = ", ".join(str(m.first_day) for m in later)
        if args.app and not result.statements:
            raise UsageError(f"app {args.app}: its service month in {label} has not begun: it starts {begins}")
        _say(f"app {app_id}: its service month from {begins} has not begun: left out")
    output = _months_output(settings, year, month, args)
    for statement in result.statements:
        output.add(statement)
    output.finish()
    return _strict_status(output, args, f"the events leave silent periods in {label}")


def _strict_status(output: MonthsOutput, args: argparse.Namespace, why: str) -> int:
    """``--strict``: :data:`INCOMPLETE_DATA` when a statement's data leaves a silent period (after printing it)."""
    if args.strict and output.incomplete:
        _say(f"sla-stream: incomplete data: {why} (--strict)")
        return INCOMPLETE_DATA
    return 0


def _months_output(settings: Settings, year: int, month: int, args: argparse.Namespace) -> MonthsOutput:
    """Where ``report`` and ``replay`` write the month's statements (the same bytes for the same figures): JSON,
    text or the slot CSV on stdout, or HTML pages into ``--out``."""
    title = f"SLA month report {year}-{month:02d}"
    return MonthsOutput(args.format, sys.stdout, settings.policy.timezone, title, args.out, _say)


def _check_output(args: argparse.Namespace) -> None:
    """``--out`` goes with ``--format html`` (a page per app and service month), and only with it."""
    if args.format == "html" and args.out is None:
        raise UsageError("--format html writes one page per app and service month: give --out DIRECTORY")
    if args.format != "html" and args.out is not None:
        raise UsageError("--out is for --format html; other formats are written to stdout")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is not a directory")


def run_replay(args: argparse.Namespace) -> int:
    _check_output(args)
    part = _replay_part(args)
    settings = load_settings(args.config)
    year, month = args.month
    request = replay.ReplayRequest(year, month, tuple(dict.fromkeys(args.app or ())), keep=args.keep, part=part)

    def shown(label: str, total: int) -> progress.ReadProgress:
        return progress.progress_for(label, total, sys.stderr)

    output = _months_output(settings, year, month, args)
    result = asyncio.run(replay.replay(settings, request, shown, _say, output.add, processes=args.processes))
    if not result.judged:  # another part of the split replay prints the month
        _say(result.line(request.name))
        return 0
    output.finish()
    _say(result.line(request.name))
    return _strict_status(output, args, f"the topics leave silent periods in {request.name}")


def _replay_part(args: argparse.Namespace) -> parts.Part | None:
    """``--part K/N --run NAME [--part-timeout S]``: this host's part of a replay split across hosts, or None."""
    if args.part is None:
        if args.run_name is not None or args.part_timeout is not None:
            raise UsageError("--run and --part-timeout go with --part K/N (a replay split across hosts)")
        return None
    if args.run_name is None:
        raise UsageError("--part needs --run NAME: the same name on every part of the split replay")
    index, count = args.part
    timeout_s = parts.DEFAULT_TIMEOUT_S if args.part_timeout is None else args.part_timeout
    return parts.Part(args.run_name, index, count, timeout_s)


def run_exempt_add(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    now_ms = int(time.time() * 1000)
    wanted = exempt.parse_new_exemption(settings, args.app, args.start, args.end, args.clause, args.note, now_ms)
    exemption_id = asyncio.run(exempt.add(settings, wanted))
    print(exemption_id)
    tz = settings.policy.timezone
    _say(
        f"exemption {exemption_id} written: {wanted.app_id or 'every app'}, {local_time(wanted.start_ms, tz)} to "
        f"{local_time(wanted.end_ms, tz)}, {wanted.clause}; live figures follow within seconds"
    )
    return 0


def run_exempt_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    listed = asyncio.run(exempt.in_force(settings))
    if args.format == "json":
        print(
            json.dumps(
                [{**e.record, "id": e.exemption_id, "slots_exempted": e.slots_exempted} for e in listed],
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        print(exempt.to_text(listed, settings.policy.timezone))
    return 0


def run_exempt_remove(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    removed = asyncio.run(exempt.remove(settings, args.id))
    _say(
        f"exemption {args.id} withdrawn ({removed.app_id or 'every app'}, {removed.clause}); "
        "live figures follow within seconds"
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


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, got {text!r}")
    return int(text)


def _metrics_address(text: str) -> tuple[str, int] | None:
    try:
        return metrics.metrics_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    worker.run_worker(settings, loglevel=args.loglevel, metrics_at=args.metrics_port, log_format=args.log_format)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    summary = asyncio.run(rebuild.rebuild(load_settings(args.config), _say, force=args.force))
    _say(summary.line())
    return 0


def run_watch(args: argparse.Namespace) -> int:
    asyncio.run(watch.watch(load_settings(args.config), interval_s=args.interval, once=args.once))
    return 0


def _add_strict_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {INCOMPLETE_DATA} when the data leaves a silent period in the month (incomplete data)",
    )


def _add_format_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json", "csv", "html"),
        default="text",
        help="text (default), json (figures and digest), csv (every slot with traffic, digests in the footer) "
        "or html (a self-contained page per app and service month, into --out)",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="directory for --format html's pages")


DESCRIPTION = """\
Tells whether a room-entry service level agreement is kept: the call success
rate in 5-minute slots (a slot under 99% is unavailable), each service month's
availability against 99.9%, and the voucher owed below it. Counts events
exactly once from Kafka into Redis (worker), or from files (report), and gives
statements a customer can audit slot by slot."""

EPILOG = f"""\
exit status:
  0    done
  1    done, but something needs attention (topics: a topic to fix; simulate: events not delivered)
  2    refused: bad arguments, settings or input, or Kafka or Redis not answering (one line says why)
  {INCOMPLETE_DATA}    --strict: the data leaves a silent period in the month (incomplete data)
  130  interrupted (Ctrl-C)

Settings: config/sla-stream.toml, with --config FILE laid over it; KAFKA_BOOTSTRAP
and REDIS_URL override the addresses. Guide: docs/usage.md; each command's --help."""


def _add_config_argument(parser: argparse.ArgumentParser, used_for: str = "") -> None:
    """``--config FILE``, the same on every command (``used_for``: what this command reads from it)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings and customer terms laid over config/sla-stream.toml" + (f" ({used_for})" if used_for else ""),
    )


def _subcommands(
    parser: argparse.ArgumentParser, dest: str, help_line: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The commands under ``parser``, one required, named in upper case in the usage line (``dest``)."""
    return parser.add_subparsers(
        title=f"{dest}s", dest=dest, required=True, parser_class=_Parser, metavar=dest.upper(), help=help_line
    )


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, guide: str
) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` is its line in ``sla-stream --help``, ``guide`` the head of its own ``--help``."""
    return commands.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {guide}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sla-stream",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the exit status table keeps its lines
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = _subcommands(parser, "command", "`sla-stream COMMAND --help` tells more")

    rep = _command(
        commands,
        "report",
        "a month's statements from event files",
        "Reads JSON Lines event files of any size (bounded memory) and prints, per app, every service month in the "
        "calendar month: availability, unavailable slots, the error budget, the voucher and the claim window. "
        "Lines that break the event contract are listed on stderr and skipped. A month without data is refused, "
        "never reported as 100%.",
    )
    rep.add_argument(
        "--events",
        type=str,
        action="append",
        required=True,
        metavar="SPEC",
        help='JSON Lines events with "type": file, directory or glob; .jsonl or .jsonl.gz; repeat for several',
    )
    rep.add_argument(
        "--month", type=calendar_month_argument, required=True, metavar="YYYY-MM", help="calendar month to report"
    )
    rep.add_argument("--app", metavar="APP_ID", help="report only this app")
    _add_config_argument(rep)
    _add_format_arguments(rep)
    rep.add_argument(
        "--exemptions",
        type=Path,
        metavar="FILE",
        help="exemptions from the topic too, as `sla-stream exempt list --format json` wrote them",
    )
    _add_strict_argument(rep)
    rep.set_defaults(run=run_report)

    sim = _command(
        commands,
        "simulate",
        "realistic room-entry events, to a JSON Lines file or to Kafka",
        "Apps 1400000001 upwards with a daily peak and a quiet night, incidents at chosen times, duplicates, late "
        "successes and a few events without request_ts. The same --seed gives the same events.",
    )
    simulate.add_arguments(sim)
    producer.add_arguments(sim)
    _add_config_argument(sim, "the time zone; with --kafka, the topics")
    sim.set_defaults(run=run_simulate)

    top = _command(
        commands,
        "topics",
        "create the Kafka topics, or check them (--check)",
        "Creates the topics the settings name that do not exist yet and checks every one (partitions, cleanup "
        "policy, retention), a line each. Existing topics are never altered.",
    )
    _add_config_argument(top, "topic names, partitions, retention")
    top.add_argument("--check", action="store_true", help="only check: create nothing")
    top.set_defaults(run=run_topics)

    wrk = _command(
        commands,
        "worker",
        "run a stream worker (run more in the same group to scale out)",
        "Counts the input topics exactly once into 5-minute slots in Redis, closes each slot as event time passes, "
        "publishes its verdict, keeps each app's running month, and serves /metrics and the live month pages. "
        "Runs until stopped (SIGTERM or Ctrl-C).",
    )
    _add_config_argument(wrk)
    wrk.add_argument(
        "--loglevel",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="the least important log lines shown (default info)",
    )
    wrk.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: one object a line (time, level, logger, message), for log pipelines",
    )
    wrk.add_argument(
        "--metrics-port",
        type=_metrics_address,
        default=metrics.DEFAULT_ADDRESS,
        metavar="[HOST:]PORT",
        help=f"serve Prometheus metrics at http://HOST:PORT/metrics and the live month pages at http://HOST:PORT/ "
        f"(default {metrics.DEFAULT_ADDRESS}; 0/off: neither)",
    )
    wrk.set_defaults(run=run_worker)

    reb = _command(
        commands,
        "rebuild",
        "recount the live state in Redis from the topics (after Redis lost it)",
        "Counts every retained event again into the live namespace, closes the slots and publishes their verdicts "
        "under a new generation; the workers wait meanwhile and resume from the rebuilt positions.",
    )
    _add_config_argument(reb, "the workers' own")
    reb.add_argument("--force", action="store_true", help="recount even though the live state is in place")
    reb.set_defaults(run=run_rebuild)

    rpl = _command(
        commands,
        "replay",
        "a month's report counted again from the Kafka topics, as the live workers count",
        "Counts the month's events again with the workers' own code into a Redis namespace of its own (removed "
        "afterwards; the live state is never touched) and prints what `report` prints. See docs/month-end.md.",
    )
    rpl.add_argument(
        "--month", type=calendar_month_argument, required=True, metavar="YYYY-MM", help="calendar month to replay"
    )
    rpl.add_argument("--app", action="append", metavar="APP_ID", help="only this app; repeat for several")
    _add_format_arguments(rpl)
    rpl.add_argument(
        "--keep", action="store_true", help="leave the replay's state in Redis (its key prefix is printed)"
    )
    rpl.add_argument(
        "--processes",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="count the partitions in N processes (default: one per core, here %(default)s)",
    )
    rpl.add_argument(
        "--part",
        type=part_argument,
        metavar="K/N",
        help="count only part K (0 to N-1) of the month's partitions, to split the replay across N hosts sharing "
        "one Redis: run every part, each with the same --run, --month and settings; part 0 prints the report "
        "once all are counted, the others print one line and exit",
    )
    rpl.add_argument(
        "--run",
        dest="run_name",  # "run" is the subcommand's function
        type=run_name_argument,
        metavar="NAME",
        help="with --part: the name of the split replay (a-z, 0-9, '-'; up to 32), the same on every part; "
        "a part run again with it goes on from what it had counted",
    )
    rpl.add_argument(
        "--part-timeout",
        type=_positive_int,
        metavar="SECONDS",
        help=f"with --part: how long part 0 waits for a part that makes no progress before it stops "
        f"(default {parts.DEFAULT_TIMEOUT_S:.0f})",
    )
    _add_config_argument(rpl, "the workers' own")
    _add_strict_argument(rpl)
    rpl.set_defaults(run=run_replay)

    exm = _command(
        commands,
        "exempt",
        "add, list or remove exemptions on the exemptions topic",
        "An exemption sets aside the unavailable slots it touches under a clause of the agreement (an announced "
        "maintenance, a customer's fault); the workers judge those slots again within seconds.",
    )
    exempt_commands = _subcommands(exm, "action", "`sla-stream exempt ACTION --help` tells more")
    add = _command(
        exempt_commands,
        "add",
        "record an exemption window; prints its id",
        "The window is checked (a known app, a clause of the agreement, the order of the times, its length) "
        "before it is written.",
    )
    whose = add.add_mutually_exclusive_group(required=True)
    whose.add_argument("--app", metavar="APP_ID", help="the app it exempts")
    whose.add_argument("--all-apps", action="store_true", help="exempt every app")
    add.add_argument("--start", required=True, help="window start, ISO 8601 (no offset: the SLA's time zone)")
    add.add_argument("--end", required=True, help="window end, ISO 8601 (no offset: the SLA's time zone)")
    add.add_argument("--clause", required=True, metavar="CLAUSE", help=f"the agreement's ground: {', '.join(CLAUSES)}")
    add.add_argument(
        "--note",
        default="",
        help=f"why, for the report (e.g. the announcement's reference; at most {MAX_NOTE_CHARS} characters)",
    )
    _add_config_argument(add)
    add.set_defaults(run=run_exempt_add)
    lst = _command(
        exempt_commands,
        "list",
        "exemptions in force, with the live slots each exempts",
        "Reads the exemptions topic; --format json writes what `report --exemptions FILE` reads.",
    )
    lst.add_argument(
        "--format",
        choices=("json", "text"),
        default="text",
        help="text (default), or json for `sla-stream report --exemptions FILE`",
    )
    _add_config_argument(lst)
    lst.set_defaults(run=run_exempt_list)
    rem = _command(
        exempt_commands,
        "remove",
        "withdraw an exemption (a tombstone on the topic)",
        "The slots it exempted are judged again within seconds.",
    )
    rem.add_argument("id", help="the exemption id (exempt list shows them)")
    _add_config_argument(rem)
    rem.set_defaults(run=run_exempt_remove)

    wat = _command(
        commands,
        "watch",
        "live view of every app's slots and running month, from Redis",
        "Refreshes every --interval seconds until Ctrl-C; times are in the SLA's time zone.",
    )
    _add_config_argument(wat)
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
        replay.ReplayError,
        exempt.ExemptError,
        watch.RedisUnavailable,
        EventFilesError,
        offline_counting.CountingProcessDied,
        LayoutMismatch,
    ) as error:
        # Every message goes through redact: an address in it may carry a password (redis://:secret@host).
        message = str(error) if str(error).startswith("sla-stream") else f"sla-stream: {error}"
        print(redact(message), file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be read or written: refused, as bad input is
        print(redact(f"sla-stream: {error.strerror or error}: {error.filename or ''}".rstrip(": ")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
