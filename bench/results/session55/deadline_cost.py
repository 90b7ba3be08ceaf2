"""A request's deadlines on uvloop: asyncio.timeout_at and its reschedule, against notify's Deadlines (two
sets and a clear). Run from the repository root: ``python bench/results/session55/deadline_cost.py``."""

import asyncio
import os
import sys
import time

import uvloop

sys.path.insert(0, os.getcwd())

from notify_core.delivery.ahttp1 import deadlines_of  # noqa: E402

N = 200_000


async def main() -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    keeper = deadlines_of(loop)
    for _ in range(3):
        started = time.process_time()
        for _ in range(N):
            now = loop.time()
            async with asyncio.timeout_at(now + 5) as deadline:
                deadline.reschedule(now + 15)
        timer = (time.process_time() - started) / N * 1e6
        started = time.process_time()
        for _ in range(N):
            now = loop.time()
            deadlines_of(loop)
            task.cancelling()
            keeper.set(task, now + 5)
            keeper.set(task, now + 15)
            keeper.clear(task)
        shared = (time.process_time() - started) / N * 1e6
        print(f"timeout_at+reschedule {timer:.2f} us, Deadlines {shared:.2f} us")


uvloop.run(main())
