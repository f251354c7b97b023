"""The SummarizeStories step: story rows from the articles.

Bounded input: one row per story, from all its members in the run. A stream:
a story gets a row at the end of every window in which it gained members,
with its totals so far; the row with the latest ``updated_at`` is current.
"""

from datetime import datetime
from typing import Any, Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from pipeline.steps.admit_on_time import micros_of
from common.event_timers import arm_earliest
from pipeline.logic.topics import story_topics
from schemas.article import Article, event_time
from schemas.story import SCHEMA_VERSION


def story_row(story_id: str, members: Iterable[Article], run_id: str,
              updated_at: datetime, topic_cut: Optional[Tuple[float, int]] = None) -> dict:
    """The story record of ``story_id`` from its member articles (plain, testable).

    ``topic_cut``: (min_score, max_topics) for the story's topics; None when
    the articles carry no topics.
    """
    members = list(members)
    topics = None
    if topic_cut is not None:
        topics = story_topics([a.get("topics") or [] for a in members], *topic_cut)
    times = [event_time(a) for a in members]
    return {
        "schema_version": SCHEMA_VERSION,
        "story_id": story_id,
        "canonical_article_id": story_id,
        "member_count": len(members),
        "duplicate_count": sum(1 for a in members if a["is_duplicate"]),
        "languages": sorted({a["lang"] for a in members}),
        "first_seen": min(times),
        "last_seen": max(times),
        "topics": topics,
        "run_id": run_id,
        "updated_at": updated_at,
    }


# What a stream keeps of each member: what story_row reads.
MEMBER_FIELDS = ("published_at", "ingested_at", "is_duplicate", "lang", "topics")


class _UpdateStoriesFn(beam.DoFn):
    MEMBERS = BagStateSpec("members", PickleCoder())
    CHANGED = ReadModifyWriteStateSpec("changed_until", VarIntCoder())
    DUE = TimerSpec("due", TimeDomain.WATERMARK)

    def __init__(self, run_id: str, topic_cut, windows, story_window: int):
        self.run_id = run_id
        self.topic_cut = topic_cut
        self.windows = windows
        self.story_window = story_window

    def process(self, element, members=beam.DoFn.StateParam(MEMBERS),
                changed=beam.DoFn.StateParam(CHANGED), due=beam.DoFn.TimerParam(DUE)):
        _, article = element
        members.add({name: article.get(name) for name in MEMBER_FIELDS})
        arm_earliest(due, changed, self.windows.end(micros_of(event_time(article))))

    @on_timer(DUE)
    def emit_or_forget(self, story_id=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                       members=beam.DoFn.StateParam(MEMBERS),
                       changed=beam.DoFn.StateParam(CHANGED), due=beam.DoFn.TimerParam(DUE)):
        if changed.read() is None:  # the story window has passed its last member
            members.clear()
            return
        changed.clear()
        row = story_row(story_id, members.read(), self.run_id,
                        fired.to_utc_datetime(has_tz=True), self.topic_cut)
        yield row
        last_seen = micros_of(row["last_seen"])
        due.set(Timestamp(micros=max(last_seen + self.story_window, fired.micros + 1)))


class SummarizeStories(beam.PTransform):
    """Articles in, story rows out.

    Bounded input (``windows`` None): one row per ``story_id``; memory, one
    story's members. A stream: a row per story at the end of each window in
    which it gained members (``updated_at`` is that window's end); memory, the
    members of stories active within the last ``story_window`` seconds.
    """

    def __init__(self, run_id: str, updated_at: datetime,
                 topic_cut: Optional[Tuple[float, int]] = None, windows=None,
                 story_window: Optional[int] = None):
        super().__init__()
        if windows is not None and not story_window:
            raise ValueError("a stream's story rows need the story window (µs) to forget by")
        self.run_id = run_id
        self.updated_at = updated_at
        self.topic_cut = topic_cut
        self.windows = windows
        self.story_window = story_window

    def expand(self, articles):
        if self.windows is not None:
            return (articles
                    | "KeyByStory" >> beam.Map(lambda a: (a["story_id"], a))
                    .with_output_types(Tuple[str, Any])
                    | "UpdateStories" >> beam.ParDo(_UpdateStoriesFn(
                        self.run_id, self.topic_cut, self.windows, self.story_window)))
        run_id, updated_at, topic_cut = self.run_id, self.updated_at, self.topic_cut

        def summarize(group: Tuple[str, Iterable[Article]]):
            story_id, members = group
            return story_row(story_id, members, run_id, updated_at, topic_cut)

        return (articles
                | "KeyByStory" >> beam.Map(lambda a: (a["story_id"], a))
                | "GroupByStory" >> beam.GroupByKey()
                | "StoryRow" >> beam.Map(summarize))
