"""The ``newsloom`` command."""

import argparse
import json
import sys
from typing import List, Optional

from pipeline.options import DEFAULT_RUNNER, NewsloomOptions

BEAM_OPTIONS_HELP = f"""\
Any other flag is passed to Apache Beam as a pipeline option, for example:
  --runner=NAME             FnApiRunner (default: {DEFAULT_RUNNER}, batch, in-process),
                            DirectRunner, PrismRunner, FlinkRunner, DataflowRunner
  --direct_num_workers=N    parallel workers for the FnApiRunner/DirectRunner
  --direct_running_mode=M   in_memory (default), multi_threading or multi_processing
  --setup_file=./setup.py   ship newsloom to remote workers (Dataflow, Flink)
See `python -m apache_beam.examples.wordcount --help` for every Beam option.
"""


def _run_command(argv: List[str]) -> int:
    from pipeline.graph import run  # Beam's import is slow: not needed for --help
    summary = run(argv)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="newsloom",
        description="Multilingual news ingestion on Apache Beam: reads articles, detects "
                    "their languages, finds duplicates and stories, writes Hive-partitioned "
                    "Parquet.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = commands.add_parser(
        "run", help="run the pipeline over article files",
        description="Reads article files (.txt, .json, .jsonl, optionally .gz) and writes "
                    "OUTPUT/articles/dt=YYYY-MM-DD/lang=xx/*.parquet, OUTPUT/deadletter/ "
                    "and the run summary OUTPUT/_runs/<run_id>.json, which is also printed.",
        epilog=BEAM_OPTIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    NewsloomOptions._add_argparse_args(run_parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, _ = build_parser().parse_known_args(argv)
    if args.command == "run":
        return _run_command(argv[1:])
    return 2


if __name__ == "__main__":
    sys.exit(main())
