"""A fast loopback webhook receiver: the webhook channel's offline counterpart (tests, benchmark, demo).

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies only) that records, per request, the
receive time, the ``Idempotency-Key`` and the status it answered; optionally verifies the HMAC signature
and fails a seeded random fraction of requests with 503 (or 400 for permanent failures). It is much
cheaper per request than a framework server, so on a 2-core machine the benchmark measures the worker,
not the sink. Records are appended to a JSONL file every ``flush_s`` and at exit (SIGTERM/SIGINT).

Run: ``python -m notify_core.delivery.sink --port 0 --out receipts.jsonl [--fail-rate 0.05] [--secret s]``;
it prints ``{"port": N}`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from notify_core.clock import Clock, starting_at
from notify_core.delivery.channels import verify_signature


class Sink:
    def __init__(self, *, out: Path, fail_rate: float = 0.0, permanent_rate: float = 0.0, secret: str | None = None,
                 clock: Clock, seed: int = 7, delay_s: float = 0.0, flush_s: float = 0.5) -> None:
        self.out = out
        self.clock = clock
        self.fail_rate = fail_rate
        self.permanent_rate = permanent_rate
        self.secret = secret
        self.rng = random.Random(seed)
        self.delay_s = delay_s
        self.flush_s = flush_s
        self.records: list[tuple[float, str, int, int]] = []  # (received, key, status, signature ok)
        self._written = 0

    def flush(self) -> None:
        new = self.records[self._written:]
        if not new:
            return
        with self.out.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps({"t": t, "key": k, "status": s, "sig": g}) + "\n" for t, k, s, g in new))
        self._written += len(new)

    def decide(self) -> int:
        r = self.rng.random()
        if r < self.fail_rate:
            return 503
        if r < self.fail_rate + self.permanent_rate:
            return 400
        return 200

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = self.clock.now()
                headers: dict[str, str] = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name:
                        headers[name.strip().lower().decode()] = value.strip().decode()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                sig_ok = 1
                if self.secret is not None:
                    sig_ok = int(verify_signature(self.secret, body, timestamp=headers.get("x-notify-timestamp", ""),
                                                  signature=headers.get("x-notify-signature", ""),
                                                  now=received))
                status = self.decide() if sig_ok else 401
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.records.append((received, headers.get("idempotency-key", ""), status, sig_ok))
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 503: "Service Unavailable"}[status]
                writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n".encode())
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(self, host: str, port: int) -> None:
        server = await asyncio.start_server(self.handle, host, port, backlog=2048)
        bound = server.sockets[0].getsockname()[1]
        print(json.dumps({"port": bound}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.flush_s)
                self.flush()
        self.flush()


def read_receipts(path: Path | str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--permanent-rate", type=float, default=0.0)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--clock-start", type=datetime.fromisoformat, default=None,
                        help="start the sink's clock here (signature timestamps are checked against it)")
    args = parser.parse_args(argv)
    sink = Sink(out=args.out, fail_rate=args.fail_rate, permanent_rate=args.permanent_rate, secret=args.secret,
                seed=args.seed, delay_s=args.delay, clock=starting_at(args.clock_start))
    try:
        import uvloop  # optional: faster, when installed

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(sink.serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
