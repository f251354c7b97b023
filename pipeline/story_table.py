"""The SummarizeStories step: one story row per story from the run's articles."""

from datetime import datetime
from typing import Iterable, Optional, Tuple

import apache_beam as beam

from pipeline.topics import story_topics
from schemas.article import Article
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
    times = [a.get("published_at") or a["ingested_at"] for a in members]
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


class SummarizeStories(beam.PTransform):
    """Articles in, one story row per ``story_id`` out (memory: one story's members)."""

    def __init__(self, run_id: str, updated_at: datetime,
                 topic_cut: Optional[Tuple[float, int]] = None):
        super().__init__()
        self.run_id = run_id
        self.updated_at = updated_at
        self.topic_cut = topic_cut

    def expand(self, articles):
        run_id, updated_at, topic_cut = self.run_id, self.updated_at, self.topic_cut

        def summarize(group: Tuple[str, Iterable[Article]]):
            story_id, members = group
            return story_row(story_id, members, run_id, updated_at, topic_cut)

        return (articles
                | "KeyByStory" >> beam.Map(lambda a: (a["story_id"], a))
                | "GroupByStory" >> beam.GroupByKey()
                | "StoryRow" >> beam.Map(summarize))
