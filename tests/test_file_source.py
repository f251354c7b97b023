"""The file source on damaged, odd and hostile inputs: every record ends as one
article or one dead letter, and nothing stops the read."""

import gzip
import io
import json
import os
import threading
from datetime import datetime, timezone

import duckdb

from connectors.file_source import (ARTICLE, DEAD_LETTER, ArticleFileParser, iter_lines,
                                    read_article_files)
from connectors.input_files import InputFile

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


def read_with_deadline(path, deadline=120, **kwargs):
    """``read`` in a thread, so a hanging open fails the test instead of stalling it."""
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=read(path, **kwargs)),
                              daemon=True)
    worker.start()
    worker.join(deadline)
    assert not worker.is_alive(), f"reading {path} did not finish within {deadline} s"
    return outcome["result"]


def reasons_by_name(dead_letters, root):
    return {os.path.relpath(d["origin"], root): d["reason"] for d in dead_letters}


def test_only_regular_files_are_read_and_a_fifo_or_device_does_not_hang(tmp_path):
    (tmp_path / "ok.txt").write_text("A regular file.")
    os.symlink("/dev/zero", tmp_path / "zero.jsonl")
    os.symlink("/dev/zero", tmp_path / "zero.txt")
    os.mkfifo(tmp_path / "pipe.jsonl")
    articles, dead_letters = read_with_deadline(tmp_path)
    assert set(articles) == {"ok"}
    # /dev/zero lies outside the input folder; the FIFO inside it is no regular file.
    assert reasons_by_name(dead_letters, tmp_path) == {
        "pipe.jsonl": "not_regular_file", "zero.jsonl": "outside_input",
        "zero.txt": "outside_input"}
    # Named directly, a device is read as given, so only the regular-file check stops it.
    articles, dead_letters = read_with_deadline(tmp_path / "zero.txt")
    assert not articles and [d["reason"] for d in dead_letters] == ["not_regular_file"]
    assert "zero.txt is a device" in dead_letters[0]["error"]


def test_links_are_followed_only_inside_the_input_folder(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    (inside / "real").mkdir(parents=True)
    outside.mkdir()
    (inside / "real" / "a.txt").write_text("Inside the input.")
    (outside / "secret.txt").write_text("Not part of the input.")
    os.symlink("../etc-passwd", inside / "passwd.txt")
    os.symlink(outside / "secret.txt", inside / "secret.txt")
    os.symlink(outside, inside / "elsewhere")
    os.symlink(inside / "real" / "a.txt", inside / "alias.txt")
    os.symlink(inside / "real", inside / "real-again")
    os.symlink(inside / "gone.txt", inside / "dangling.txt")
    (tmp_path / "etc-passwd").write_text("root:x:0:0:root:/root:/bin/bash")
    articles, dead_letters = read(inside)
    assert set(articles) == {"real/a", "alias"}
    assert articles["alias"]["origin"] == str(inside / "alias.txt")
    assert reasons_by_name(dead_letters, inside) == {
        "passwd.txt": "outside_input", "secret.txt": "outside_input",
        "elsewhere": "outside_input", "dangling.txt": "unreadable"}
    assert all(not d["raw"] for d in dead_letters)  # nothing outside was read


def test_hidden_and_underscore_folders_and_outputs_are_passed_over(tmp_path):
    for folder in (".git", "_skipme", "old-out/_runs", "old-out/articles", "feeds", "run-out"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / ".git" / "x.jsonl").write_bytes(jsonl([{"id": "git", "body": "Hidden."}]))
    (tmp_path / "_skipme" / "y.txt").write_text("Skipped.")
    (tmp_path / "old-out" / "articles" / "z.jsonl").write_bytes(jsonl([{"id": "o", "body": "Out"}]))
    (tmp_path / "run-out" / "w.txt").write_text("The run's own output.")
    (tmp_path / "feeds" / "_SUCCESS").write_text("")
    (tmp_path / "feeds" / "f.jsonl").write_bytes(jsonl([{"id": "f", "body": "Read."}]))
    parser = ArticleFileParser(NOW, 10_000, 1000)
    records = list(read_article_files(str(tmp_path), parser, exclude=[str(tmp_path / "run-out")]))
    assert [(kind, r["article_id"]) for kind, r in records] == [(ARTICLE, "f")]
    # A glob's matches below a hidden folder or an output are passed over too.
    records = list(read_article_files(str(tmp_path / "**" / "*.jsonl"), parser))
    assert [r["article_id"] for _, r in records] == ["f"]


def test_txt_ids_are_paths_below_the_input_root(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.txt").write_text(f"The story from {folder}.")
    (tmp_path / "top.txt.gz").write_bytes(gzip.compress(b"At the top."))
    articles, dead_letters = read(tmp_path)
    assert set(articles) == {"a/x", "b/x", "top"} and not dead_letters
    articles, _ = read(tmp_path / "a" / "x.txt")
    assert set(articles) == {"x"}
    articles, _ = read(tmp_path / "*" / "x.txt")
    assert set(articles) == {"a/x", "b/x"}


def test_a_file_that_cannot_be_opened_is_a_dead_letter(tmp_path):
    parser = ArticleFileParser(NOW, 10_000, 1000)
    vanished = str(tmp_path / "vanished.jsonl")  # listed, then deleted before it was opened
    [(kind, row)] = parser.read(InputFile(vanished, "vanished.jsonl", vanished))
    assert kind == DEAD_LETTER and row["reason"] == "unreadable"
    assert "vanished.jsonl could not be opened: FileNotFoundError" in row["error"]


def test_a_run_on_hostile_input_finishes_and_never_reads_its_output_back(tmp_path):
    from pipeline.graph import run
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("Heavy rain flooded the valley on Monday.")
    (tmp_path / "b" / "x.txt").write_text("The council approved the new budget on Tuesday.")
    os.symlink("/etc/passwd", tmp_path / "passwd.txt")
    os.symlink("/dev/zero", tmp_path / "a" / "zero.jsonl")
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "half.jsonl.gz").write_bytes(gzip.compress(b'{"body": "x"}\n' * 1000)[:40])
    out = tmp_path / "out"
    summaries = []
    for _ in range(2):
        outcome = {}
        worker = threading.Thread(daemon=True, target=lambda: outcome.update(summary=run(
            ["--input", str(tmp_path), "--output", str(out), "--embedder", "none"])))
        worker.start()
        worker.join(600)
        assert not worker.is_alive(), "the run did not finish within 10 minutes"
        summaries.append(outcome["summary"])
    rejected = {"corrupt_gzip": 1, "not_regular_file": 1, "outside_input": 2}
    # The second run knows the first one's articles: re-read, they are repeats.
    for summary, repeats in zip(summaries, (0, 2)):
        assert summary["read"] == 6 and summary["articles"] == 2 - repeats
        assert summary["unaccounted"] == 0
        assert summary["dead_letters_by_reason"] == (
            {**rejected, "duplicate_article_id": repeats} if repeats else rejected)
    articles = duckdb.sql(f"select article_id, body from read_parquet('{out}/articles/**/*.parquet')"
                          ).fetchall()
    assert sorted(a for a, _ in articles) == ["a/x", "b/x"]
    assert not any("root:" in body for _, body in articles)


def test_utf16_utf32_and_cr_only_files_give_one_row_per_record(tmp_path):
    records = [{"id": "one", "body": "Première ligne."}, {"id": "two", "body": "Zweite Zeile."}]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    files = {
        "utf16.jsonl": "\n".join(lines).encode("utf-16"),          # with a byte-order mark
        "utf16le.jsonl": "\r\n".join(lines).encode("utf-16-le"),   # without one
        "utf32.jsonl.gz": gzip.compress("\n".join(lines).encode("utf-32")),
        "cr.jsonl": "\r".join(lines).encode("utf-8"),                # classic Mac line ends
        "utf16.json": json.dumps(records).encode("utf-16"),
    }
    parser = ArticleFileParser(NOW, 10_000, 1000)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        rows = list(parser.read(InputFile(str(tmp_path / name), name, str(tmp_path / name))))
        assert [(kind, r["article_id"], r["body"]) for kind, r in rows] == [
            (ARTICLE, r["id"], r["body"]) for r in records], name
    (tmp_path / "note.txt").write_bytes("Une note en UTF-16.".encode("utf-16"))
    articles, dead_letters = read(tmp_path / "note.txt")
    assert articles["note"]["body"] == "Une note en UTF-16." and not dead_letters
    # A mark that promises UTF-16 and bytes that break it: one dead letter for the file.
    (tmp_path / "broken.jsonl").write_bytes(b"\xff\xfe{\x00\x00\xd8")
    articles, dead_letters = read(tmp_path / "broken.jsonl")
    assert not articles and [d["reason"] for d in dead_letters] == ["invalid_utf8"]
    assert "UTF-16" in dead_letters[0]["error"]


def test_line_ends_split_across_reads_are_one_line_end():
    data = b"a\r" + b"x" * ((1 << 16) - 3) + b"\r\nb\rc\n\nd"
    ends = [(number, offset, size) for number, offset, _, size in iter_lines(io.BytesIO(data), 1 << 17)]
    assert ends == [(1, 0, 2), (2, 2, (1 << 16) - 1), (3, (1 << 16) + 1, 2),
                    (4, (1 << 16) + 3, 2), (5, (1 << 16) + 5, 1), (6, (1 << 16) + 6, 1)]


def test_a_glob_names_files_and_cannot_leave_the_input_through_a_linked_folder(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    (inside / "feeds").mkdir(parents=True)
    outside.mkdir()
    (inside / "feeds" / "a.jsonl").write_bytes(jsonl([{"id": "a", "body": "Inside."}]))
    (outside / "b.jsonl").write_bytes(jsonl([{"id": "b", "body": "Outside."}]))
    os.symlink(outside, inside / "feeds" / "linked")
    articles, dead_letters = read(inside / "**")
    assert set(articles) == {"a"}  # each file once, though ** also matches its folder
    assert reasons_by_name(dead_letters, inside) == {"feeds/linked": "outside_input",
                                                     "feeds/linked/b.jsonl": "outside_input"}
