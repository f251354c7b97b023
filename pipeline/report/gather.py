"""The report's figures, read from an output folder with pyarrow: plain data, no HTML.

Each dataset is read under its Arrow schema from ``schemas/`` (files of an older
schema version read as nulls in the columns they lack), with its Hive partition
columns. ``since`` keeps the rows whose ``dt`` partition (publication day, else
ingestion day) is that day or later, so files of earlier days are never opened,
and the runs that started on that day or later. A stream's windowed files are
read like any other: its story table has a row per story and window, which are
combined here. A folder without some dataset (or an empty one) gives empty figures.
"""

import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from schemas.article import ARTICLE
from schemas.article import PARTITION_COLUMNS as ARTICLE_PARTITIONS
from schemas.dead_letter import DEAD_LETTER
from schemas.dead_letter import PARTITION_COLUMNS as DEAD_LETTER_PARTITIONS
from schemas.record import RecordSchema
from schemas.story import PARTITION_COLUMNS as STORY_PARTITIONS
from schemas.story import STORY

TOP_STORIES = 10
MEMBERS_SHOWN = 12
EXAMPLES_PER_REASON = 3
SERIES_SHOWN = 8      # languages or topics drawn as series of their own; the rest are "other"
PREVIEW_CHARS = 160   # of a dead letter's raw bytes, or of a body's first line as a title
OTHER = "(others)"
# What the report reads of each article: a few columns of many files are read faster
# than all of them (the body is read only for the title of a story member without one).
ARTICLE_COLUMNS = ("article_id", "title", "url", "source", "lang", "published_at",
                   "ingested_at", "story_id", "is_duplicate", "duplicate_kind", "duplicate_of",
                   "dup_score", "dup_evidence", "linked_to", "link_score", "link_evidence",
                   "topics")
# The order of the duplicates chart; "linked" counts story links (different reports).
DUPLICATE_KINDS = ("exact", "near", "translation", "linked")


class ReportError(ValueError):
    """The output folder cannot be reported on (it does not exist)."""


@dataclass(frozen=True)
class TimeSeries:
    """Counts per time bucket and series name.

    ``buckets`` are the UTC starts of every bucket from the first to the last
    that holds a row (empty ones count 0); ``series`` maps each name to its count
    per bucket, the biggest series first and ``other`` last.
    """

    unit: str   # hour, day, week or month
    buckets: List[datetime]
    series: Dict[str, List[int]]


@dataclass(frozen=True)
class Member:
    """One article of a story, as the page lists it."""

    article_id: str
    title: str          # the title, else the body's first line (cut), else ""
    url: Optional[str]
    lang: str
    source: Optional[str]
    seen: datetime      # publication time, else ingestion time
    kind: str           # canonical, exact, near, translation or linked
    related: Optional[str]    # duplicate_of or linked_to
    score: Optional[float]    # dup_score or link_score
    evidence: List[str]       # dup_evidence or link_evidence


@dataclass(frozen=True)
class Story:
    """A story with its members (those of ``since`` on; at most ``MEMBERS_SHOWN``).

    ``languages``, ``first_seen`` and ``last_seen`` cover the whole story: its
    members here and every row the story table holds for it.
    """

    story_id: str
    member_count: int
    languages: List[str]
    first_seen: datetime
    last_seen: datetime
    topics: List[str]
    members: List[Member]


@dataclass(frozen=True)
class DeadLetterExample:
    origin: str
    origin_partition: Optional[int]
    origin_offset: int
    article_id: Optional[str]
    error: str
    raw_preview: str    # the raw bytes as text, unprintable characters as "·", cut
    raw_size: int
    ingested_at: datetime


@dataclass(frozen=True)
class Run:
    """One run summary (``_runs/<run_id>.json``)."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    read: int
    written: int             # article rows written by this run
    already_present: int     # article rows an earlier run had written
    rejected: int            # dead letters
    duplicates: int
    stories: int

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def articles_per_second(self) -> Optional[float]:
        """Input records read per second of the run's wall time."""
        return self.read / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class Report:
    """Everything the page shows."""

    output: str
    since: Optional[date]
    generated_at: datetime
    articles: int
    stories: int
    languages: Dict[str, int]           # articles per language, most first
    duplicates_by_kind: Dict[str, int]  # DUPLICATE_KINDS, then any other kind
    articles_over_time: TimeSeries      # by language
    topics_over_time: TimeSeries        # by each article's best topic
    top_stories: List[Story]
    dead_letters_by_reason: Dict[str, int]   # most first
    dead_letter_examples: Dict[str, List[DeadLetterExample]]
    runs: List[Run]                     # by start time
    unreadable_runs: List[Tuple[str, str]]   # (file, why)


def gather(output: str, since: Optional[date] = None) -> Report:
    """The report's figures for the output folder ``output`` (a local path or a URI
    pyarrow knows), keeping rows of ``since`` and later. Raises ``ReportError`` when
    ``output`` is not a folder."""
    filesystem, root = _open_folder(output)
    articles_dataset = _open_dataset(filesystem, root, "articles", ARTICLE, ARTICLE_PARTITIONS)
    articles = _read(articles_dataset, ARTICLE, ARTICLE_PARTITIONS, since, ARTICLE_COLUMNS)
    dead_letters = _open_dataset(filesystem, root, "deadletter", DEAD_LETTER,
                                 DEAD_LETTER_PARTITIONS)
    stories = _open_dataset(filesystem, root, "stories", STORY, STORY_PARTITIONS)
    seen = event_times(articles)
    by_reason, examples = dead_letter_figures(dead_letters, since)
    runs, unreadable = read_runs(filesystem, root, since)
    return Report(
        output=output, since=since, generated_at=datetime.now(timezone.utc),
        articles=articles.num_rows,
        stories=pc.count_distinct(articles["story_id"]).as_py(),
        languages=_value_counts(articles["lang"]),
        duplicates_by_kind=duplicates_by_kind(articles),
        articles_over_time=counts_over_time(seen, articles["lang"]),
        topics_over_time=topics_over_time(articles, seen),
        top_stories=top_stories(articles, seen, articles_dataset, stories),
        dead_letters_by_reason=by_reason, dead_letter_examples=examples,
        runs=runs, unreadable_runs=unreadable)


def _open_folder(output: str) -> Tuple[pafs.FileSystem, str]:
    if "://" in output:
        filesystem, root = pafs.FileSystem.from_uri(output)
    else:
        filesystem, root = pafs.LocalFileSystem(), os.path.abspath(output)
    if filesystem.get_file_info(root).type != pafs.FileType.Directory:
        raise ReportError(f"{output} is not a folder: give the --output folder of a "
                          "newsloom run")
    return filesystem, root.rstrip("/")


def _open_dataset(filesystem: pafs.FileSystem, root: str, name: str, record: RecordSchema,
                  partition_columns: Sequence[str]) -> Optional[ds.Dataset]:
    """The dataset ``root/name`` under ``record``'s schema, or None if there is no such folder."""
    path = f"{root}/{name}"
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return None
    partitions = pa.schema([pa.field(column, pa.string()) for column in partition_columns])
    schema = record.arrow_schema(drop=tuple(partition_columns))
    for column in partitions:
        schema = schema.append(column)
    return ds.dataset(path, schema=schema, format="parquet", filesystem=filesystem,
                      partitioning=ds.partitioning(partitions, flavor="hive"))


def _since_filter(since: Optional[date]) -> Optional[ds.Expression]:
    return None if since is None else ds.field("dt") >= since.isoformat()


def _read(dataset: Optional[ds.Dataset], record: RecordSchema,
          partition_columns: Sequence[str], since: Optional[date],
          columns: Sequence[str]) -> pa.Table:
    """``columns`` and the partition columns of the rows of ``since`` on (an empty table
    without data)."""
    unknown = set(columns) - set(record.names)
    if unknown:
        raise ValueError(f"{record.name} has no column {sorted(unknown)}")
    columns = [name for name in columns if name not in partition_columns] \
        + list(partition_columns)
    if dataset is None:
        empty = record.arrow_schema(drop=tuple(partition_columns))
        for column in partition_columns:
            empty = empty.append(pa.field(column, pa.string()))
        return empty.empty_table().select(columns)
    return dataset.to_table(columns=columns, filter=_since_filter(since))


def event_times(articles: pa.Table) -> pa.ChunkedArray:
    """Each article's event time: its publication time, else its ingestion time
    (``schemas.article.event_time`` on a table)."""
    return pc.coalesce(articles["published_at"], articles["ingested_at"])


def _value_counts(values: pa.ChunkedArray) -> Dict[str, int]:
    counts = pc.value_counts(values.drop_null()) if len(values) else []
    pairs = [(c["values"].as_py(), c["counts"].as_py()) for c in counts]
    return dict(sorted(pairs, key=lambda pair: (-pair[1], pair[0])))


def bucket_unit(span: timedelta) -> str:
    """The bucket a time chart of ``span`` uses: at most about 150 bars."""
    if span <= timedelta(days=3):
        return "hour"
    if span <= timedelta(days=150):
        return "day"
    if span <= timedelta(days=3 * 365):
        return "week"
    return "month"


def _next_bucket(start: datetime, unit: str) -> datetime:
    if unit == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + {"hour": timedelta(hours=1), "day": timedelta(days=1),
                    "week": timedelta(weeks=1)}[unit]


def counts_over_time(times: pa.ChunkedArray, names: pa.ChunkedArray,
                     series_shown: int = SERIES_SHOWN) -> TimeSeries:
    """Rows counted per time bucket and name; the ``series_shown`` commonest names
    are series of their own, the rest are summed as ``other``."""
    if len(times) == 0:
        return TimeSeries("day", [], {})
    bounds = pc.min_max(times)
    unit = bucket_unit(bounds["max"].as_py() - bounds["min"].as_py())
    floored = pc.floor_temporal(times, unit=unit, week_starts_monday=True)
    counts = (pa.table({"bucket": floored, "name": names})
              .group_by(["bucket", "name"]).aggregate([("bucket", "count")]))
    totals = _value_counts(names)
    shown = set(list(totals)[:series_shown])
    buckets = [pc.min(floored).as_py()]
    last = pc.max(floored).as_py()
    while buckets[-1] < last:
        buckets.append(_next_bucket(buckets[-1], unit))
    index = {bucket: i for i, bucket in enumerate(buckets)}
    series = {name: [0] * len(buckets) for name in list(totals)[:series_shown]}
    if len(totals) > len(shown):
        series[OTHER] = [0] * len(buckets)
    for row in counts.to_pylist():
        name = row["name"] if row["name"] in shown else OTHER
        series[name][index[row["bucket"]]] += row["bucket_count"]
    return TimeSeries(unit, buckets, series)


def topics_over_time(articles: pa.Table, times: pa.ChunkedArray) -> TimeSeries:
    """Articles per time bucket by their best topic; articles without topics are left out."""
    tagged = pc.fill_null(pc.greater(pc.list_value_length(articles["topics"]), 0), False)
    topics = pc.filter(articles["topics"], tagged)
    best = pc.struct_field(pc.list_element(topics, 0), "id") if len(topics) else topics
    return counts_over_time(pc.filter(times, tagged), best)


def duplicates_by_kind(articles: pa.Table) -> Dict[str, int]:
    """Duplicates per ``duplicate_kind``, and ``linked``: articles that joined a story
    as a different report (``linked_to``). Every kind of ``DUPLICATE_KINDS`` is present."""
    kinds = _value_counts(pc.filter(articles["duplicate_kind"], articles["is_duplicate"]))
    kinds["linked"] = len(articles) - articles["linked_to"].null_count
    return {**{kind: kinds.pop(kind, 0) for kind in DUPLICATE_KINDS}, **kinds}


def top_stories(articles: pa.Table, times: pa.ChunkedArray, articles_dataset: Optional[ds.Dataset],
                stories: Optional[ds.Dataset], limit: int = TOP_STORIES) -> List[Story]:
    """The ``limit`` stories of more than one article that span the most languages,
    then have the most articles, then were seen last."""
    if articles.num_rows == 0:
        return []
    table = articles.append_column("seen", times)
    ranked = (table.group_by("story_id")
              .aggregate([("lang", "count_distinct"), ("article_id", "count"), ("seen", "max")])
              .filter(pc.field("article_id_count") > 1)
              .sort_by([("lang_count_distinct", "descending"), ("article_id_count", "descending"),
                        ("seen_max", "descending"), ("story_id", "ascending")])
              .slice(0, limit))
    story_ids = ranked["story_id"].to_pylist()
    members: Dict[str, List[dict]] = {story_id: [] for story_id in story_ids}
    for row in table.filter(pc.is_in(table["story_id"], pa.array(story_ids, pa.string()))) \
                    .sort_by([("seen", "ascending"), ("article_id", "ascending")]).to_pylist():
        members[row["story_id"]].append(row)
    shown = [row for story_id in story_ids for row in members[story_id][:MEMBERS_SHOWN]]
    first_lines = _first_lines(articles_dataset, [row for row in shown if not row["title"]])
    story_rows = _story_rows(stories, story_ids)
    result = []
    for story_id in story_ids:
        rows = story_rows.get(story_id, [])
        latest = max(rows, key=lambda row: row["updated_at"]) if rows else None
        mine = members[story_id]
        result.append(Story(
            story_id=story_id, member_count=len(mine),
            languages=sorted({row["lang"] for row in mine}
                             | {lang for row in rows for lang in row["languages"]}),
            first_seen=min([mine[0]["seen"]] + [row["first_seen"] for row in rows]),
            last_seen=max([mine[-1]["seen"]] + [row["last_seen"] for row in rows]),
            topics=[topic["id"] for topic in (latest or {}).get("topics") or []],
            members=[_member(row, first_lines) for row in mine[:MEMBERS_SHOWN]]))
    return result


def _member(row: dict, first_lines: Dict[str, str]) -> Member:
    if row["is_duplicate"]:
        kind, related, score, evidence = (row["duplicate_kind"], row["duplicate_of"],
                                          row["dup_score"], row["dup_evidence"])
    elif row["linked_to"] is not None:
        kind, related, score, evidence = ("linked", row["linked_to"], row["link_score"],
                                          row["link_evidence"])
    else:
        kind, related, score, evidence = "canonical", None, None, []
    return Member(article_id=row["article_id"],
                  title=row["title"] or first_lines.get(row["article_id"], ""),
                  url=row["url"], lang=row["lang"], source=row["source"], seen=row["seen"],
                  kind=kind, related=related, score=score, evidence=list(evidence or []))


def _cut(text: str, chars: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _first_lines(dataset: Optional[ds.Dataset], rows: List[dict]) -> Dict[str, str]:
    """The first non-blank line of each row's body, read from the rows' partitions only."""
    if dataset is None or not rows:
        return {}
    wanted = (pc.field("article_id").isin([row["article_id"] for row in rows])
              & pc.field("dt").isin(sorted({row["dt"] for row in rows}))
              & pc.field("lang").isin(sorted({row["lang"] for row in rows})))
    bodies = dataset.to_table(columns=["article_id", "body"], filter=wanted).to_pylist()
    return {row["article_id"]: _cut(next((line.strip() for line in row["body"].splitlines()
                                          if line.strip()), ""))
            for row in bodies}


def _story_rows(dataset: Optional[ds.Dataset], story_ids: List[str]) -> Dict[str, List[dict]]:
    """Every story-table row of each story, of any day: a story's rows of several runs
    (or a stream's windows) together make its first and last seen."""
    if dataset is None or not story_ids:
        return {}
    table = dataset.to_table(
        columns=["story_id", "languages", "first_seen", "last_seen", "topics", "updated_at"],
        filter=pc.field("story_id").isin(story_ids))
    rows: Dict[str, List[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault(row["story_id"], []).append(row)
    return rows


def dead_letter_figures(dataset: Optional[ds.Dataset], since: Optional[date],
                        per_reason: int = EXAMPLES_PER_REASON
                        ) -> Tuple[Dict[str, int], Dict[str, List[DeadLetterExample]]]:
    """Dead letters per reason (most first), and each reason's ``per_reason`` newest rows.

    The raw bytes are read for the examples only: a dead letter keeps up to
    ``--max_dead_letter_bytes`` of them.
    """
    table = _read(dataset, DEAD_LETTER, DEAD_LETTER_PARTITIONS, since,
                  [name for name in DEAD_LETTER.names if name != "raw"])
    by_reason = _value_counts(table["reason"])
    table = table.sort_by([("ingested_at", "descending"), ("origin", "ascending"),
                           ("origin_offset", "ascending")])
    chosen = [row for reason in by_reason
              for row in table.filter(pc.field("reason") == reason).slice(0, per_reason)
              .to_pylist()]
    raw = _raw_bytes(dataset, chosen)
    examples: Dict[str, List[DeadLetterExample]] = {reason: [] for reason in by_reason}
    for row in chosen:
        examples[row["reason"]].append(DeadLetterExample(
            origin=row["origin"], origin_partition=row["origin_partition"],
            origin_offset=row["origin_offset"], article_id=row["article_id"],
            error=row["error"], raw_preview=raw_preview(raw.get(_dead_letter_key(row), b"")),
            raw_size=row["raw_size"], ingested_at=row["ingested_at"]))
    return by_reason, examples


def _dead_letter_key(row: dict) -> tuple:
    return (row["dt"], row["origin"], row["origin_partition"], row["origin_offset"],
            row["reason"])


def _raw_bytes(dataset: Optional[ds.Dataset], rows: List[dict]) -> Dict[tuple, bytes]:
    if dataset is None or not rows:
        return {}
    wanted = None
    for row in rows:
        match = ((pc.field("dt") == row["dt"]) & (pc.field("origin") == row["origin"])
                 & (pc.field("origin_offset") == row["origin_offset"]))
        wanted = match if wanted is None else wanted | match
    table = dataset.to_table(columns=["dt", "origin", "origin_partition", "origin_offset",
                                      "reason", "raw"], filter=wanted)
    return {_dead_letter_key(row): row["raw"] for row in table.to_pylist()}


def raw_preview(raw: bytes, chars: int = PREVIEW_CHARS) -> str:
    """Raw bytes as readable text: UTF-8 where they decode, unprintable characters as "·"."""
    text = raw[:chars * 4].decode("utf-8", errors="replace")
    return _cut("".join(c if c.isprintable() or c == " " else "·" for c in text), chars)


def read_runs(filesystem: pafs.FileSystem, root: str, since: Optional[date]
              ) -> Tuple[List[Run], List[Tuple[str, str]]]:
    """The run summaries in ``root/_runs`` of runs started on ``since`` or later, by
    start time, and the summaries that could not be read, with why (a stream writes none)."""
    folder = f"{root}/_runs"
    if filesystem.get_file_info(folder).type != pafs.FileType.Directory:
        return [], []
    runs, unreadable = [], []
    for info in sorted(filesystem.get_file_info(pafs.FileSelector(folder)),
                       key=lambda info: info.path):
        if not info.base_name.endswith(".json"):
            continue
        try:
            with filesystem.open_input_stream(info.path) as stream:
                run = run_of_summary(json.loads(stream.read().decode("utf-8")))
        except (ValueError, KeyError, TypeError) as error:
            unreadable.append((info.base_name, f"{type(error).__name__}: {error}"))
            continue
        if since is None or run.started_at.date() >= since:
            runs.append(run)
    return sorted(runs, key=lambda run: (run.started_at, run.run_id)), unreadable


def run_of_summary(summary: dict) -> Run:
    """A run from its summary document (``pipeline.steps.run_summary.summarize``)."""
    return Run(run_id=summary["run_id"],
               started_at=datetime.fromisoformat(summary["started_at"]),
               finished_at=datetime.fromisoformat(summary["finished_at"]),
               read=int(summary["read"]),
               written=int(summary["rows_written"].get("articles", 0)),
               already_present=int(summary["rows_already_present"].get("articles", 0)),
               rejected=int(summary["dead_letters"]),
               duplicates=int(summary["duplicates"]), stories=int(summary["stories"]))
