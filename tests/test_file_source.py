"""The file source on damaged, odd and hostile inputs: every record ends as one
article or one dead letter, and nothing stops the read."""

import gzip
import json
from datetime import datetime, timezone

from connectors.file_source import ARTICLE, ArticleFileParser, read_article_files

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def read(path, max_article_bytes=100_000):
    """(articles by id, dead letters) of the files at ``path``."""
    parser = ArticleFileParser(NOW, max_article_bytes, 1000)
    articles, dead_letters = {}, []
    for kind, record in read_article_files(str(path), parser):
        if kind == ARTICLE:
            articles[record["article_id"]] = record
        else:
            dead_letters.append(record)
    return articles, dead_letters


def jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def test_corrupt_and_truncated_gzip_are_dead_letters_and_other_files_are_read(tmp_path):
    (tmp_path / "good.jsonl").write_bytes(jsonl([{"id": "good", "body": "A good record."}]))
    (tmp_path / "plain.jsonl.gz").write_bytes(jsonl([{"id": "p", "body": "Not gzipped."}]))
    many = [{"id": f"n{i}", "body": f"Record {i} " + "word " * (i % 50)} for i in range(3000)]
    whole = gzip.compress(jsonl(many))
    (tmp_path / "half.jsonl.gz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "half.json.gz").write_bytes(gzip.compress(json.dumps(many).encode())[:300])
    articles, dead_letters = read(tmp_path)
    assert "good" in articles
    by_origin = {d["origin"].rsplit("/", 1)[1]: d for d in dead_letters}
    assert set(by_origin) == {"plain.jsonl.gz", "half.jsonl.gz", "half.json.gz"}
    assert {d["reason"] for d in dead_letters} == {"corrupt_gzip"}
    half = by_origin["half.jsonl.gz"]
    kept = sorted(int(i[1:]) for i in articles if i.startswith("n"))
    # The records before the damage are kept, and the dead letter says where it struck.
    assert kept == list(range(len(kept))) and 0 < len(kept) < 3000
    assert half["origin_offset"] == len(kept) + 1
    assert f"line {len(kept) + 1}" in half["error"] and "half.jsonl.gz" in half["error"]


def test_lone_surrogates_and_deep_nesting_in_files_are_dead_letters(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"id": "s", "body": "x\\ud800"}\n'
                                       + b"[" * 10_000 + b"]" * 10_000 + b"\n"
                                       + b'{"id": "ok", "body": "Fine."}\n')
    (tmp_path / "b.json").write_bytes(b'[{"id": "t", "body": "y", "title": "\\udc00"},'
                                      b' {"id": "ok2", "body": "Fine too."}]')
    (tmp_path / "c.json").write_bytes(b"[" * 10_000 + b"]" * 10_000)
    articles, dead_letters = read(tmp_path)
    assert set(articles) == {"ok", "ok2"}
    assert sorted((d["origin"].rsplit("/", 1)[1], d["origin_offset"], d["reason"])
                  for d in dead_letters) == [
        ("a.jsonl", 1, "invalid_unicode"), ("a.jsonl", 2, "too_deep"),
        ("b.json", 0, "invalid_unicode"), ("c.json", 0, "too_deep")]
    element = next(d for d in dead_letters if d["origin"].endswith("b.json"))
    assert json.loads(element["raw"])["title"] == "\udc00"  # the escape is kept as JSON
