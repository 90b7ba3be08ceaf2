"""A C load generator (``wrk``) for the HTTP benchmarks, and the CPU split between server and generator.

The Python closed loop (:func:`bench.bench_recommend.closed_loop`) runs on the same two cores as the
server's workers and costs ~50 us of Python a request: at a few thousand req/s it takes most of a core
the workers need, so it measures itself as much as the server. ``wrk`` (Debian package ``wrk``, 4.1.0,
installed by scripts/setup.sh) costs a few us a request. A Lua script rotates through the request paths
(every user in the benchmark's shuffled order, each ``wrk`` thread at its own offset) and sends the API
key. ``wrk`` 4.1 has no open loop (that is wrk2), so open-loop figures stay with the Python generator;
every figure says which generator produced it.

:func:`cpu_seconds` reads user+system CPU time of processes from ``/proc``: sampled before and after a
phase, it says how the two cores were shared (server workers vs the generator vs everyone else).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_SCRIPT = r"""
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local key = os.getenv("WRK_KEY")
if key and #key > 0 then wrk.headers["X-API-Key"] = key end
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  i = (id or 0) * 7919
  non2xx = 0
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non200": %d, "socket_errors": %d, "p50_us": %d, "p90_us": %d,' ..
    ' "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, bad, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def available() -> bool:
    """Whether ``wrk`` is on the PATH (scripts/setup.sh installs it where apt-get can)."""
    return shutil.which("wrk") is not None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the forked uvicorn workers of ``notify serve --workers N``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those gone count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / tick


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (every process: the other engineers' load too)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(x) for x in fields]
    busy = sum(values) - values[3] - values[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def closed_loop(port: int, paths: list[str], *, api_key: str, connections: int, seconds: float,
                threads: int = 1, server_pid: int | None = None) -> dict[str, Any]:
    """``wrk`` with ``connections`` keep-alive connections for ``seconds`` over ``paths`` (rotated).

    Returns the keys of the Python closed loop (``rps`` of 200 answers, ``errors``, ``p50``/``p99`` ms) plus
    ``generator: "wrk"`` and, when ``server_pid`` is given, the CPU split over the phase: cores used by the
    server's workers, by wrk, and by everything else on the machine.
    """
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        listing = Path(tmp) / "paths.txt"
        listing.write_text("\n".join(paths) + "\n")
        script = Path(tmp) / "rotate.lua"
        script.write_text(_SCRIPT)
        env = {**os.environ, "WRK_PATHS": str(listing), "WRK_KEY": api_key}
        servers = ([server_pid, *children(server_pid)] if server_pid else [])
        before_server, before_all = cpu_seconds(servers), machine_cpu_seconds()
        before_children = os.times().children_user + os.times().children_system
        proc = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
                                 "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall_started = os.times().elapsed
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        wall = os.times().elapsed - wall_started
        # wrk has exited: its CPU time is in our children's totals
        gen_cpu = os.times().children_user + os.times().children_system - before_children
    line = next((x for x in reversed(out.splitlines()) if x.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    got = json.loads(line)
    duration = got["duration_us"] / 1e6
    ok = got["requests"] - got["non200"]
    result: dict[str, Any] = {
        "generator": "wrk", "rps": ok / duration, "errors": got["non200"] + got["socket_errors"],
        "p50": got["p50_us"] / 1000, "p90": got["p90_us"] / 1000, "p99": got["p99_us"] / 1000,
        "max": got["max_us"] / 1000, "requests": got["requests"], "connections": connections, "threads": threads,
    }
    if server_pid:
        server_cpu = cpu_seconds(servers) - before_server
        all_cpu = machine_cpu_seconds() - before_all
        result["cpu_cores"] = {"server_workers": server_cpu / wall, "generator": gen_cpu / wall,
                               "everything_else": max(0.0, all_cpu - server_cpu - gen_cpu) / wall,
                               "wall_s": wall, "server_cpu_ms_per_request": server_cpu * 1000 / max(1, got["requests"])}
    return result
