"""The pipeline as a stream: the seeds replayed as a TestStream on the DirectRunner.

Windows of one minute; an allowed lateness of three minutes; a story window of
six minutes, so that ids and stories are forgotten within the test.
"""

import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from connectors.test_stream import ReadTestStream
from pipeline.graph import build, run
from pipeline.options import normalise_argv
from tests.conftest import seed_text

T0 = datetime(2025, 8, 18, 12, 0, tzinfo=timezone.utc)


def line(article_id, seconds, body):
    return json.dumps({"id": article_id, "body": body,
                       "published_at": (T0 + timedelta(seconds=seconds)).isoformat()})


# (id, published at second, arrival delay in seconds, body)
RECORDS = [
    ("bn-report", 5, 0, seed_text("000")),
    ("en-report", 20, 0, seed_text("002")),
    ("bn-report", 30, 0, seed_text("000")),        # the same id again: a repeat
    ("bn-call", 70, 0, seed_text("001")),
    ("ar-moscow", 130, 0, seed_text("003")),
    # A copy of the English report published at 15 s, arriving 150 s later:
    # within the allowed lateness, but after its window was written, so it is
    # written in a further file of that window.
    ("en-copy", 15, 150, seed_text("002")),
    # Another, 600 s late: past the allowed lateness, so a dead letter.
    ("en-stale", 10, 600, seed_text("002")),
    # bn-call's id again after its 360 s story window: forgotten, so kept again.
    ("bn-call", 500, 0, seed_text("001")),
]


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream-in")
    lines = [line(i, s, body) for i, s, _, body in RECORDS] + ['{"id": "broken", "body": ']
    (folder / "feed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    delays = {i: delay for i, _, delay, _ in RECORDS if delay}
    out = tmp_path_factory.mktemp("stream-out")
    source = ReadTestStream(str(folder), ingested_at=T0, window_seconds=60, delays=delays)
    summary = run(["--output", str(out), "--runner=BundleBasedDirectRunner", "--streaming",
                   "--window_seconds=60", "--allowed_lateness_hours=0.05",
                   "--story_window_hours=0.1"], source=source)
    return summary, out


def rows(path):
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()


def window_of_file(path):
    return re.search(r"-w(\d{8}T\d{6}Z)-", path.name).group(1)


def test_every_record_is_an_article_row_or_a_dead_letter_row(streamed):
    summary, out = streamed
    assert summary["streaming"] is True
    articles, dead_letters = rows(out / "articles"), rows(out / "deadletter")
    assert len(articles) + len(dead_letters) == len(RECORDS) + 1
    assert Counter(d["reason"] for d in dead_letters) == {
        "malformed_json": 1, "duplicate_article_id": 1, "late": 1}
    late = next(d for d in dead_letters if d["reason"] == "late")
    assert late["article_id"] == "en-stale" and "allowed lateness" in late["error"]
    assert late["raw"].decode("utf-8") == seed_text("002")
    assert Counter(a["article_id"] for a in articles) == {
        "bn-report": 1, "en-report": 1, "bn-call": 2, "ar-moscow": 1, "en-copy": 1}


def test_rows_are_written_per_window_in_window_stamped_files(streamed):
    _, out = streamed
    by_window = defaultdict(set)
    files_by_window = Counter()
    for path in (out / "articles").rglob("*.parquet"):
        window = window_of_file(path)
        files_by_window[window] += 1
        by_window[window] |= {r["article_id"] for r in rows(path)}
    assert dict(by_window) == {
        "20250818T120000Z": {"bn-report", "en-report", "en-copy"},
        "20250818T120100Z": {"bn-call"},
        "20250818T120200Z": {"ar-moscow"},
        "20250818T120800Z": {"bn-call"},
    }
    # The first window: bn and en on time (one file per language), then the
    # late copy in a further file.
    assert files_by_window["20250818T120000Z"] == 3


def test_stories_on_a_stream(streamed):
    _, out = streamed
    articles = {a["article_id"]: a for a in rows(out / "articles") if a["article_id"] != "bn-call"}
    assert articles["en-report"]["duplicate_of"] == "bn-report"
    assert articles["en-copy"]["story_id"] == articles["bn-report"]["story_id"] == "bn-report"
    assert articles["ar-moscow"]["story_id"] == "ar-moscow"
    stories = rows(out / "stories")
    report = sorted((s["updated_at"], s["member_count"]) for s in stories
                    if s["story_id"] == "bn-report")
    # A row at the end of each window that changed the story: two members on
    # time, then the late copy.
    assert [count for _, count in report] == [2, 3]
    assert report[0][0] == T0 + timedelta(seconds=60)


def test_a_stateful_steps_timers_are_keyed_as_its_main_input_on_a_kafka_stream(tmp_path):
    """Beam's Python SDK takes the key coder of a stateful step's timers from any
    one of its inputs, side inputs included (a set's order, so ``PYTHONHASHSEED``,
    picks it), and Flink keys each timer with the main input's coder: a step whose
    side input is keyed otherwise failed about half of the Flink streaming runs.
    So every input of such a step is keyed and windowed as its main input."""
    options = PipelineOptions(normalise_argv([
        "--runner=FlinkRunner", "--streaming", f"--output={tmp_path / 'out'}",
        "--bootstrap-servers=127.0.0.1:9092", "--topic=articles", "--stop=never",
        "--start=earliest"]))
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options)
    components = pipeline.to_runner_api().components

    def key_and_window(coder_id):
        coder = components.coders[coder_id]
        return [components.coders[c].spec.urn for c in coder.component_coder_ids]

    checked = []
    for transform in components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        if not payload.timer_family_specs:
            continue
        main, = (pc for tag, pc in transform.inputs.items() if tag not in payload.side_inputs)

        def keyed_as(pcollection_id):
            pcollection = components.pcollections[pcollection_id]
            window = components.windowing_strategies[pcollection.windowing_strategy_id]
            return key_and_window(pcollection.coder_id)[0], \
                components.coders[window.window_coder_id].spec.urn

        for tag, pcollection_id in transform.inputs.items():
            assert keyed_as(pcollection_id) == keyed_as(main), (transform.unique_name, tag)
        for spec in payload.timer_family_specs.values():
            assert tuple(key_and_window(spec.timer_family_coder_id)) == keyed_as(main)
        checked.append((transform.unique_name, len(transform.inputs)))
    assert ("DropRepeatedIds/KeepFirstArrival/ParDo(_KeepFirstArrivalFn)", 2) in checked
