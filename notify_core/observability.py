"""Structured JSON logs with one schema for handlers, workers, assets and the CLI (CloudWatch-ready),
and a Prometheus histogram for hot loops.

Each line is one JSON object: ``ts``, ``level``, ``logger``, ``message`` plus whatever the call passed
in ``extra=`` (event ids, counts, latencies). Configure once per entry point with :func:`configure_logging`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Histogram

from notify_core.clock import SYSTEM_CLOCK, Clock
from notify_core.line_file import LineFile, rotate_by_day, utc_day
from notify_core.security.files import FILE_MODE

LOG_RETENTION_DAYS = 30
"""Spec §8: logs kept 30 days: the Lambda log groups' retention (:mod:`notify_core.slo`), the deliveries log's
row TTL, the first open/click markers' TTL and the JSON log files (:class:`LineFileHandler`). Here, in a
module every process imports anyway, so that a handler reading it (the tracking links) pulls no other code
into its import graph, from which its IAM role is derived."""

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


# The correlation id of the request being served (the HTTP edge's request id). Set by the handler edge
# with :func:`request_context`; read by every JSON log line and by capture, which copies it into the
# records' headers so the consumer can write it into the Store rows.
_REQUEST_ID: ContextVar[str | None] = ContextVar("notify_request_id", default=None)


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


@contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Within the block, log lines and produced records carry ``request_id`` (threads: per context)."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


# orjson, not json.dumps: a line a delivery attempt in ``notify worker``, and the standard encoder was a third
# of a line's ~30 us there (bench/results/session55). Numbers from numpy stay numbers; any key type is written.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class JsonFormatter(logging.Formatter):
    """One JSON object a record (the module doc's schema). Text is written as UTF-8, not ``\\u`` escapes: the
    ids the erasure looks for in these lines (:func:`notify_core.erasure.erase_from_files`) are ASCII
    (:data:`notify_core.bounds.ID_CHARACTERS`), so they read the same either way."""

    def format(self, record: logging.LogRecord) -> str:
        payload = _head(created=record.created, level=record.levelname, logger=record.name,
                        message=record.getMessage())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return _json(payload)


def _head(*, created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    """A line's first fields, the schema's own (the module doc), and the request id of the context it is logged in;
    the call's fields follow (:meth:`JsonFormatter.format`, :func:`log_fields`)."""
    payload: dict[str, Any] = {"ts": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
                               "level": level.lower(), "logger": logger, "message": message}
    rid = _REQUEST_ID.get()
    if rid is not None:
        payload["request_id"] = rid
    return payload


def _json(payload: dict[str, Any]) -> str:
    try:
        return orjson.dumps(payload, default=str, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:  # what orjson cannot write (an int over 64 bits, a lone surrogate)
        return json.dumps(payload, default=str)


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, message, extra=fields)``: the same line, built straight from ``fields`` where Notify's
    own configuration is all it meets on its way (:func:`_plain_line_files`), else by ``logging`` itself.

    Why: the lines of the hot loops (a delivery attempt, a recommendation request) went through a ``LogRecord``,
    the caller's frame lookup and the handler chain before the JSON was even built: about half of a line's CPU
    (44 against 23.5 us on one hour), and a line was ~9 % of a delivery's GIL time after its JSON moved to
    orjson (docs/peak-performance.md, sessions 55 and 57). The line written is the one :class:`JsonFormatter`
    writes for the same call, key for key and in order (``tests/observability/test_log_fields.py``)."""
    if not logger.isEnabledFor(level):
        return
    handlers = _plain_line_files(logger, level)
    if handlers is None or not _STANDARD.isdisjoint(fields):  # the record would refuse or shadow such a field
        logger.log(level, message, extra=fields, stacklevel=2)
        return
    created = SYSTEM_CLOCK.now()  # a line's time is the wall clock's, as a ``LogRecord``'s ``created`` is
    payload = _head(created=created, level=logging.getLevelName(level), logger=logger.name, message=message)
    for key, value in fields.items():
        if not key.startswith("_"):
            payload[key] = value
    line = (_json(payload) + "\n").encode("utf-8", errors="replace")
    for handler in handlers:
        with handler.lock or contextlib.nullcontext():  # as ``Handler.handle`` holds it around ``emit``
            try:
                handler.append_line(line, created=created)
            except Exception:
                handler.handleError(logger.makeRecord(logger.name, level, "(log_fields)", 0, message, (), None))


def _plain_line_files(logger: logging.Logger, level: int) -> list[LineFileHandler] | None:
    """The handlers a ``level`` line of ``logger`` reaches, when each is a :class:`LineFileHandler` formatting with
    :class:`JsonFormatter` and no logger or handler on the way has a filter (:func:`configure_logging`'s
    setup); None otherwise (anything else may look at the record, so it gets one), or when none is reached
    (``logging``'s last resort decides then)."""
    found: list[LineFileHandler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if type(handler) is not LineFileHandler or type(handler.formatter) is not JsonFormatter or handler.filters:
                return None
            if level >= handler.level:
                found.append(handler)
        current = current.parent if current.propagate else None
    return found or None


class LineFileHandler(logging.Handler):
    """Log lines appended to a :class:`~notify_core.line_file.LineFile`: a log file the erasure sweep
    rewrites (lines naming an erased user removed) keeps every later line, where a plain file handler
    would go on writing into the file the rewrite replaced, which no one can read any more.

    Kept ``keep_days`` (the logs' retention, :data:`LOG_RETENTION_DAYS`): the first line of a new UTC day (by
    the record's own time) moves the earlier days' lines aside as ``<stem>.<day><suffix>`` and removes those
    past the retention (:func:`~notify_core.line_file.rotate_by_day`, under the file's lock: every process
    appending to it then appends to the new one). Before, ``logs/delivery.jsonl`` took one line per delivery
    attempt for as long as the worker ran."""

    def __init__(self, path: Path, *, keep_days: int | None = None) -> None:
        super().__init__()
        if keep_days is None:
            keep_days = LOG_RETENTION_DAYS
        self.path = path
        self._keep_days = keep_days
        self._day_ends = float("-inf")  # when the UTC day this handler last rotated on ends (epoch seconds)
        self._file: LineFile | None = LineFile(path, mode=FILE_MODE)
        self._to_stderr = 0  # lines written to stderr since the file last refused one
        self._refused_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record's line (:meth:`append_line`)."""
        try:  # under the handler's lock already (``Handler.handle``)
            line = (self.format(record) + "\n").encode("utf-8", errors="replace")
            self.append_line(line, created=record.created)
        except Exception:
            self.handleError(record)

    def append_line(self, line: bytes, *, created: float) -> None:
        """Append ``line`` (logged at ``created``), holding the handler's lock; a file that cannot be written (its
        disk full) sends it to stderr instead.

        Before, each such line became ``logging``'s "--- Logging error ---" and a traceback of ~70 lines on
        stderr, and the line itself was lost: a worker on a full disk wrote 27,000 lines of tracebacks in 6 s
        and none of its warnings."""
        try:
            if created >= self._day_ends:  # a float compare a line; the day's string once a day
                day, self._day_ends = utc_day(created)
                rotate_by_day(self.path, day=day, keep_days=self._keep_days, day_of_line=_log_line_day)
            if self._file is None:  # closed while still attached (see close): open again, as FileHandler does
                self._file = LineFile(self.path, mode=FILE_MODE)
            if self._to_stderr:  # one append with the line: both in the file, or neither
                self._file.append(self._own_line(
                    logging.WARNING, "log lines went to stderr: this file could not be written",
                    lines=self._to_stderr, since=datetime.fromtimestamp(self._refused_at, UTC).isoformat()) + line)
                self._to_stderr = 0
            else:
                self._file.append(line)
        except OSError as exc:
            self._stderr(line, exc, at=created)

    def _stderr(self, line: bytes, error: OSError, *, at: float) -> None:
        """``line`` (logged ``at``) to stderr; the first of a run after a line saying why, and where the others go."""
        if not self._to_stderr:
            self._refused_at = at
            self._write_stderr(self._own_line(
                logging.ERROR, "the log file cannot be written; its lines go to stderr until it can",
                path=str(self.path), error=str(error)))
        self._to_stderr += 1
        if line:
            self._write_stderr(line)

    @staticmethod
    def _write_stderr(line: bytes) -> None:
        with contextlib.suppress(Exception):  # stderr closed too: nowhere is left to say it
            sys.stderr.write(line.decode("utf-8", errors="replace"))
            sys.stderr.flush()

    def _own_line(self, level: int, message: str, **fields: object) -> bytes:
        record = logging.makeLogRecord({"name": __name__, "levelno": level, "levelname": logging.getLevelName(level),
                                        "msg": message, **fields})
        return (self.format(record) + "\n").encode("utf-8", errors="replace")

    def close(self) -> None:
        """Close the file; the next line opens it again. ``logging.config.dictConfig`` closes every handler of
        the process and leaves them attached to their loggers, and Dagster calls it each time a run's log
        manager is made (``get_yaml_python_handlers``, even with no ``python_logs`` configured): without the
        reopen, every line ``notify run`` logged after its run began was lost, each with a traceback on stderr
        (2,266 on the demo)."""
        with self.lock or contextlib.nullcontext():
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()


def _log_line_day(raw: bytes) -> str | None:
    """The UTC day of a JSON log line (its ``ts``), or None."""
    try:
        ts = json.loads(raw).get("ts")
    except (ValueError, AttributeError):
        return None
    return ts[:10] if isinstance(ts, str) and len(ts) >= 10 else None


def configure_logging(*, level: str = "INFO", stream: Any = None, path: Path | None = None) -> None:
    """Send ``notify_core`` and ``lambdas`` logs as JSON lines to the file ``path`` (see
    :class:`LineFileHandler`), else to ``stream`` (stderr by default)."""
    handler = LineFileHandler(path) if path is not None else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("notify_core", "lambdas", "notify_cli"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


def log_file(data_dir: Path) -> Path:
    """``<data_dir>/logs/notify.jsonl``, its folder made: the JSON log file of the CLI's commands and, on one
    machine, of Dagster's processes (the code server's sensors, each run worker)."""
    folder = data_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / "notify.jsonl"


def logging_configured() -> bool:
    """Whether :func:`configure_logging` (or anything else) gave Notify's loggers a handler already."""
    return bool(logging.getLogger("lambdas").handlers)


class Invocations:
    """Per-process facts of a handler's invocations: the cold start, and EMF metrics on Lambda.

    The first invocation of a function in a process is its cold start (``cold_start: true`` on its log line); on Lambda
    (``emit`` given: a print to stdout) each invocation also writes one Embedded Metric Format line:
    ``Invocations``, ``Errors`` (a 5xx) and ``Duration`` per function, in the ``Notify`` namespace.
    """

    def __init__(self, *, emit: Callable[[str], None] | None = None, namespace: str = "Notify",
                 clock: Clock = SYSTEM_CLOCK) -> None:
        """``clock`` stamps EMF records (CloudWatch files them under that time)."""
        self._emit = emit
        self._clock = clock
        self._namespace = namespace
        self._warm: set[str] = set()
        self._flushed: dict[SloKey, float] = {}
        self._lock = threading.Lock()

    def cold_start(self, function: str) -> bool:
        """True exactly once per function and process: for its first invocation."""
        if function in self._warm:
            return False
        with self._lock:
            cold = function not in self._warm
            self._warm.add(function)
        return cold

    def done(self, *, function: str, status: int, seconds: float, cold_start: bool) -> None:
        log = logging.getLogger("lambdas.invocation")
        # Failures already have their "request failed" line; this one is for latency and cold starts.
        level = logging.INFO if cold_start else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "invocation", extra={"function": function, "status": status,
                                                "duration_ms": round(seconds * 1000, 3), "cold_start": cold_start})
        if self._emit is not None:
            from notify_core.metrics import emf_line

            self.flush_counters()
            self._emit(emf_line(
                # also without the function: the handler-error alarm reads the sum over Notify's functions
                namespace=self._namespace, dimensions={"function": function}, timestamp_ms=self._now_ms(),
                also_undimensioned=True,
                metrics={"Invocations": (1, "Count"), "Errors": (1 if status >= 500 else 0, "Count"),
                         "Duration": (round(seconds * 1000, 3), "Milliseconds")},
                properties={"request_id": _REQUEST_ID.get(), "cold_start": cold_start, "status": status},
            ))


    def flush_counters(self) -> None:
        """On Lambda: what the SLO counters gained since the last flush, as EMF lines (one per outcome).

        The alarms of :mod:`notify_core.slo` read these (``notify_deliveries_total`` by ``outcome``...); a
        Lambda has no Prometheus scrape, so its counters reach CloudWatch this way.
        """
        if self._emit is None:
            return
        from notify_core.metrics import emf_line

        with self._lock:
            deltas = slo_counter_deltas(self._flushed)
        for (name, dims), delta in deltas:
            self._emit(emf_line(namespace=self._namespace, dimensions=dict(dims),
                                metrics={name: (delta, "Count")}, timestamp_ms=self._now_ms()))

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)


SloKey = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, its CloudWatch dimensions)


def slo_counter_deltas(flushed: dict[SloKey, float]) -> list[tuple[SloKey, float]]:
    """What the alarms' counters (:data:`notify_core.metrics.EMF_COUNTERS`, summed by their one label) and the SLA
    histograms' bucket at their bound and count (:data:`~notify_core.metrics.EMF_HISTOGRAM_BOUNDS`) gained
    since ``flushed`` (updated in place), the positive ones, sorted."""
    from prometheus_client import REGISTRY

    from notify_core.metrics import EMF_COUNTERS, EMF_HISTOGRAM_BOUNDS

    names = [*EMF_COUNTERS, *(f"{h}{suffix}" for h in EMF_HISTOGRAM_BOUNDS for suffix in ("_bucket", "_count"))]
    totals: dict[SloKey, float] = {}
    for family in REGISTRY.restricted_registry(names).collect():
        for sample in family.samples:
            dims: tuple[tuple[str, str], ...]
            if sample.name in EMF_COUNTERS:
                label = EMF_COUNTERS[sample.name]
                dims = () if label is None else ((label, str(sample.labels.get(label, ""))),)
            elif (sample.name.endswith("_bucket")
                  and sample.labels.get("le") == EMF_HISTOGRAM_BOUNDS.get(sample.name.removesuffix("_bucket"))):
                dims = (("le", sample.labels["le"]),)
            elif sample.name.removesuffix("_count") in EMF_HISTOGRAM_BOUNDS:
                dims = ()
            else:
                continue
            key = (sample.name, dims)
            totals[key] = totals.get(key, 0.0) + sample.value
    deltas = {k: v - flushed.get(k, 0.0) for k, v in totals.items()}
    flushed.update(totals)
    return sorted((k, d) for k, d in deltas.items() if d > 0)


class BatchHistogram(Histogram):
    """A Prometheus histogram that takes a batch of observations in one update per bucket.

    ``Histogram.observe`` takes a lock for the sum and for a bucket on every call, ~2 us: for a consumer
    that persists 50,000 events/s, one observation per event costs a tenth of a core. Observations of a
    batch often repeat a value (records produced together share a timestamp), so they come in as
    ``(value, count)`` pairs.
    """

    def observe_counts(self, pairs: Iterable[tuple[float, int]]) -> None:
        """Record each ``value`` ``count`` times (the same result as ``count`` calls of ``observe``)."""
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]  # (unannotated upstream)
        bounds = self._upper_bounds  # ascending, the last one +Inf
        per_bucket = [0] * len(bounds)
        total = 0.0
        for value, count in pairs:
            per_bucket[bisect_left(bounds, value)] += count  # observe's rule: the first bound >= value
            total += value * count
        self._sum.inc(total)
        for index, count in enumerate(per_bucket):
            if count:
                self._buckets[index].inc(count)
