"""newsloom's pipeline options, declared once for the CLI, ``--help`` and the workers.

Every option also has a dashed spelling (``--max-article-bytes``). Any other
flag is a Beam pipeline option and passes through untouched (``--runner``,
``--direct_num_workers``, ``--setup_file``, ...).
"""

import os
from importlib import resources
from datetime import datetime, timezone
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

# Beam's DirectRunner first tries to download the Prism runner from the internet
# on every run; the FnApiRunner runs batch pipelines in-process with no download.
DEFAULT_RUNNER = "FnApiRunner"
DEFAULT_INPUT = str(resources.files("seeds"))


def _flag(parser, name: str, **kwargs) -> None:
    spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
    parser.add_argument(*spellings, dest=name, **kwargs)


class NewsloomOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        _flag(parser, "input", default=DEFAULT_INPUT,
              help="article files to read: a file, a directory (every file below it) or a "
                   "glob, on any filesystem Beam knows (default: the bundled seeds/)")
        _flag(parser, "output", default="out",
              help="output folder: articles/, deadletter/ and _runs/ go below it (default: out)")
        _flag(parser, "run_id", default=None,
              help="name of this run in file names and _runs/<run_id>.json "
                   "(default: the UTC start time and a random suffix)")
        _flag(parser, "max_article_bytes", type=int, default=1 << 20,
              help="records larger than this many bytes are dead-lettered (default: 1 MiB)")
        _flag(parser, "max_dead_letter_bytes", type=int, default=64 << 10,
              help="how much of a rejected record's raw bytes its dead-letter row keeps "
                   "(default: 64 KiB)")
        _flag(parser, "min_lang_confidence", type=float, default=0.5,
              help="below this fastText probability a paragraph also asks langdetect, and a "
                   "declared language hint wins (default: 0.5)")
        _flag(parser, "near_duplicate_threshold", type=float, default=0.5,
              help="word-shingle Jaccard similarity at which two same-language articles are "
                   "near duplicates (default: 0.5)")
        _flag(parser, "rows_per_file", type=int, default=50_000,
              help="the most rows in one Parquet file (default: 50000)")
        _flag(parser, "parquet_compression", default="zstd",
              choices=["zstd", "snappy", "gzip", "none"],
              help="Parquet codec (default: zstd)")


def with_default_runner(argv: Optional[List[str]]) -> List[str]:
    """``argv`` with ``--runner=FnApiRunner`` added unless a runner is named."""
    argv = list(argv or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.append(f"--runner={DEFAULT_RUNNER}")
    return argv


def new_run_id(now: Optional[datetime] = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"
