"""Convergence of batch ingestion: kill -9 or a full disk mid-run, then a re-run: the Store equals a clean run's.

Each test compares per-table (count, digest) of the ingested Store tables with a clean in-process
ingestion of the same landing files; the interrupted runs are real ``notify ingest`` subprocesses.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notify_core.convergence import table_digest
from notify_core.features import refresh_features
from notify_core.ingest.batch import DATASETS, ingest_dataset
from notify_core.lake import Lake
from notify_core.repositories import WriteCounts
from notify_core.sources.demo import prepare_demo_landing
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.retail_fixture import generated_retail
from tests.small_disk import small_disk

REPO = Path(__file__).resolve().parents[2]
INVOICES = 9_000  # ~40k purchase lines: a Store write of several seconds here, long enough to be interrupted


def _digests(store_path: Path, names: tuple[str, ...] = DATASETS) -> dict[str, tuple[int, str]]:
    store = SqliteStore(store_path)
    try:
        return {name: table_digest(store, name) for name in names}
    finally:
        store.close()


def _ingest_in_process(data_dir: Path) -> None:
    store = SqliteStore(data_dir / "store.sqlite")
    try:
        for dataset in DATASETS:
            ingest_dataset(dataset, landing=data_dir / "landing", lake=Lake(data_dir / "lake"), store=store,
                           quarantine=data_dir / "quarantine")
    finally:
        store.close()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("convergence")
    source = generated_retail(root / "retail.parquet", invoices=INVOICES)
    clean = root / "clean"
    prepare_demo_landing(source=source, landing=clean / "landing", seed=1)
    _ingest_in_process(clean)
    return {"source": source, "clean": _digests(clean / "store.sqlite")}


def _notify_ingest(data_dir: Path, source: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["NOTIFY_SOURCE_DATA"] = str(source)
    return subprocess.Popen([sys.executable, "-m", "notify_cli.main", "ingest", "--data-dir", str(data_dir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _purchases_in_store(store_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=0.2) as conn:
            return int(conn.execute('SELECT count(*) FROM "purchases"').fetchone()[0])
    except sqlite3.Error:
        return 0


def _leftover_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and ".tmp" in p.name]


def test_kill_9_mid_ingestion_then_rerun_equals_a_clean_run(tmp_path: Path, sample: dict[str, object]) -> None:
    source, clean = sample["source"], sample["clean"]
    assert isinstance(source, Path) and isinstance(clean, dict)
    total = clean[tables.PURCHASES][0]
    data = tmp_path / "data"
    prepare_demo_landing(source=source, landing=data / "landing", seed=1)
    proc = _notify_ingest(data, source)
    deadline = time.monotonic() + 240
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = _purchases_in_store(data / "store.sqlite")
        if seen > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = _purchases_in_store(data / "store.sqlite")
    print(f"\nkilled with {killed_at} of {total} purchases in the Store")
    assert 0 < killed_at < total, "the kill should land mid-way through the purchases Store write"

    rerun = _notify_ingest(data, source)
    output = rerun.communicate(timeout=600)[0].decode()
    assert rerun.returncode == 0, output
    assert _digests(data / "store.sqlite") == clean
    assert _leftover_temporaries(data) == []


def _folder_kib(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


def test_full_disk_mid_ingestion_then_free_space_and_rerun(tmp_path: Path, sample: dict[str, object]) -> None:
    """A real full disk (a small tmpfs as the data directory; needs root), then more space and a re-run."""
    source, clean = sample["source"], sample["clean"]
    assert isinstance(source, Path) and isinstance(clean, dict)
    staging = tmp_path / "staging"
    prepare_demo_landing(source=source, landing=staging / "landing", seed=1)
    landing_kib = _folder_kib(staging)
    data = tmp_path / "data"
    # Room for the landing files and the first part of the Store only (the clean Store is ~10x that).
    with small_disk(data, landing_kib + 2048) as resize:
        prepare_demo_landing(source=source, landing=data / "landing", seed=1)
        first = _notify_ingest(data, source)
        output = first.communicate(timeout=600)[0].decode()
        assert first.returncode != 0, output
        partial = _purchases_in_store(data / "store.sqlite")
        print(f"\nfull disk: run failed with {partial} of {clean[tables.PURCHASES][0]} purchases in the Store")
        assert _leftover_temporaries(data) == []

        resize(262144)  # space freed
        rerun = _notify_ingest(data, source)
        output = rerun.communicate(timeout=600)[0].decode()
        assert rerun.returncode == 0, output
        assert _digests(data / "store.sqlite") == clean
        assert _leftover_temporaries(data) == []


def test_injected_enospc_in_the_lake_write_then_rerun(tmp_path: Path, sample: dict[str, object],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raised by the Parquet writer part-way through the lake commit (no root needed)."""
    source, clean = sample["source"], sample["clean"]
    assert isinstance(source, Path) and isinstance(clean, dict)
    prepare_demo_landing(source=source, landing=tmp_path / "landing", seed=1)
    import polars as pl

    real_write = pl.DataFrame.write_parquet
    calls = {"n": 0}

    def full_disk(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            Path(str(file)).write_bytes(b"PAR1 half")  # a partial temporary, as a real full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full_disk)
    with pytest.raises(OSError):
        _ingest_in_process(tmp_path)
    assert _leftover_temporaries(tmp_path / "lake") == []
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    _ingest_in_process(tmp_path)
    assert _digests(tmp_path / "store.sqlite") == clean


def test_wiped_store_is_repaired_and_tampering_is_repaired_by_a_full_sync(
        tmp_path: Path, sample: dict[str, object]) -> None:
    source, clean = sample["source"], sample["clean"]
    assert isinstance(source, Path) and isinstance(clean, dict)
    prepare_demo_landing(source=source, landing=tmp_path / "landing", seed=1)
    _ingest_in_process(tmp_path)
    for path in tmp_path.glob("store.sqlite*"):  # the Store is lost; the lake says every row landed
        path.unlink()
    _ingest_in_process(tmp_path)
    assert _digests(tmp_path / "store.sqlite") == clean

    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        purchases = store.table(tables.PURCHASES)  # rows deleted behind the ledger's back
        for n, item in enumerate(list(purchases.scan())):
            if n % 3 == 0:
                purchases.delete(item["pk"], item["sk"])
        report = ingest_dataset("purchases", landing=tmp_path / "landing", lake=Lake(tmp_path / "lake"), store=store,
                                quarantine=tmp_path / "quarantine", full_store_sync=True)
        assert report.store.inserted > 0
    finally:
        store.close()
    assert _digests(tmp_path / "store.sqlite") == clean


def test_features_converge_after_an_interrupted_store_write(tmp_path: Path, sample: dict[str, object],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    source = sample["source"]
    assert isinstance(source, Path)
    prepare_demo_landing(source=source, landing=tmp_path / "landing", seed=1)
    _ingest_in_process(tmp_path)
    lake, names = Lake(tmp_path / "lake"), (tables.USER_FEATURES, tables.PRODUCT_FEATURES, tables.USER_PRODUCT)
    reference = tmp_path / "reference.sqlite"
    ref_store = SqliteStore(reference)
    refresh_features(lake, ref_store)
    ref_store.close()

    import notify_core.convergence as convergence

    real_save = convergence.save_frame
    calls = {"n": 0}

    def dies_mid_way(store: SqliteStore, name: str, frame: object) -> WriteCounts:
        calls["n"] += 1
        if name == tables.USER_PRODUCT:
            real_save(store, name, frame.head(frame.height // 2))  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(store, name, frame)  # type: ignore[arg-type]

    lake2 = Lake(tmp_path / "lake2")
    for dataset in DATASETS:
        lake2.merge(dataset, lake.read(dataset))
    store = SqliteStore(tmp_path / "features.sqlite")
    monkeypatch.setattr(convergence, "save_frame", dies_mid_way)
    with pytest.raises(OSError):
        refresh_features(lake2, store, as_of=None)
    monkeypatch.setattr(convergence, "save_frame", real_save)
    refresh_features(lake2, store)
    store.close()
    assert _digests(tmp_path / "features.sqlite", names) == _digests(reference, names)


def test_a_feature_row_that_left_the_lake_table_leaves_the_store(tmp_path: Path, sample: dict[str, object]) -> None:
    """A purchase moved to another user: the old user-product row goes from the Store too, not only the lake."""
    import polars as pl

    source = sample["source"]
    assert isinstance(source, Path)
    prepare_demo_landing(source=source, landing=tmp_path / "landing", seed=1)
    _ingest_in_process(tmp_path)
    lake, store = Lake(tmp_path / "lake"), SqliteStore(tmp_path / "store.sqlite")
    try:
        refresh_features(lake, store)
        matrix = lake.read_table(tables.USER_PRODUCT)
        lonely = matrix.filter(pl.col("orders") == 1).row(0, named=True) if "orders" in matrix.columns \
            else matrix.row(0, named=True)
        line = lake.read("purchases").filter((pl.col("user_id") == lonely["user_id"])
                                             & (pl.col("product_id") == lonely["product_id"]))
        lake.merge("purchases", line.with_columns(pl.lit("another-user").alias("user_id")))
        refresh_features(lake, store)
        matrix_after = lake.read_table(tables.USER_PRODUCT)
        gone = matrix_after.filter((pl.col("user_id") == lonely["user_id"])
                                   & (pl.col("product_id") == lonely["product_id"])).is_empty()
        held = store.table(tables.USER_PRODUCT).get(lonely["user_id"], lonely["product_id"])
        assert gone == (held is None)
        assert table_digest(store, tables.USER_PRODUCT)[0] == matrix_after.height
    finally:
        store.close()
