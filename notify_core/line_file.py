"""A file of lines that one process appends to while another may rewrite it, without losing a line.

The outbox is appended to by ``notify worker`` for as long as it runs, and rewritten by the erasure sweep
(a user's lines removed: a new file renamed over the old, so a crash leaves one or the other whole). Without
an agreement between the two, a worker holding the old file open keeps appending to it after the rename:
every send it acknowledges from then on is in a file no reader can open (found in session 34: the first
send after an erasure was missing). The agreement, kept here once:

* a rewriter holds an exclusive ``flock`` on the file now at the path from before it reads it until after
  it renamed the new version over it (:func:`rewriting`);
* an appender takes the same lock for each append, and appends only if its open file is still the one at
  the path; otherwise it opens the new one and tries again (:class:`LineFile`).

So a line is either in the file the rewriter read (and kept, unless it names the erased user) or appended
to the new one. ``flock`` is per open file, so this holds between threads and between processes, and the
kernel drops the lock of a killed holder. Holding the lock, an appender also knows where the file ended
before its line, so with ``others=True`` it shows what other processes appended since its own last line to
the caller before it writes (the outbox learns another worker's sends from it, and writes none twice).

A ``kill -9`` can also tear a line: Linux stops a ``write`` between two pages once the signal is pending,
so a line that straddles a page boundary is left half written. Opening a :class:`LineFile` ends such a
line first, so the next one starts on its own line and stays readable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path


@contextlib.contextmanager
def rewriting(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock while reading it and renaming a new version over it: appenders wait, then
    append to the new file. A file that does not exist needs no lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return None
    return at_path.st_dev, at_path.st_ino


# The most of what other processes appended that one append reads (their last lines; see LineFile.append).
OTHERS_MAX_BYTES = 8 << 20


class LineFile:
    """Append whole lines to ``path`` (created with ``mode``), always to the file now at the path."""

    def __init__(self, path: Path, *, mode: int, others: bool = False) -> None:
        self.path = path
        self._mode = mode
        self._others = others
        self._fd, self._opened, self._end = self._open()

    def _open(self) -> tuple[int, tuple[int, int], int]:
        """The file at the path, opened, its identity (an open file's never changes: read once) and its end."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, self._mode)
        try:
            mine = os.fstat(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")  # a torn line from a killed writer: the next one starts on its own line
                size += 1
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        return fd, (mine.st_dev, mine.st_ino), size

    def append(self, line: bytes, *, fsync: bool = False,
               already: Callable[[bytes], bool] | None = None) -> bool:
        """Append ``line`` (ending in a newline) under the file's lock; with ``fsync``, synced to disk.
        ``OSError`` as the system raised it (a full disk).

        On a file opened with ``others``, ``already`` is called, holding the lock, with what other processes
        appended since this one's last line (since it opened the file, the first time; at most the last
        :data:`OTHERS_MAX_BYTES`, whose first line may be cut); when it says the line is among them, the line
        is not appended and this returns False."""
        while True:
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if _identity(self.path) == self._opened:
                    if self._others:
                        start = os.lseek(fd, 0, os.SEEK_END)
                        if start > self._end:
                            skip = max(self._end, start - OTHERS_MAX_BYTES)
                            others = os.pread(fd, start - skip, skip)
                            self._end = start
                            if already is not None and already(others):
                                return False
                        self._end = start + len(line)  # where this line ends: nobody else appends meanwhile
                    view = memoryview(line)
                    try:
                        while view:
                            view = view[os.write(fd, view):]
                    except OSError:  # a full disk part-way: no torn line for the next one to follow
                        if len(view) < len(line):
                            with contextlib.suppress(OSError):
                                os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - (len(line) - len(view)))
                        raise
                    if fsync:
                        os.fsync(fd)
                    return True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._fd, self._opened, self._end = self._open()  # renamed over (a rewrite) or removed: the new one
            os.close(fd)

    def close(self) -> None:
        """Close the file; again is a no-op."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


# ------------------------------------------------------------------------------------------------
# Daily rotation: the JSON log files and the outbox keep their lines for a retention, not for good.

DayOfLine = Callable[[bytes], str | None]
"""The UTC day (``YYYY-MM-DD``) a line was written on, or None for a line that does not say."""


def utc_day(ts: float) -> tuple[str, float]:
    """The UTC day of the epoch time ``ts`` (``YYYY-MM-DD``) and when it ends (epoch seconds): a writer
    rotates on its first line at or after that end, a float compare a line."""
    day = datetime.fromtimestamp(ts, UTC).date()
    return day.isoformat(), datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + 86_400


def rotate_by_day(path: Path, *, day: str, keep_days: int, day_of_line: DayOfLine) -> None:
    """Move ``path``'s lines of days before ``day`` aside, as ``<stem>.<their last day><suffix>`` beside it,
    and remove the moved files of days more than ``keep_days`` before ``day``.

    The move holds the file's lock (:func:`rewriting`), so an appender (each process's :class:`LineFile`)
    waits and then appends to a new file at the path: no line is lost or split between two files. The day of
    the file is the latest its lines say (in its last 64 KiB), not its last line's: another writer that read
    its clock just before midnight may append that line just after the file was moved, and the file then
    holding it and the new day's lines is not moved again. A file whose lines say no day is left alone. A
    file of that day already moved aside is kept too: ``<stem>.<day>.<n><suffix>``."""
    with rewriting(path):
        last = _latest_day(path, day_of_line)
        if last is not None and last < day:
            os.rename(path, _aside(path, last))
    _remove_rotated(path, day=day, keep_days=keep_days)


def rotate_held_file(path: Path, *, day: str, last_day: str, keep_days: int) -> bool:
    """:func:`rotate_by_day` for a file another process appends to through a descriptor it holds for good
    (Litestream's output, opened ``O_APPEND`` for it): a rename would leave it writing into the moved file,
    so the file's lines are copied aside as ``<stem>.<last_day><suffix>`` and the file is truncated; the
    appender's next line lands at the new end. A line it writes between the copy and the truncate is lost
    (logrotate's ``copytruncate``; Litestream writes a few lines a minute). Nothing is done when ``last_day``
    is not before ``day``, or the file is empty. True when lines were moved aside."""
    moved = False
    if last_day < day and path.exists() and path.stat().st_size:
        aside = _aside(path, last_day)
        mode = path.stat().st_mode & 0o777  # the log's own (0600): the copy is never wider, not even briefly
        with open(path, "rb") as source, \
                os.fdopen(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        os.truncate(path, 0)
        moved = True
    _remove_rotated(path, day=day, keep_days=keep_days)
    return moved


def _aside(path: Path, day: str) -> Path:
    """Where ``path``'s lines of ``day`` go aside: ``<stem>.<day><suffix>``, or ``<stem>.<day>.<n><suffix>``."""
    aside = path.with_name(f"{path.stem}.{day}{path.suffix}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.stem}.{day}.{n}{path.suffix}")
        n += 1
    return aside


def _remove_rotated(path: Path, *, day: str, keep_days: int) -> None:
    oldest = (date.fromisoformat(day) - timedelta(days=keep_days)).isoformat()
    for moved_day, moved in _rotated(path):
        if moved_day < oldest:
            moved.unlink(missing_ok=True)


def rotated_files(path: Path) -> list[Path]:
    """The files :func:`rotate_by_day` moved aside from ``path``, oldest first (the current file not among them)."""
    return [moved for _day, moved in sorted(_rotated(path), key=lambda found: (found[0], _copy_number(found[1])))]


def _rotated(path: Path) -> list[tuple[str, Path]]:
    pattern = re.compile(rf"{re.escape(path.stem)}\.(\d{{4}}-\d{{2}}-\d{{2}})(\.\d+)?{re.escape(path.suffix)}")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is not None:
            found.append((match.group(1), path.parent / name))
    return found


def _copy_number(moved: Path) -> int:
    parts = moved.name.split(".")
    return int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else 0


def _latest_day(path: Path, day_of_line: DayOfLine) -> str | None:
    """The latest day the lines in the last 64 KiB of ``path`` say; None when absent, empty or silent."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - (64 << 10)))
            tail = handle.read()
    except FileNotFoundError:
        return None
    days = [day for day in map(day_of_line, tail.splitlines()) if day is not None]
    return max(days, default=None)

