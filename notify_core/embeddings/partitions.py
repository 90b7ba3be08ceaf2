"""Cheap change detection for partitioned lake datasets: a fingerprint per partition file.

The lake rewrites a partition only when its rows changed (``Lake.merge``), so a partition whose file
size and modification time are the same as last run holds the same rows, and the order refresh does
not read it. This only saves reads: content hashes still decide what is re-embedded, so a partition
rewritten with identical rows is read, hashed, and found unchanged.
"""

from __future__ import annotations

from pathlib import Path

from notify_core.lake import Lake

DATA_FILE = "data.parquet"


def partition_fingerprints(lake: Lake, dataset: str) -> dict[str, str]:
    """``{partition: "<size>:<mtime ns>"}`` for each partition of ``dataset`` (local folder or S3)."""
    names = lake.partitions(dataset)
    if not names:
        return {}
    if lake.root.startswith("s3://"):
        s3, root = lake.s3_filesystem()  # honours the endpoint setting (SeaweedFS, MinIO)
        infos = s3.get_file_info([f"{root}/{dataset}/{name}/{DATA_FILE}" for name in names])
        return {name: f"{info.size}:{info.mtime_ns}" for name, info in zip(names, infos, strict=True)}
    result: dict[str, str] = {}
    for name in names:
        stat = Path(lake.root, dataset, name, DATA_FILE).stat()
        result[name] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return result
