"""The DetectLanguage step: primary language, confidence and spans on each article."""

import apache_beam as beam

from pipeline.logic.language import LanguageDetector, spans_as_rows
from schemas.article import Article


class _DetectLanguageFn(beam.DoFn):
    def __init__(self, min_confidence: float):
        self.min_confidence = min_confidence
        self.detector = None

    def setup(self):
        # One detector (and one loaded fastText model) per worker, not per element.
        self.detector = LanguageDetector(min_confidence=self.min_confidence)

    def process(self, article: Article):
        result = self.detector.detect(article["body"], hint=article.get("lang_hint"))
        yield {**article, "lang": result.lang, "lang_confidence": result.confidence,
               "lang_spans": spans_as_rows(result.spans)}


class DetectLanguage(beam.PTransform):
    """Sets ``lang``, ``lang_confidence`` and ``lang_spans`` (see ``pipeline.logic.language``).

    Args:
        min_confidence: below this fastText probability a paragraph also gets
            langdetect's opinion, and a declared ``lang_hint`` wins.
    """

    def __init__(self, min_confidence: float = 0.5):
        super().__init__()
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = min_confidence

    def expand(self, articles):
        return (articles
                | "Detect" >> beam.ParDo(_DetectLanguageFn(self.min_confidence))
                .with_input_types(Article).with_output_types(Article))
