"""The story-link evidence and model, on small pairs written here (no scraped text)."""

import math

import numpy as np
import pytest

from pipeline.logic.evidence import evidence_keys, specific_evidence
from pipeline.logic.story_evidence import (CROSS_LANGUAGE, SAME_LANGUAGE, LinkRule, PairEvidence,
                                           StoryModel, background_cosines, best_threshold,
                                           document_frequencies, fit_logistic, fit_rule,
                                           key_weight, opening_text, pair_evidence,
                                           precision_recall_f1)

BACKGROUND = {SAME_LANGUAGE: 0.2, CROSS_LANGUAGE: 0.1}


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_opening_is_the_first_paragraph_cut_at_a_space():
    assert opening_text("Storm hits the coast\nWinds of 150 km/h were measured.") == \
        "Storm hits the coast"
    body = "word " * 100
    opening = opening_text(body, max_chars=52)
    assert len(opening) <= 52 and opening.endswith("word") and opening == opening.strip()
    assert opening_text("\n\n") == ""


def test_pair_evidence_weighs_rare_shared_names_above_common_ones():
    english = ("Maine lottery: Jonathan Kowalczyk wins the Powerball jackpot of 1,250,000 dollars "
               "on Saturday in Portland.")
    spanish = ("Lotería de Maine: Jonathan Kowalczyk gana el premio Powerball de 1,250,000 dólares "
               "el sábado en Portland.")
    frequency = {"@tlrs": 0.2, "@brbl": 0.3, "": 0.001}  # dollars and Powerball: common
    para = np.array([unit(1, 0, 0)])
    evidence = pair_evidence(para, np.array([unit(1, 1, 0)]), unit(0, 1, 0), unit(0, 1, 0),
                             evidence_keys(english), evidence_keys(spanish), len(english),
                             len(spanish), True, 0.5, frequency, background_cosine=0.13)
    assert evidence.cosine == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert evidence.opening_cosine == pytest.approx(1.0)
    assert evidence.coverage == 1.0  # each article's one paragraph aligns at 0.71 >= 0.5
    assert evidence.length_ratio == pytest.approx(min(len(english), len(spanish)) /
                                                  max(len(english), len(spanish)))
    # Kowalczyk and the sum are met across the two languages; the rarest weigh most.
    assert {"@jntn", "@kblkjk", "#250", "@brtlnt"} <= set(evidence.shared)
    assert evidence.shared[-2:] == ("@tlrs", "@brbl")
    assert evidence.shared_weight == pytest.approx(
        sum(key_weight(k, frequency) for k in evidence.shared))
    assert evidence.numbers_weight == pytest.approx(key_weight("#250", frequency))
    assert evidence.background_cosine == 0.13
    # The share of the smaller article's name and number weight that both hold:
    # all of it here, a part of the larger article's.
    weights = [sum(key_weight(k, frequency) for k in specific_evidence(evidence_keys(text)))
               for text in (english, spanish)]
    assert evidence.shared_share == pytest.approx(evidence.shared_weight / min(weights)) == 1.0
    assert evidence.shared_weight < max(weights)
    assert key_weight("@brbl", frequency) < key_weight("@kblkjk", frequency) == -math.log(0.001)
    # Nothing aligns in part: the unaligned rest is the whole.
    assert evidence.unaligned_cosine == evidence.cosine and not evidence.partial_reuse
    assert evidence.unaligned_max_cosine == pytest.approx(math.sqrt(0.5), abs=1e-6)


def basis(i, dimension=8):
    v = np.zeros(dimension, dtype=np.float32)
    v[i] = 1.0
    return v


def test_two_paragraphs_reused_beside_unrelated_ones_are_a_partial_reuse():
    # Two paragraphs the same in both; the rest of each about something else.
    reused = [basis(0), basis(1)]
    story = np.array(reused + [unit(0, 0, 1, 1, 0, 0, 0, 0), unit(0, 0, 1, 0, 1, 0, 0, 0)])
    other = np.array(reused + [basis(5), basis(6)])
    opening = basis(0)
    evidence = pair_evidence(story, other, opening, opening, frozenset(), frozenset(), 900, 900,
                             True, 0.9, {"": 0.001}, background_cosine=0.1)
    assert evidence.cosine == pytest.approx(0.45, abs=0.01)
    assert evidence.coverage == 0.5 and evidence.unaligned_cosine == pytest.approx(0.0, abs=1e-6)
    assert evidence.unaligned_max_cosine == pytest.approx(0.0, abs=1e-6)  # the reused are left out
    assert evidence.partial_reuse
    # A report whose other paragraphs tell the same event is no partial reuse.
    same_event = np.array(reused + [unit(0, 0, 1, 0, 0, 0, 1, 0), unit(0, 0, 0, 1, 0, 0, 0, 1)])
    report = pair_evidence(story, same_event, opening, opening, frozenset(), frozenset(), 900, 900,
                           True, 0.9, {"": 0.001}, background_cosine=0.1)
    assert not report.partial_reuse and 0 < report.unaligned_max_cosine < 0.9
    # The regression would link the reuse on its cosine; the model gives it 0.
    rule = LinkRule(("cosine",), (0.3,), (0.1,), (2.0,), 0.0, 0.5)
    model = StoryModel({SAME_LANGUAGE: rule, CROSS_LANGUAGE: rule}, {"": 0.001}, BACKGROUND)
    assert rule.probability(evidence) > rule.threshold
    assert model.probability(evidence) == 0.0 and not model.links(evidence)
    assert model.links(report)


def test_document_frequencies_keep_common_keys_and_cap_the_rest():
    sets = [frozenset({"@trmb", "@bdn"}), frozenset({"@trmb", "#2020"}), frozenset({"@trmb"}),
            frozenset({"#2020", "#7"})]
    table = document_frequencies(sets, min_share=0.5)
    # "@bdn" and "#7" are not specific (too short); "#2020" is in half of the sets.
    assert table == {"@trmb": 0.75, "#2020": 0.5, "": 0.25}


def test_logistic_fit_separates_and_the_threshold_meets_the_precision_floor():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(-1, 0.5, (50, 2)), rng.normal(1, 0.5, (50, 2))])
    y = np.r_[np.zeros(50), np.ones(50)]
    weights, intercept = fit_logistic(x, y, l2=1.0)
    probabilities = 1 / (1 + np.exp(-(x @ weights + intercept)))
    assert ((probabilities >= 0.5) == y).mean() >= 0.95
    assert weights.min() > 0 and abs(intercept) < 0.5
    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9]
    same = [False, False, True, False, True, True, True]
    # The best F1 would cut at 0.25 (precision 0.8); the floor of 0.9 moves it to 0.65.
    assert best_threshold(scores, same, min_precision=0.0) == pytest.approx(0.25)
    assert best_threshold(scores, same, min_precision=0.9) == pytest.approx(0.65)
    assert precision_recall_f1([s >= 0.65 for s in scores], same) == (1.0, 0.75, pytest.approx(6 / 7))


def evidence(cosine, shared_weight, cross=False, background=0.2):
    return PairEvidence(cosine=cosine, opening_cosine=0.0, coverage=0.0, unaligned_cosine=cosine,
                        unaligned_max_cosine=0.0, shared_weight=shared_weight, numbers_weight=0.0,
                        shared_share=0.0, length_ratio=1.0, background_cosine=background,
                        cross_language=cross, shared=())


def test_a_fitted_model_links_what_it_learnt_and_survives_its_file(tmp_path):
    same = [evidence(0.6 + i / 100, 20 + i) for i in range(20)]
    different = [evidence(0.2 + i / 100, i / 2) for i in range(20)]
    rules = {kind: fit_rule(same + different, [True] * 20 + [False] * 20,
                            ("cosine", "shared_weight")) for kind in (SAME_LANGUAGE, CROSS_LANGUAGE)}
    model = StoryModel(rules, {"@trmb": 0.3, "": 0.001}, {"ar-ar": 0.27, **BACKGROUND})
    assert model.links(evidence(0.7, 25)) and not model.links(evidence(0.25, 1))
    assert model.links(evidence(0.7, 25, cross=True))
    path = tmp_path / "model.json"
    path.write_text(model.to_json())
    loaded = StoryModel.load(path)
    assert loaded == model
    assert loaded.probability(evidence(0.5, 10)) == model.probability(evidence(0.5, 10))
    with pytest.raises(FileNotFoundError, match="build_story_model"):
        StoryModel.load(tmp_path / "missing.json")
    path.write_text(StoryModel(rules, {"": 0.001}, {"ar-ar": 0.27}).to_json())
    with pytest.raises(ValueError, match="background cosines"):
        StoryModel.load(path)


def test_a_rule_weighs_standardised_features():
    rule = LinkRule(("cosine",), (0.5,), (0.1,), (2.0,), -1.0, 0.5)
    assert rule.probability(evidence(0.5, 0)) == pytest.approx(1 / (1 + math.e))
    assert rule.probability(evidence(0.6, 0)) == pytest.approx(1 / (1 + math.exp(-1.0)))


def test_pairs_kept_apart_stay_below_the_threshold():
    same = [evidence(0.6 + i / 100, 20 + i) for i in range(20)]
    different = [evidence(0.2 + i / 100, i / 2) for i in range(20)]
    # Two different stories on one subject: as close as one story, sharing fewer names.
    related = evidence(0.75, 8)
    labels = [True] * 20 + [False] * 20
    free = fit_rule(same + different, labels, ("cosine", "shared_weight"))
    assert free.probability(related) >= free.threshold
    kept = fit_rule(same + different, labels, ("cosine", "shared_weight"), apart=[related])
    assert kept.probability(related) < kept.threshold
    assert kept.probability(evidence(0.7, 30)) >= kept.threshold  # one story still links


def test_background_cosines_by_language_pair_with_fallbacks_for_the_rest():
    # Three Arabic articles all alike, three English ones at right angles,
    # one Hindi article: too few for a value of its own.
    arabic = [unit(1, 1, 0, 0), unit(1, 0, 0, 0), unit(1, 0, 1, 0)]
    english = [unit(0, 1, 0, 0), unit(0, 0, 1, 0), unit(0, 0, 0, 1)]
    table = background_cosines(["ar"] * 3 + ["en"] * 3 + ["hi"],
                               np.array(arabic + english + [unit(1, 0, 0, 0)]), min_articles=3)
    pairs = [arabic[0] @ arabic[1], arabic[0] @ arabic[2], arabic[1] @ arabic[2]]
    assert table["ar-ar"] == pytest.approx(np.mean(pairs), abs=1e-6)
    assert table["en-en"] == pytest.approx(0.0, abs=1e-6)
    assert table["ar-en"] == pytest.approx(np.mean([a @ e for a in arabic for e in english]),
                                           abs=1e-6)
    assert "ar-hi" not in table and "hi-hi" not in table
    assert table[SAME_LANGUAGE] == pytest.approx((table["ar-ar"] + table["en-en"]) / 2, abs=1e-6)
    assert table[CROSS_LANGUAGE] == table["ar-en"]
    model = StoryModel({}, {"": 0.001}, table)
    assert model.background("en", "ar") == table["ar-en"]
    assert model.background("hi", "hi") == table[SAME_LANGUAGE]
    assert model.background("hi", "en") == table[CROSS_LANGUAGE]


def test_one_cosine_links_in_a_language_whose_articles_differ_more():
    # The same cosine says more where two unrelated articles are further apart:
    # fitted so, the rule links it in English and not in Arabic.
    same = [evidence(0.45 + i / 100, 0, background=0.18) for i in range(10)]
    same += [evidence(0.6 + i / 100, 0, background=0.27) for i in range(10)]
    different = [evidence(0.2 + i / 100, 0, background=0.18) for i in range(10)]
    different += [evidence(0.45 + i / 100, 0, background=0.27) for i in range(10)]
    rule = fit_rule(same + different, [True] * 20 + [False] * 20,
                    ("cosine", "background_cosine"), l2=0.01)
    assert rule.probability(evidence(0.52, 0, background=0.18)) >= rule.threshold
    assert rule.probability(evidence(0.52, 0, background=0.27)) < rule.threshold
