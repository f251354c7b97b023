"""Language identification on real text: the seeds and SIB-200 sentences."""

import csv

import pytest

from pipeline.logic.language import (LanguageDetector, ParagraphLabel, merge_spans,
                               primary_language)
from tests.conftest import seed_text


@pytest.fixture(scope="module")
def detector():
    return LanguageDetector()


def label(start, end, lang, letters, confidence=0.9):
    return ParagraphLabel(start, end, lang, confidence, letters)


def test_merge_spans_joins_adjacent_paragraphs_and_attaches_letterless_ones():
    spans = merge_spans([label(0, 10, None, 0), label(11, 20, "ar", 30), label(21, 30, "ar", 30),
                         label(31, 35, None, 0), label(36, 50, "en", 40)])
    assert [(s.lang, s.start, s.end, s.share) for s in spans] == [
        ("ar", 0, 35, 0.6), ("en", 36, 50, 0.4)]
    assert merge_spans([label(0, 5, None, 0)]) == []


def test_lead_language_is_primary_unless_another_has_twice_its_share():
    mixed = [label(0, 10, "ar", 44), label(11, 20, "en", 56)]
    assert primary_language(mixed, merge_spans(mixed))[0] == "ar"
    quote_first = [label(0, 10, "fr", 10), label(11, 20, "en", 90)]
    assert primary_language(quote_first, merge_spans(quote_first))[0] == "en"


def test_seed_languages(detector):
    assert detector.detect(seed_text("000")).lang == "bn"
    assert detector.detect(seed_text("001")).lang == "bn"
    assert detector.detect(seed_text("002")).lang == "en"


def test_seed_003_is_arabic_with_an_english_span(detector):
    body = seed_text("003")
    result = detector.detect(body)
    assert result.lang == "ar"
    assert result.confidence > 0.9
    assert [s.lang for s in result.spans] == ["ar", "en"]
    arabic, english = result.spans
    assert body[arabic.start:arabic.end].startswith("كشفت")
    assert body[english.start:english.end].startswith("Western media revealed")
    assert arabic.share + english.share == pytest.approx(1.0, abs=1e-3)


def test_short_text_uses_second_opinion_and_hint(detector):
    assert detector.label("12 345") == (None, 0.0)
    lang, _ = detector.label("Guten Morgen zusammen")
    assert lang == "de"
    # Too short for either detector to be sure: the declared language decides.
    assert detector.label("ok", hint="sw")[0] == "sw"


@pytest.mark.parametrize("hint", ["..", "%2F..", "", " ", "日本語", "x" * 300, "english", "qq"])
def test_a_hint_that_is_no_known_code_never_becomes_the_language(detector, hint):
    # "ok" is too short to judge, so a usable hint would decide it.
    lang = detector.detect("ok", hint=hint).lang
    assert lang in detector.known_languages() and lang == detector.detect("ok").lang


def test_a_known_code_is_taken_in_any_case_or_region_form(detector):
    assert detector.detect("ok", hint=" SW ").lang == "sw"
    assert detector.detect("ok", hint="pt-BR").lang == "pt"
    assert {"en", "bn", "ar", "als", "zh"} <= detector.known_languages()


@pytest.mark.parametrize("folder,code", [
    ("eng_Latn", "en"), ("ben_Beng", "bn"), ("arb_Arab", "ar"), ("hin_Deva", "hi"),
    ("rus_Cyrl", "ru"), ("spa_Latn", "es"), ("zho_Hans", "zh"), ("swh_Latn", "sw"),
    ("fra_Latn", "fr"), ("jpn_Jpan", "ja"), ("tur_Latn", "tr"), ("vie_Latn", "vi"),
])
def test_sib200_dev_sentences_are_identified(detector, sib200, folder, code):
    with open(sib200 / folder / "dev.tsv", encoding="utf-8") as f:
        sentences = [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    correct = sum(detector.detect(s).lang == code for s in sentences)
    assert correct / len(sentences) >= 0.9, f"{folder}: {correct}/{len(sentences)}"
