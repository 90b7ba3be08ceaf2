"""Shared pytest fixtures. Each concern keeps its own clearly delimited section; server logic lives in
``tests/servers.py`` so the fixtures stay declarative."""

from __future__ import annotations

import signal
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

try:  # `tests` is importable as a package when the repo root is on sys.path (python -m pytest) ...
    from tests import servers
except ImportError:  # ... otherwise pytest's rootdir-less conftest import puts tests/ itself on sys.path
    import servers  # type: ignore[no-redef]


# ==================================================================================================
# DynamoDB Local (Store contract tests)
# One real DynamoDB Local JVM per test session (~1-2 s to start). Tests isolate themselves with a unique
# table prefix instead of restarting it. A missing java or jar FAILS the requesting tests, never skips
# them: CI must not go green with the contract suite silently left out.
# ==================================================================================================
@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """Endpoint URL (http://127.0.0.1:<port>) of a DynamoDB Local started for this session."""
    server = servers.started_or_fail(servers.DynamoDBLocal.start, what="DynamoDB Local")
    try:
        yield server.endpoint
    finally:
        server.stop()


# ==================================================================================================
# end of DynamoDB Local section
# ==================================================================================================


# ==================================================================================================
# Streams: the embedded log and a real Kafka-protocol broker (Stream contract, capture, consumer tests)
# The broker is librdkafka's mock cluster in its own process (tests/kafka_broker.py, ~0.1 s to start),
# one per test so topics and consumer groups never leak between tests.
# ==================================================================================================
STREAM_TOPICS = (("purchase_history", 4), ("notify_clickstream", 4), ("purchase_history.dlq", 1),
                 ("notify_clickstream.dlq", 1))


@pytest.fixture
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a fresh Kafka-protocol broker with Notify's topics created."""
    try:
        from tests.kafka_broker import start_broker
    except ImportError:  # pragma: no cover - see the servers import above
        from kafka_broker import start_broker  # type: ignore[no-redef]
    broker = start_broker(STREAM_TOPICS)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(params=["local", "kafka"])
def stream_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A Stream of each adapter: the embedded log in a temp dir, and Kafka on a fresh broker."""
    if request.param == "local":
        from notify_core.stream.local_log import LocalLog

        log = LocalLog(tmp_path_factory.mktemp("log") / "log.sqlite", poll_interval=0.002)
        yield log
        log.close()
    else:
        from notify_core.stream.kafka import KafkaStream

        bootstrap = request.getfixturevalue("kafka_bootstrap")
        stream = KafkaStream(bootstrap_servers=bootstrap)
        yield stream
        stream.close()


# ==================================================================================================
# end of Streams section
# ==================================================================================================


# ==================================================================================================
# API keys: every handler checks one; tests send the session's admin key (tests/auth.py)
# ==================================================================================================
@pytest.fixture(autouse=True)
def api_key() -> str:
    from tests import auth

    auth.reinstall()
    return auth.token()


@pytest.fixture
def dagster_instance() -> Iterator[object]:
    """An ephemeral Dagster instance for a test that runs several materialisations on one, disposed at the
    end: undisposed, each left its temporary artefact folder in /tmp (``dg.materialize`` without an
    instance makes and disposes its own)."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


# ==================================================================================================
# S3: a real SeaweedFS server (the aws end-to-end test, issue 15). One per session (~8 s until the
# first PUT succeeds); tests isolate themselves with a bucket of their own. Missing `weed` FAILS.
# ==================================================================================================
@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A running :class:`tests.servers.SeaweedS3` (``.endpoint``, ``.create_bucket(name)``)."""
    server = servers.started_or_fail(servers.SeaweedS3.start, what="SeaweedFS")
    try:
        yield server
    finally:
        server.stop()
    assert not server.leftovers(), f"SeaweedFS left these behind: {server.leftovers()}"


# ==================================================================================================
# end of S3 section
# ==================================================================================================


# ==================================================================================================
# Signal hygiene: a test must not leave the pytest process ignoring a signal. An ignored signal is
# inherited by every process a later test starts (a shell cannot even trap it): dagster dev's stop test
# failed that way in suites started with `nohup ... &` (the launcher's ignores, not a test's). This guard
# names any test that would do the same from inside the suite.
# ==================================================================================================
def _ignored_signals() -> set[int]:
    """Signals 1-31 this process ignores, from the kernel's own view (catches C libraries too)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: nothing to compare
        return set()
    mask = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:")), 0)
    return {signum for signum in range(1, 32) if mask & (1 << (signum - 1))}


@pytest.fixture(autouse=True)
def _no_leaked_ignored_signals() -> Iterator[None]:
    before = _ignored_signals()
    yield
    leaked = _ignored_signals() - before
    for signum in leaked:  # restore first, so one leak does not fail every later test too
        signal.signal(signum, signal.SIG_DFL)
    if leaked:
        names = ", ".join(sorted(signal.Signals(signum).name for signum in leaked))
        pytest.fail(f"this test left the test process ignoring {names}; every later child inherits that",
                    pytrace=False)


# ==================================================================================================
# end of signal hygiene section
# ==================================================================================================


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that talks to the Kafka-protocol broker carries the ``kafka`` marker (directly, or through
    ``stream_backend``'s kafka parameter), so a run can select or leave them out (``-m "not kafka"``): the
    timeshift runs do, since librdkafka's timers do not survive libfaketime."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_broker = "kafka_bootstrap" in getattr(item, "fixturenames", ()) or (
            callspec is not None and callspec.params.get("stream_backend") == "kafka")
        if uses_broker:
            item.add_marker(pytest.mark.kafka)


# --- fault injection: the table of injections tried and invariants held (tests/faults) -----------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Moves what the test recorded onto its report, so the table is whole under pytest-xdist too."""
    from tests.faults.record import take_pending

    report = yield
    report.user_properties.extend(take_pending())
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    from tests.faults.record import collect

    collect(report.user_properties)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.faults.record import RESULTS, render

    if RESULTS:
        terminalreporter.write_line(render())
