"""The file source: article files from a directory, a glob or a single file.

Formats, told apart by the file name (each may also be gzipped, ``.gz``):

* ``.txt``: one article; its path below the input root without the extension
  (``a/x`` for ``a/x.txt``) is its id, the whole file its body.
* ``.json``: one article object, or an array of them.
* ``.jsonl``: one article object per line (blank lines are not records); lines
  end at ``\n``, ``\r\n`` or ``\r``.

Text is UTF-8, or UTF-16 or UTF-32 when a byte-order mark says so (JSON also
when the NUL bytes of its first character do).

Fields of a JSON article: see ``schemas.article.INCOMING_JSON_SCHEMA``.
Which files are read, and which are passed over or refused (hidden folders,
links out of the input, FIFOs), is ``connectors.input_files``. A file of an
unknown type becomes a dead-letter row, as does every record that cannot
become an article.
"""

import gzip
import io
import json
import os
import re
import zlib
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam

from connectors.input_files import InputFile, list_input, open_input
from connectors.records import (READ_COUNT_OUTPUT, RejectedRecord, article_from_json, article_from_json_bytes,
                                check_size, decode_text, new_article, parse_json,
                                text_encoding)
from schemas.article import event_time
from schemas.dead_letter import DEAD_LETTER_OUTPUT, make_dead_letter

# What ArticleFileParser.parse yields each record as.
ARTICLE, DEAD_LETTER = "article", "dead_letter"

# A .json file is parsed whole; larger inputs belong in JSON Lines.
MAX_JSON_FILE_BYTES = 256 * 1024 * 1024
SUPPORTED = (".txt", ".json", ".jsonl")
# What reading a file's bytes raises when it is damaged: gzip.BadGzipFile (an
# OSError) or zlib.error for what is not gzip, EOFError for a truncated one, and
# any other OSError from the disk.
READ_ERRORS = (OSError, EOFError, zlib.error)


def file_kind(path: str) -> Tuple[str, bool]:
    """(extension without .gz, gzipped?) of a path, e.g. ('.jsonl', True)."""
    name = os.path.basename(path).lower()
    gzipped = name.endswith(".gz")
    stem = name[:-3] if gzipped else name
    return os.path.splitext(stem)[1], gzipped


def article_id_from_path(relative: str) -> str:
    """A .txt file's article id: its path below the input root without the extension
    (and ``.gz``), so ``a/x.txt`` and ``b/x.txt`` stay apart."""
    name = relative[:-3] if relative.lower().endswith(".gz") else relative
    folder, _, file_name = name.rpartition("/")
    stem = file_name.rsplit(".", 1)[0]
    return f"{folder}/{stem}" if folder else stem


# Where a line ends: \n, \r\n, or a lone \r (classic Mac OS files).
_LINE_END = re.compile(rb"\r\n|\r|\n")
_CHUNK_BYTES = 1 << 16


def iter_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[Tuple[int, int, bytes, int]]:
    """(1-based line number, byte offset, line bytes, full line size) for each line.

    Lines end at ``\n``, ``\r\n`` or a lone ``\r``. A line longer than
    ``max_line_bytes`` is returned as its first ``max_line_bytes + 1`` bytes with
    its full size, and the rest is skipped without being held in memory.
    """
    number = offset = 0
    kept, size = bytearray(), 0  # the line being read: its first bytes, its length so far
    held = b""
    while True:
        chunk = stream.read(_CHUNK_BYTES)
        data, held = held + chunk, b""
        if chunk and data.endswith(b"\r"):
            # Maybe the first half of a \r\n: the next chunk decides.
            data, held = data[:-1], b"\r"
        start = 0
        for end in _LINE_END.finditer(data):
            piece = data[start:end.end()]
            kept += piece[:max(0, max_line_bytes + 1 - len(kept))]
            size += len(piece)
            number += 1
            yield number, offset, bytes(kept), size
            offset += size
            kept, size = bytearray(), 0
            start = end.end()
        rest = data[start:]
        kept += rest[:max(0, max_line_bytes + 1 - len(kept))]
        size += len(rest)
        if not chunk:
            if size:
                yield number + 1, offset, bytes(kept), size
            return


class ArticleFileParser:
    """Parses one article file into ``(ARTICLE, article)`` and ``(DEAD_LETTER, row)`` pairs.

    Plain Python, shared by the Beam file source and ``newsloom replay``.
    """

    def __init__(self, ingested_at: datetime, max_article_bytes: int, max_dead_letter_bytes: int):
        if max_article_bytes <= 0 or max_dead_letter_bytes < 0:
            raise ValueError("max_article_bytes must be > 0 and max_dead_letter_bytes >= 0")
        self.ingested_at = ingested_at
        self.max_article_bytes = max_article_bytes
        self.max_dead_letter_bytes = max_dead_letter_bytes

    def _dead_letter(self, error: RejectedRecord, *, raw: bytes, raw_size: int, origin: str,
                     origin_offset: int, byte_offset=None):
        return DEAD_LETTER, make_dead_letter(
            reason=error.reason, error=str(error), origin=origin, origin_offset=origin_offset,
            byte_offset=byte_offset, article_id=error.article_id, raw=raw, raw_size=raw_size,
            ingested_at=self.ingested_at, max_raw_bytes=self.max_dead_letter_bytes)

    def read(self, entry: InputFile):
        """Records of one input file; a refused or unopenable file is one dead letter."""
        refusal = entry.refused
        if refusal is None:
            try:
                raw_stream, size = open_input(entry)
            except RejectedRecord as e:
                refusal = e.reason, str(e)
            except OSError as e:
                refusal = "unreadable", f"{entry.path} could not be opened: {type(e).__name__}: {e}"
        if refusal is not None:
            yield self._dead_letter(RejectedRecord(*refusal), raw=b"", raw_size=0,
                                    origin=entry.path, origin_offset=0)
            return
        with raw_stream:
            yield from self.parse(entry.path, raw_stream, size, entry.relative)

    def parse(self, path: str, raw_stream: BinaryIO, size: int, relative: Optional[str] = None):
        """Records of the file at ``path``, read from its (still compressed) ``raw_stream``.

        ``relative``: its path below the input root (default: its name), whence
        a ``.txt`` file's id. A file that fails to read part way (a corrupt or
        truncated gzip, an I/O error) ends with one dead letter saying where;
        the records before it stand.
        """
        kind, gzipped = file_kind(path)
        stream = gzip.GzipFile(fileobj=raw_stream) if gzipped else raw_stream
        if not hasattr(stream, "peek"):  # a JSON Lines file's first bytes tell its encoding
            stream = io.BufferedReader(stream)
        with stream:
            if kind == ".jsonl":
                yield from self._jsonl(stream, path, size, gzipped)
            elif kind in (".txt", ".json"):
                yield from self._whole_file(stream, path, size, gzipped, kind,
                                            relative or os.path.basename(path))
            else:
                try:
                    raw = stream.read(self.max_dead_letter_bytes)
                except READ_ERRORS as e:
                    yield self._read_failed(e, path=path, size=size, gzipped=gzipped)
                    return
                yield self._dead_letter(
                    RejectedRecord("unsupported_file",
                                   f"unknown file type {kind or '(none)'}; the file source reads "
                                   f"{', '.join(SUPPORTED)}, optionally gzipped"),
                    raw=raw, raw_size=size, origin=path, origin_offset=0)

    def _read_failed(self, error: Exception, *, path: str, size: int, gzipped: bool,
                     line: int = 0, byte_offset=None):
        """The dead letter of a file whose reading failed at ``line`` (0: the whole file)."""
        corrupt = gzipped and isinstance(error, (gzip.BadGzipFile, EOFError, zlib.error))
        where = (f" at line {line} (byte {byte_offset} of the "
                 f"{'decompressed ' if gzipped else ''}data; the lines before it are read)"
                 if line else "")
        what = "is not gzip or is truncated" if corrupt else "could not be read"
        return self._dead_letter(
            RejectedRecord("corrupt_gzip" if corrupt else "unreadable",
                           f"{path} {what}{where}: {type(error).__name__}: {error}"),
            raw=b"", raw_size=size, origin=path, origin_offset=line, byte_offset=byte_offset)

    def _whole_file(self, stream: BinaryIO, path: str, file_size: int, gzipped: bool, kind: str,
                    relative: str):
        limit = self.max_article_bytes if kind == ".txt" else MAX_JSON_FILE_BYTES
        try:
            raw = stream.read(limit + 1)
            # Count an oversized file's bytes without holding them.
            size = len(raw) + sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
        except READ_ERRORS as e:
            yield self._read_failed(e, path=path, size=file_size, gzipped=gzipped)
            return
        try:
            check_size(size, limit, "file")
            if kind == ".txt":
                yield ARTICLE, new_article(body=decode_text(raw, text_encoding(raw)),
                                  article_id=article_id_from_path(relative),
                                  origin=path, origin_offset=0, ingested_at=self.ingested_at,
                                  max_article_bytes=self.max_article_bytes)
                return
            document = parse_json(decode_text(raw, text_encoding(raw, is_json=True)))
        except RejectedRecord as e:
            yield self._dead_letter(e, raw=raw, raw_size=size, origin=path, origin_offset=0)
            return
        records = document if isinstance(document, list) else [document]
        for index, record in enumerate(records):
            try:
                yield ARTICLE, article_from_json(record, origin=path, origin_offset=index,
                                        ingested_at=self.ingested_at,
                                        max_article_bytes=self.max_article_bytes)
            except RejectedRecord as e:
                element = json_element_bytes(record)
                yield self._dead_letter(e, raw=element, raw_size=len(element), origin=path,
                                        origin_offset=index)

    def _jsonl(self, stream: BinaryIO, path: str, file_size: int, gzipped: bool):
        try:
            encoding = text_encoding(stream.peek(4)[:4], is_json=True)
            if not encoding.startswith("utf-8"):
                stream = self._as_utf8(stream, encoding)
        except READ_ERRORS as e:
            yield self._read_failed(e, path=path, size=file_size, gzipped=gzipped)
            return
        except RejectedRecord as e:
            yield self._dead_letter(e, raw=b"", raw_size=file_size, origin=path, origin_offset=0)
            return
        # The byte offsets of a transcoded file would count its UTF-8 form: none are given.
        in_file = encoding.startswith("utf-8")
        lines = iter_lines(stream, self.max_article_bytes)
        number, offset = 1, 0  # where the next line starts
        while True:
            try:
                line_read = next(lines, None)
            except READ_ERRORS as e:
                yield self._read_failed(e, path=path, size=file_size, gzipped=gzipped,
                                        line=number, byte_offset=offset if in_file else None)
                return
            if line_read is None:
                return
            number, offset, line, size = line_read
            if line.strip():
                try:
                    check_size(size, self.max_article_bytes, "line")
                    yield ARTICLE, article_from_json_bytes(
                        line, origin=path, origin_offset=number, ingested_at=self.ingested_at,
                        max_article_bytes=self.max_article_bytes)
                except RejectedRecord as e:
                    yield self._dead_letter(e, raw=line, raw_size=size, origin=path,
                                            origin_offset=number,
                                            byte_offset=offset if in_file else None)
            number, offset = number + 1, offset + size

    @staticmethod
    def _as_utf8(stream: BinaryIO, encoding: str) -> BinaryIO:
        """A UTF-16 or UTF-32 JSON Lines file as UTF-8, read whole as a .json file is."""
        raw = stream.read(MAX_JSON_FILE_BYTES + 1)
        check_size(len(raw), MAX_JSON_FILE_BYTES, f"{encoding.upper()} file")
        return io.BytesIO(decode_text(raw, encoding).encode("utf-8"))


def json_element_bytes(record) -> bytes:
    """One element of a JSON array as JSON bytes, for its dead-letter row.

    Lone surrogates stay ``\\ud800`` escapes; an element nested too deep to
    write back is kept as nothing (the file's other rows still say where it was).
    """
    try:
        return json.dumps(record, ensure_ascii=False).encode("utf-8", "backslashreplace")
    except RecursionError:
        return b""


def read_article_files(path: str, parser: ArticleFileParser, exclude: Iterable[str] = ()):
    """Every record of the files at ``path`` (as ``ReadArticleFiles`` reads them), without Beam."""
    for entry in list_input(path, exclude):
        yield from parser.read(entry)


@dataclass(frozen=True)
class EventSlice:
    """The part of an input a batch run reads in one pass: the articles whose event
    time is in ``[start, end)`` (None: unbounded), and the dead letters when
    ``dead_letters`` (so that each is read in exactly one of the slices)."""

    start: Optional[datetime] = None
    end: Optional[datetime] = None
    dead_letters: bool = True

    def keeps(self, kind: str, record: dict) -> bool:
        if kind != ARTICLE:
            return self.dead_letters
        time = event_time(record)
        return ((self.start is None or time >= self.start)
                and (self.end is None or time < self.end))


WHOLE = EventSlice()


def event_slices(times: Iterable[datetime], length: timedelta) -> List[EventSlice]:
    """Consecutive slices of ``length`` of event time, from the earliest of ``times``,
    that together hold every time (the first is open at its start, the last at its
    end, and the dead letters go with the first); a slice that would hold none of
    ``times`` is merged into the next. One slice (``WHOLE``) when they span less
    than ``length``, or when ``length`` is not positive."""
    ordered = sorted(times)
    if not ordered or length <= timedelta(0) or ordered[-1] - ordered[0] < length:
        return [WHOLE]
    bounds, start, bound = [], ordered[0], ordered[0] + length
    while bound <= ordered[-1]:
        if bisect_left(ordered, bound) > bisect_left(ordered, start):
            bounds.append(bound)
            start = bound
        bound += length
    starts, ends = [None] + bounds, bounds + [None]
    return [EventSlice(s, e, dead_letters=s is None) for s, e in zip(starts, ends)]


def input_event_times(path: str, parser: ArticleFileParser,
                      exclude: Iterable[str] = ()) -> Iterator[datetime]:
    """The event time of every article the files at ``path`` hold (one plain read)."""
    for kind, record in read_article_files(path, parser, exclude):
        if kind == ARTICLE:
            yield event_time(record)


class _ReadArticleFileFn(beam.DoFn):
    def __init__(self, parser: ArticleFileParser, event_slice: EventSlice):
        self.parser = parser
        self.event_slice = event_slice

    def process(self, entry: InputFile):
        records = 0
        for kind, record in self.parser.read(entry):
            if not self.event_slice.keeps(kind, record):
                continue  # another slice's: that pass reads and counts it
            records += 1
            yield record if kind == ARTICLE else beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, record)
        yield beam.pvalue.TaggedOutput(READ_COUNT_OUTPUT, records)


class ReadArticleFiles(beam.PTransform):
    """Reads article files into article records and dead-letter records.

    Returns a ``DoOutputsTuple`` with ``articles`` and ``dead_letter`` outputs,
    and ``read_count``: the number of records of each file.

    Args:
        path: a file, a directory (every file below it) or a glob; any
            filesystem Beam knows (local, gs://, s3://...). What is read and
            what is passed over: ``connectors.input_files``.
        ingested_at: the ingestion time stamped on every record (the run's start).
        max_article_bytes: records or files over this size are dead-lettered.
        max_dead_letter_bytes: how much of a rejected record's raw bytes to keep.
        exclude: folders never read, such as the run's own output.
        event_slice: read only the records of this slice (``event_slices``);
            ``read_count`` counts only those.
    """

    def __init__(self, path: str, ingested_at: datetime, max_article_bytes: int,
                 max_dead_letter_bytes: int, exclude: Iterable[str] = (),
                 event_slice: EventSlice = WHOLE):
        super().__init__()
        self.path = path
        self.exclude = tuple(exclude)
        self.read = _ReadArticleFileFn(
            ArticleFileParser(ingested_at, max_article_bytes, max_dead_letter_bytes), event_slice)

    def expand(self, pbegin):
        path, exclude = self.path, self.exclude
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "ListFiles" >> beam.FlatMap(lambda _: list_input(path, exclude))
                # Spread the files over workers: the listing is one element's output.
                | "Spread" >> beam.Reshuffle()
                | "ParseArticles" >> beam.ParDo(self.read).with_outputs(
                    DEAD_LETTER_OUTPUT, READ_COUNT_OUTPUT, main="articles"))
