"""Session 53: the decoding process's work (`prepare_encoded`) in one process, CPU us an event.

Ten distinct batches of 10,000 bench events (1 in 10 an order), cycled REPS times (env, default 20), run
from the tree to measure (`cd <tree> && REPS=5 python decoder_loop.py`).
"""

import os
import sys
import time

sys.path.insert(0, os.getcwd())

from datetime import UTC, datetime  # noqa: E402

from bench.bench_stream import event_messages  # noqa: E402
from notify_core.events.consumer import prepare_encoded, record_columns  # noqa: E402
from notify_core.gc_tuning import tune_gc_for_throughput  # noqa: E402
from notify_core.store import tables  # noqa: E402
from notify_core.store.sqlite import encode_rows  # noqa: E402
from notify_core.stream.port import Record  # noqa: E402

tune_gc_for_throughput()
N = 10_000
batches = []
for b in range(10):
    messages = event_messages(b * N, N, run="x")
    batches.append(record_columns([Record(m.topic, 0, i, m.key, m.value, 0, m.headers)
                                   for i, m in enumerate(messages)]))
encoders = ((encode_rows, tables.PURCHASES), (encode_rows, tables.USER_EVENTS), (encode_rows, tables.EVENTS))
now = datetime.now(UTC)
reps = int(os.environ.get("REPS", "20"))
started = time.process_time()
for _ in range(reps):
    for columns in batches:
        prepare_encoded(columns, encoders, True, now)
print("us/ev", (time.process_time() - started) / (reps * 10 * N) * 1e6)
