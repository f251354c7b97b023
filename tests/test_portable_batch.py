"""A batch on a portable runner: Prism runs the seeds as the in-process runner does.

A batch's duplicate index is a stateful step that looks the articles' payloads up in
a side input, and its embedding step unloads the engine when a bundle ends; a
runner that cuts bundles and serves side inputs its own way must give the same
stories. Slow (builds Prism the first time): ``python -m pytest -m slow``.
"""

import pytest

from pipeline.graph import run
from tests.conftest import SEEDS
from tests.test_pipeline import read_dataset

pytestmark = pytest.mark.slow

STORY_FIELDS = ("story_id", "duplicate_of", "is_duplicate", "linked_to")


def story_fields(out):
    return {row["article_id"]: tuple(row[f] for f in STORY_FIELDS)
            for row in read_dataset(out / "articles")}


def test_a_batch_on_prism_gives_the_stories_of_the_in_process_runner(tmp_path):
    in_process, on_prism = tmp_path / "in-process", tmp_path / "prism"
    run(["--input", str(SEEDS), "--output", str(in_process), "--quiet"])
    summary = run(["--input", str(SEEDS), "--output", str(on_prism), "--quiet",
                   "--runner", "PrismRunner"])
    expected = story_fields(in_process)
    assert len(expected) == 4 and len({story for story, *_ in expected.values()}) == 3
    assert story_fields(on_prism) == expected
    assert summary["unaccounted"] == 0
