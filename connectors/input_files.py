"""Which files an ``--input`` names, and opening them without following them anywhere unsafe.

An input is a file, a folder (every file below it) or a glob (the files it
matches), on the local disk or any filesystem Beam knows. Below a folder (or a
glob's fixed leading folder: the *input root*):

* names starting with ``.`` or ``_`` are not inputs, folders (``.git/``,
  ``_drafts/``) as well as files (``.DS_Store``, ``_SUCCESS``);
* a folder holding ``_runs/`` is a newsloom output, and so is the run's own
  ``--output``: neither is read back;
* a symbolic link is followed only when its target is inside the input root
  (a glob's match is checked whole, as a glob may pass through linked folders).
  One that leads out becomes an ``outside_input`` dead letter, a dangling one
  an ``unreadable`` one, and a link to a folder inside the root is passed over
  (its files are read where they are);
* only regular files are read: a FIFO or a device (a link to ``/dev/zero``)
  becomes a ``not_regular_file`` dead letter. Files are opened non-blocking, so
  a FIFO cannot hang the open.

A file named directly as the input is read as given, links and all, but it too
must be a regular file.
"""

import glob
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from connectors.records import RejectedRecord

# A folder holding this is a newsloom output (the run summaries' folder).
OUTPUT_MARKER = "_runs"


@dataclass(frozen=True)
class InputFile:
    """One file of the input, or one that was refused.

    Attributes:
        path: the path as found (a link's own path): the records' ``origin``.
        relative: the path below the input root, ``/``-separated.
        open_path: what to open: a link's resolved target, else ``path``.
        size: the size a remote filesystem listed; None on the local disk.
        refused: why the file is not read, as (dead-letter reason, error), or None.
    """

    path: str
    relative: str
    open_path: str
    size: Optional[int] = None
    refused: Optional[Tuple[str, str]] = None


def is_skipped_name(name: str) -> bool:
    """Hidden and ``_``-prefixed files and folders are not inputs."""
    return name.startswith((".", "_"))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _glob_root(pattern: str) -> str:
    """The fixed leading folder of a glob: ``feeds/2025/*.jsonl`` -> ``feeds/2025``."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return "/".join(fixed) or ("/" if pattern.startswith("/") else ".")


def list_input(path: str, exclude: Iterable[str] = ()) -> Iterator[InputFile]:
    """Every file that ``path`` names, in a stable order; see the module's rules.

    ``exclude``: folders never read (the run's output). A local path that does
    not exist and is no glob is an error.
    """
    if FileSystems.get_scheme(path) is not None:
        yield from _list_remote(path)
        return
    excluded = {os.path.realpath(folder) for folder in exclude}
    if os.path.isdir(path):
        yield from _walk(path, os.path.realpath(path), "", excluded)
    elif glob.has_magic(path):
        root = _glob_root(path)
        real_root = os.path.realpath(root)
        for match in sorted(glob.glob(path, recursive=True)):
            relative = os.path.relpath(match, root).replace(os.sep, "/")
            parts = relative.split("/")
            # A glob names files: _entry passes over a folder it matches (``**``
            # matches the folders as well as the files below them).
            if (any(is_skipped_name(part) for part in parts)
                    or any(_is_output(os.path.join(root, *parts[:n]), excluded)
                           for n in range(1, len(parts)))):
                continue
            yield from _entry(match, relative, real_root)
    elif os.path.lexists(path):
        yield InputFile(path, os.path.basename(path), path)
    else:
        raise FileNotFoundError(f"--input {path}: no such file or folder")


def _is_output(folder: str, excluded: set) -> bool:
    return (os.path.realpath(folder) in excluded
            or os.path.isdir(os.path.join(folder, OUTPUT_MARKER)))


def _walk(folder: str, real_root: str, prefix: str, excluded: set) -> Iterator[InputFile]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        yield InputFile(folder, prefix.rstrip("/") or ".", folder, refused=(
            "unreadable", f"folder {folder} could not be listed: {type(e).__name__}: {e}"))
        return
    for entry in entries:
        if is_skipped_name(entry.name):
            continue
        relative = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            if not _is_output(entry.path, excluded):
                yield from _walk(entry.path, real_root, relative + "/", excluded)
        else:
            yield from _entry(entry.path, relative, real_root)


def _entry(path: str, relative: str, real_root: str) -> Iterator[InputFile]:
    """A file found below the input root, checked against the root: it may be a
    link, or (in a glob's match) lie below a linked folder."""
    target = os.path.realpath(path)
    if os.path.islink(path) and not os.path.exists(target):
        yield InputFile(path, relative, path, refused=(
            "unreadable", f"{path} is a dangling symbolic link (to {os.readlink(path)})"))
    elif not _inside(target, real_root):
        yield InputFile(path, relative, path, refused=(
            "outside_input", f"{path} leads to {target}, outside the input folder "
                             f"{real_root}: not followed"))
    elif not os.path.isdir(target):
        yield InputFile(path, relative, target)


def _list_remote(path: str) -> Iterator[InputFile]:
    # gs://, s3://...: no links or special files, only names to pass over.
    if glob.has_magic(path):
        pattern, root = path, _glob_root(path)
    elif path.endswith("/") or not FileSystems.exists(path):
        root = path.rstrip("/")
        pattern = FileSystems.join(root, "**")
    else:
        pattern, root = path, path.rsplit("/", 1)[0]
    for metadata in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
        relative = metadata.path[len(root):].lstrip("/")
        if not any(is_skipped_name(part) for part in relative.split("/")):
            yield InputFile(metadata.path, relative, metadata.path, metadata.size_in_bytes)


def open_input(entry: InputFile) -> Tuple[BinaryIO, int]:
    """(a binary stream, its size) of an input file.

    Raises ``RejectedRecord`` (``not_regular_file``) for anything but a regular
    file, and ``OSError`` when it cannot be opened.
    """
    if entry.size is not None:
        return (FileSystems.open(entry.open_path, compression_type=CompressionTypes.UNCOMPRESSED),
                entry.size)
    # Non-blocking, so that opening a FIFO returns at once instead of waiting for a writer.
    fd = os.open(entry.open_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd)
        if not stat.S_ISREG(mode.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode.st_mode)
                    else "a device" if stat.S_ISCHR(mode.st_mode) or stat.S_ISBLK(mode.st_mode)
                    else "a socket" if stat.S_ISSOCK(mode.st_mode) else "not a file")
            raise RejectedRecord("not_regular_file",
                                 f"{entry.path} is {kind}, not a regular file: not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), mode.st_size
    except BaseException:
        os.close(fd)
        raise
