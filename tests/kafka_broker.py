"""A real Kafka-protocol broker for tests and benchmarks, started as its own process.

librdkafka (bundled by confluent-kafka) contains a mock cluster that speaks the Kafka wire protocol:
produce, fetch, consumer groups, committed offsets, watermarks. A client with ``test.mock.num.brokers``
starts one *inside* itself, which other processes cannot reach; here we call the C API through ctypes
(``rd_kafka_mock_cluster_new`` + ``rd_kafka_mock_cluster_bootstraps``) in a dedicated process, so the
gateway, a consumer subprocess that a test kills with SIGKILL, and the test itself all talk to one
broker over 127.0.0.1, as they would to a real Kafka.

Run ``python -m tests.kafka_broker --topic purchase_history:4`` (any number of ``--topic``): it prints
``BOOTSTRAP host:port`` on stdout and serves until its stdin closes or it gets SIGTERM, so a parent that
dies takes the broker with it. :func:`start_broker` does that for fixtures.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.servers import stop_process


def _librdkafka() -> ctypes.CDLL:
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    candidates = sorted(glob.glob(str(libs / "librdkafka*.so*")))
    if not candidates:
        raise RuntimeError(f"no bundled librdkafka under {libs}")
    lib = ctypes.CDLL(candidates[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_broker_set_down.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_mock_broker_set_up.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    return lib


def serve(topics: Sequence[tuple[str, int]], *, brokers: int = 1) -> None:
    """Start the mock cluster, print its address, block until stdin closes or SIGTERM."""
    lib = _librdkafka()
    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    handle = lib.rd_kafka_new(0, conf, errstr, len(errstr))  # RD_KAFKA_PRODUCER
    if not handle:
        raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
    cluster = lib.rd_kafka_mock_cluster_new(handle, brokers)
    if not cluster:
        raise RuntimeError("rd_kafka_mock_cluster_new failed")
    # The default 3 s initial rebalance delay only slows every consumer start in tests.
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0)
    for name, partitions in topics:
        err = lib.rd_kafka_mock_topic_create(cluster, name.encode(), partitions, 1)
        if err:
            raise RuntimeError(f"could not create topic {name}: error {err}")
    bootstrap = lib.rd_kafka_mock_cluster_bootstraps(cluster).decode()
    print(f"BOOTSTRAP {bootstrap}", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    # Fault injection (tests/faults): SIGUSR1 takes every broker down (connections closed, requests
    # refused), SIGUSR2 brings them back, the topics and committed offsets intact, as a restarted broker.
    ids = range(1, brokers + 1)
    signal.signal(signal.SIGUSR1, lambda *_: [lib.rd_kafka_mock_broker_set_down(cluster, b) for b in ids])
    signal.signal(signal.SIGUSR2, lambda *_: [lib.rd_kafka_mock_broker_set_up(cluster, b) for b in ids])

    def watch_stdin() -> None:
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not done.wait(0.5):
        pass
    os._exit(0)  # skip destroying the cluster: its threads may still hold client connections


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_process(self.process)

    def down(self) -> None:
        """Every broker of the cluster goes down (see ``serve``); :meth:`up` brings them back."""
        self.process.send_signal(signal.SIGUSR1)

    def up(self) -> None:
        self.process.send_signal(signal.SIGUSR2)


def start_broker(topics: Sequence[tuple[str, int]] = (), *, timeout: float = 20.0) -> Broker:
    args = [sys.executable, "-m", "tests.kafka_broker"]
    for name, partitions in topics:
        args += ["--topic", f"{name}:{partitions}"]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(args, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    result: list[str] = []

    def read_line() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline().decode())

    reader = threading.Thread(target=read_line, daemon=True)
    reader.start()
    reader.join(timeout)
    line = result[0] if result else ""
    if not line.startswith("BOOTSTRAP "):
        proc.kill()
        raise RuntimeError(f"Kafka mock broker did not start (got {line!r})")
    return Broker(bootstrap=line.split()[1], process=proc)


@contextlib.contextmanager
def running_broker(topics: Sequence[tuple[str, int]] = ()) -> Iterator[Broker]:
    broker = start_broker(topics)
    try:
        yield broker
    finally:
        broker.stop()


def _parse_topic(text: str) -> tuple[str, int]:
    name, _, parts = text.partition(":")
    return name, int(parts or 4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", action="append", default=[], type=_parse_topic)
    parser.add_argument("--brokers", type=int, default=1)
    ns = parser.parse_args()
    serve(ns.topic, brokers=ns.brokers)
