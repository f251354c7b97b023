"""The ``newsloom`` command."""

import argparse
import json
import logging
import sys
from importlib import metadata
from datetime import date
from typing import List, Optional

# Without Beam's gcp extra, importing Beam warns on the root logger that
# apitools (BigQuery's client) is missing: newsloom does not use it.
logging.getLogger().addFilter(lambda record: not record.getMessage().startswith(
    "apitools not found"))

from pipeline.options import (DEFAULT_INPUT, DEFAULT_RUNNER, NewsloomOptions,
                              unknown_pipeline_flags)

BEAM_OPTIONS_HELP = f"""\
Any other flag must be one of Apache Beam's pipeline options (on Flink: any
option of its Java runner), for example:
  --runner=NAME             FnApiRunner (default: {DEFAULT_RUNNER}, batch, in-process),
                            DirectRunner, PrismRunner, FlinkRunner, DataflowRunner
  --direct_num_workers=N    parallel workers for the FnApiRunner/DirectRunner
  --direct_running_mode=M   in_memory (default), multi_threading or multi_processing
  --setup_file=./setup.py   ship newsloom to remote workers (Dataflow, Flink)
See `python -m apache_beam.examples.wordcount --help` for every Beam option.
"""


def _run_command(argv: List[str]) -> int:
    from connectors.kafka_source import BrokerUnavailable
    from connectors.run_paths import RunRefused
    from pipeline.graph import run  # loads the steps and their engines: not needed for --help
    try:
        summary = run(argv)
    except RunRefused as refused:
        print(f"newsloom run: error: {refused}", file=sys.stderr)
        return 2
    except BrokerUnavailable as error:
        print(f"newsloom run: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _replay_command(args: argparse.Namespace) -> int:
    from connectors.replay import replay
    report = replay(args.input, args.bootstrap_servers, args.topic, partitions=args.partitions,
                    rate=args.rate, loop=args.loop, timestamps=args.timestamps,
                    client_config=json.loads(args.kafka_config),
                    max_messages=args.max_messages)
    print(json.dumps({"sent": report.sent, "skipped": report.skipped}))
    return 0


def _broker_command(args: argparse.Namespace) -> int:
    from connectors.local_kafka import main as broker_main
    broker_main((["--version", args.version] if args.version else [])
                + (["--port", str(args.port)] if args.port else []))
    return 0


class _OneSpelling(argparse.RawDescriptionHelpFormatter):
    """Shows each flag by its first spelling, the one with dashes; the others work too."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.dest == "help":  # -h, --help
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return action.option_strings[0]
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{action.option_strings[0]} {metavar}"


class _Parser(argparse.ArgumentParser):
    """Says what is wrong with the command line in one line, not under the whole usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        return metadata.version("newsloom")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _report_command(args: argparse.Namespace) -> int:
    from pyarrow import ArrowException

    from pipeline.report import write_report
    from pipeline.report.gather import ReportError
    try:
        report = write_report(args.out, args.output, args.since)
    except (ReportError, ArrowException, OSError) as error:  # a bad file, an unwritable page
        print(f"newsloom report: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"report": args.output, "articles": report.articles,
                      "dead_letters": sum(report.dead_letters_by_reason.values()),
                      "runs": len(report.runs)}))
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None


def _add_command(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose unknown or abbreviated flags are errors, as everywhere here."""
    command = commands.add_parser(name, allow_abbrev=False, formatter_class=_OneSpelling,
                                  **kwargs)
    command.set_defaults(command_parser=command)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="newsloom", allow_abbrev=False, formatter_class=_OneSpelling,
        description="Multilingual news ingestion on Apache Beam: reads articles, detects "
                    "their languages, finds duplicates and stories, writes Hive-partitioned "
                    "Parquet.")
    parser.add_argument("--version", action="version", version=f"newsloom {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = _add_command(
        commands, "run", help="run the pipeline over article files",
        description="Reads article files (.txt, .json, .jsonl, optionally .gz) and writes "
                    "OUTPUT/articles/dt=YYYY-MM-DD/lang=xx/*.parquet, OUTPUT/deadletter/ "
                    "and the run summary OUTPUT/_runs/<run_id>.json, which is also printed.",
        epilog=BEAM_OPTIONS_HELP)
    NewsloomOptions._add_argparse_args(run_parser)

    replay_parser = _add_command(
        commands, "replay", help="publish article files into a Kafka topic as a test stream",
        description="Publishes what the file source reads (the seed folder by default) as one "
                    "JSON message per article, keyed by article id; creates the topic if "
                    "missing.")
    replay_parser.add_argument("input", nargs="?", default=DEFAULT_INPUT,
                               help="a file, directory or glob (default: the bundled seeds/)")
    replay_parser.add_argument("--bootstrap-servers", "--bootstrap_servers", required=True,
                               dest="bootstrap_servers", help="host:port[,host:port...]")
    replay_parser.add_argument("--topic", required=True)
    replay_parser.add_argument("--partitions", type=int, default=3,
                               help="partitions of the topic if it is created (default: 3)")
    replay_parser.add_argument("--rate", type=float, default=None,
                               help="messages per second (default: as fast as possible)")
    replay_parser.add_argument("--loop", action="store_true",
                               help="repeat until stopped; later rounds get ids suffixed ~N")
    replay_parser.add_argument("--max-messages", "--max_messages", type=int, default=None,
                               dest="max_messages", help="stop after this many messages")
    replay_parser.add_argument("--timestamps", default="record",
                               help="message timestamps: record (publication time, else now), "
                                    "now, or spread:SECONDS (evenly over the last SECONDS)")
    replay_parser.add_argument("--kafka-config", "--kafka_config", default="{}",
                               dest="kafka_config",
                               help="JSON object of kafka-python client settings")

    broker_parser = _add_command(
        commands, "broker", help="run a local single-node Kafka broker for development (needs "
                                 "Java 17, Maven)",
        description="Fetches Apache Kafka from Maven Central (cached), starts a KRaft broker "
                    "on 127.0.0.1 and prints its address; Ctrl-C stops it.")
    broker_parser.add_argument("--port", type=int, default=None)
    broker_parser.add_argument("--version", default=None,
                               help="Kafka version (default: the tested one)")

    report_parser = _add_command(
        commands, "report", help="write one self-contained HTML page about an output folder",
        description="Reads OUT's articles, stories, dead letters and run summaries and writes "
                    "one HTML page (charts, top stories, dead letters, runs) that opens "
                    "offline.")
    report_parser.add_argument("out", help="the --output folder of newsloom run")
    report_parser.add_argument("--since", type=_day, default=None,
                               help="only rows of this day (YYYY-MM-DD, the dt partition) "
                                    "and later, and runs started on it or later")
    report_parser.add_argument("--output", default="report.html",
                               help="the HTML file to write (default: report.html)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, leftover = build_parser().parse_known_args(argv)
    if args.command == "run":
        # Flags newsloom does not know go to Beam, but only those Beam knows.
        leftover = unknown_pipeline_flags(leftover)
    if leftover:
        args.command_parser.error(
            f"unknown flag {leftover[0]}" if leftover[0].startswith("-")
            else f"unexpected argument {leftover[0]!r}")
    if args.command == "run":
        return _run_command(argv[1:])
    if args.command == "replay":
        return _replay_command(args)
    if args.command == "report":
        return _report_command(args)
    return _broker_command(args)


if __name__ == "__main__":
    sys.exit(main())
