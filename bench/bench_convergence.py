"""The issue-13 reproductions on the full Online Retail file: kill -9 and a full disk during `notify ingest`.

Each scenario interrupts a real `notify ingest` subprocess, re-runs it once, and counts the purchases
the Store holds against what the lake says landed (394,935 lines with a customer on the shipped file),
plus any temporary file left behind. Before issue 13 the Store kept 128,559 (kill) and 40,000 (full
disk, a 30 MB tmpfs) of them for good. The full-disk scenario mounts a tmpfs and needs root.

    .venv/bin/python -m bench.bench_convergence [--source PATH] [--kill-at 100000] [--tmpfs-mb 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from bench.common import report
from notify_core.sources.demo import prepare_demo_landing

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO / "../shared/data/online_retail/online_retail.parquet"


def _ingest(data: Path, source: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"NOTIFY_SOURCE_DATA": str(source)}
    return subprocess.Popen([sys.executable, "-m", "notify_cli.main", "ingest", "--data-dir", str(data)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _store_purchases(data: Path) -> int:
    try:
        with sqlite3.connect(f"file:{data / 'store.sqlite'}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute('SELECT count(*) FROM "purchases"').fetchone()[0])
    except sqlite3.Error:
        return 0


def _lake_purchases(data: Path) -> int:
    files = list((data / "lake" / "purchases").glob("*/data.parquet"))
    if not files:
        return 0
    lines = pl.scan_parquet([str(f) for f in files]).filter(pl.col("user_id").is_not_null())
    return int(lines.select(pl.len()).collect().item())


def _temporaries(data: Path) -> int:
    return sum(1 for p in data.rglob("*") if p.is_file() and ".tmp" in p.name)


def kill_scenario(root: Path, source: Path, *, kill_at: int) -> dict[str, Any]:
    data = root / "kill"
    prepare_demo_landing(source=source, landing=data / "landing", seed=7)
    proc = _ingest(data, source)
    while proc.poll() is None and _store_purchases(data) < kill_at:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _store_purchases(data)
    started = time.perf_counter()
    rerun = _ingest(data, source)
    rerun.wait()
    return {"scenario": "kill -9 mid-ingestion, one re-run", "store_at_failure": at_kill,
            "rerun_exit": rerun.returncode, "rerun_s": round(time.perf_counter() - started, 1),
            "store_after_rerun": _store_purchases(data), "lake_purchases": _lake_purchases(data),
            "tmp_files": _temporaries(data)}


def full_disk_scenario(root: Path, source: Path, *, tmpfs_mb: int) -> dict[str, Any]:
    data = root / "disk"
    data.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_mb}m,mode=0700", "tmpfs", str(data)]).returncode == 0
    if not mounted:
        return {"scenario": "full disk", "skipped": "mounting a tmpfs needs root"}
    try:
        prepare_demo_landing(source=source, landing=data / "landing", seed=7)
        first = _ingest(data, source)
        first.wait()
        at_failure, tmp_at_failure = _store_purchases(data), _temporaries(data)
        subprocess.run(["mount", "-o", "remount,size=2048m", str(data)], check=True)
        started = time.perf_counter()
        rerun = _ingest(data, source)
        rerun.wait()
        return {"scenario": f"full disk ({tmpfs_mb} MB tmpfs), space freed, one re-run", "first_exit": first.returncode,
                "store_at_failure": at_failure, "tmp_files_at_failure": tmp_at_failure,
                "rerun_exit": rerun.returncode, "rerun_s": round(time.perf_counter() - started, 1),
                "store_after_rerun": _store_purchases(data), "lake_purchases": _lake_purchases(data),
                "tmp_files": _temporaries(data)}
    finally:
        subprocess.run(["umount", "-l", str(data)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--kill-at", type=int, default=100_000, help="purchases in the Store when killed")
    parser.add_argument("--tmpfs-mb", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notify-convergence-") as tmp:
        rows = [kill_scenario(Path(tmp), args.source.resolve(), kill_at=args.kill_at),
                full_disk_scenario(Path(tmp), args.source.resolve(), tmpfs_mb=args.tmpfs_mb)]
    columns = ["scenario", "store_at_failure", "store_after_rerun", "lake_purchases", "tmp_files", "rerun_s"]
    report("convergence", "Interrupted ingestion, then one re-run (full Online Retail file)", columns,
           [[r.get(c, "") for c in columns] for r in rows], {"scenarios": rows})


if __name__ == "__main__":
    main()
