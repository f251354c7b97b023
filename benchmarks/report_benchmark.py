"""How long `newsloom report` takes on a large dataset.

Builds a synthetic output folder with pyarrow under the real schemas
(``schemas/``): ``--articles`` article rows over 30 days in 20 languages, written
Hive-partitioned by day and language like newsloom's own output, about a third
of them in stories of 2 to 40 members (copies of every kind and story links),
each with 1 to 3 topics; 2% as many dead letters of every reason; the story
table; and five run summaries. Then it times ``write_report`` on it (reading the
dataset, then rendering the page) and prints the figures.

    python benchmarks/report_benchmark.py --articles 50000
"""

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.report import write_report  # noqa: E402
from pipeline.report.gather import gather  # noqa: E402
from pipeline.report.render import render_page  # noqa: E402
from pipeline.steps.run_summary import summarize  # noqa: E402
from schemas import article as article_schema  # noqa: E402
from schemas import dead_letter as dead_letter_schema  # noqa: E402
from schemas import story as story_schema  # noqa: E402

LANGUAGES = ["en", "es", "fr", "de", "ar", "bn", "hi", "zh", "ru", "pt", "ja", "ko", "it", "tr",
             "fa", "ur", "sw", "id", "vi", "pl"]
TOPICS = ["politics", "conflict", "economy", "sport", "health", "science", "crime", "weather"]
WORDS = ["minister", "election", "market", "storm", "match", "court", "vaccine", "talks",
         "border", "budget", "strike", "summit", "flood", "league", "report", "police"]
START = datetime(2025, 8, 1, tzinfo=timezone.utc)


def write_partitioned(rows, record, partition_columns, folder: Path) -> None:
    """Rows (dicts holding the partition values too) as Hive-partitioned Parquet under
    ``record``'s schema, as newsloom writes them."""
    schema = record.arrow_schema(drop=partition_columns)
    for column in partition_columns:
        schema = schema.append(pa.field(column, pa.string()))
    table = pa.Table.from_pylist(rows, schema=schema)
    partitioning = ds.partitioning(pa.schema([pa.field(c, pa.string())
                                              for c in partition_columns]), flavor="hive")
    ds.write_dataset(table, folder, format="parquet", partitioning=partitioning,
                     basename_template="part-bench-{i}.parquet")


def synthetic_articles(count: int, rng: random.Random):
    articles = []
    for i in range(count):
        seen = START + timedelta(seconds=int(30 * 86400 * i / count))
        lang = LANGUAGES[min(int(rng.expovariate(0.25)), len(LANGUAGES) - 1)]
        topics = rng.sample(TOPICS, rng.randint(1, 3))
        article = {
            "schema_version": article_schema.SCHEMA_VERSION, "article_id": f"a{i:06d}",
            "source": f"outlet-{rng.randrange(40)}", "url": f"https://example.org/{i}",
            "title": " ".join(rng.choices(WORDS, k=8)).capitalize(),
            "body": "\n".join(" ".join(rng.choices(WORDS, k=40)) for _ in range(4)),
            "published_at": seen if rng.random() > 0.1 else None,
            "ingested_at": seen + timedelta(minutes=5), "lang_hint": None, "lang": lang,
            "lang_confidence": 0.9, "lang_spans": [{"lang": lang, "start": 0, "end": 1000,
                                                    "share": 1.0}],
            "content_hash": f"{i:064x}", "story_id": f"a{i:06d}", "is_duplicate": False,
            "duplicate_of": None, "dup_score": None, "duplicate_kind": None,
            "dup_evidence": [], "linked_to": None, "link_score": None, "link_evidence": [],
            "topics": [{"id": t, "score": round(0.6 / (k + 1), 3)} for k, t in enumerate(topics)],
            "origin": "articles", "origin_partition": i % 3, "origin_offset": i,
            "dt": seen.strftime("%Y-%m-%d")}
        if i and rng.random() < 0.35:   # joins a story of the last ~2,000 articles
            earlier = articles[rng.randrange(max(0, i - 2000), i)]
            article["story_id"] = earlier["story_id"]
            evidence = ["@trmb", "#2025"] + rng.sample(["@btn", "@krn", "@mrj", "#5"], 2)
            if rng.random() < 0.7:
                article.update(is_duplicate=True, duplicate_of=earlier["article_id"],
                               duplicate_kind=rng.choice(["exact", "near", "translation"]),
                               dup_score=0.8, dup_evidence=evidence)
            else:
                article.update(linked_to=earlier["article_id"], link_score=0.75,
                               link_evidence=evidence)
        articles.append(article)
    return articles


def story_rows(articles):
    members = {}
    for article in articles:
        members.setdefault(article["story_id"], []).append(article)
    rows = []
    for story_id, mine in members.items():
        times = [a["published_at"] or a["ingested_at"] for a in mine]
        rows.append({
            "schema_version": story_schema.SCHEMA_VERSION, "story_id": story_id,
            "canonical_article_id": story_id, "member_count": len(mine),
            "duplicate_count": sum(a["is_duplicate"] for a in mine),
            "languages": sorted({a["lang"] for a in mine}), "first_seen": min(times),
            "last_seen": max(times), "topics": mine[0]["topics"], "run_id": "bench",
            "updated_at": max(times), "dt": min(times).strftime("%Y-%m-%d")})
    return rows


def dead_letters(count: int, rng: random.Random):
    rows = []
    for i in range(count):
        seen = START + timedelta(seconds=int(30 * 86400 * i / count))
        raw = ('{"id": "bad-%d", "body": ' % i + "x" * rng.randrange(50, 400)).encode()
        rows.append(dead_letter_schema.make_dead_letter(
            reason=rng.choice(sorted(dead_letter_schema.REASONS)), error="synthetic",
            origin="articles", origin_partition=i % 3, origin_offset=i, raw=raw,
            raw_size=len(raw), ingested_at=seen, max_raw_bytes=65536)
            | {"dt": seen.strftime("%Y-%m-%d")})
    return rows


def build(folder: Path, count: int) -> None:
    rng = random.Random(7)
    articles = synthetic_articles(count, rng)
    write_partitioned(articles, article_schema.ARTICLE, article_schema.PARTITION_COLUMNS,
                      folder / "articles")
    write_partitioned(story_rows(articles), story_schema.STORY, story_schema.PARTITION_COLUMNS,
                      folder / "stories")
    rejected = dead_letters(count // 50, rng)
    write_partitioned(rejected, dead_letter_schema.DEAD_LETTER,
                      dead_letter_schema.PARTITION_COLUMNS, folder / "deadletter")
    (folder / "_runs").mkdir()
    for run in range(5):   # five runs of a fifth of the rows each
        started = START + timedelta(days=6 * run)
        counts = {("articles", ""): count // 5, ("rows_written", "articles"): count // 5,
                  ("dead_letter", "malformed_json"): len(rejected) // 5}
        summary = summarize(counts, f"bench-{run}", started,
                            started + timedelta(seconds=rng.uniform(60, 120)))
        (folder / "_runs" / f"bench-{run}.json").write_text(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed reports (best is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        began = time.perf_counter()
        build(out, args.articles)
        print(f"built {args.articles:,} articles in {time.perf_counter() - began:.1f} s "
              f"({sum(p.stat().st_size for p in out.rglob('*.parquet')) / 1e6:.1f} MB Parquet)")
        best = {}
        for _ in range(args.repeat):
            began = time.perf_counter()
            report = gather(str(out))
            gathered = time.perf_counter()
            page = render_page(report)
            rendered = time.perf_counter()
            write_report(str(out), str(Path(tmp) / "report.html"))
            whole = time.perf_counter()
            for name, seconds in (("read", gathered - began), ("render", rendered - gathered),
                                  ("write_report", whole - rendered)):
                best[name] = min(best.get(name, seconds), seconds)
        print(f"report of {report.articles:,} articles, {report.stories:,} stories, "
              f"{sum(report.dead_letters_by_reason.values()):,} dead letters, "
              f"{len(report.runs)} runs: page {len(page.encode()) / 1e3:.0f} KB")
        print("best of {}: read {read:.2f} s, render {render:.2f} s, "
              "write_report (both) {write_report:.2f} s".format(args.repeat, **best))


if __name__ == "__main__":
    main()
