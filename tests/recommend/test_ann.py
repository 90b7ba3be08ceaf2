"""The ANN port's two adapters (faiss IVF, usearch HNSW) above the exhaustive-search size, and the build's
effort tuning: the same contract for both, checked against exact numpy search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from notify_core.recommend.ann import EFFORT_LADDER, EXACT_BELOW, HnswIndex, IvfIndex, Kind, default_lists, unit_rows
from notify_core.recommend.index import (
    IndexOptions,
    Manifest,
    RecallReference,
    build_index,
    campaign_keys,
    exact_top_k,
    recall_at_k,
    tune_effort,
)

N = EXACT_BELOW + 5_000  # above the exhaustive size: the real IVF lists / HNSW graph are searched
DIM = 32


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """25k unit vectors in 200 clusters, and 300 queries that mix two clusters (like user vectors)."""
    rng = np.random.default_rng(3)
    centres = unit_rows(rng.standard_normal((200, DIM)))
    own = rng.integers(0, 200, N)
    base = unit_rows(centres[own] + 0.35 * rng.standard_normal((N, DIM)))
    a, b = rng.integers(0, 200, (2, 300))
    queries = unit_rows(centres[a] + 0.5 * centres[b] + 0.3 * rng.standard_normal((300, DIM)))
    return base, queries


@pytest.fixture(scope="module", params=["ivf", "hnsw"])
def built(request: pytest.FixtureRequest, clustered: tuple[np.ndarray, np.ndarray]) -> tuple[Kind, object]:
    base, _ = clustered
    ids = [f"c{i:05d}" for i in range(N)]
    return request.param, build_index(ids, base, options=IndexOptions(kind=request.param, threads=2))


def test_search_answers_rows_with_their_exact_cosines_best_first(built: tuple[Kind, object],
                                                                 clustered: tuple[np.ndarray, np.ndarray]) -> None:
    kind, index = built
    base, queries = clustered
    assert index.kind == kind and index.size == N and index.dim == DIM and not index.exact  # type: ignore[attr-defined]
    found = index.search(queries[:20], 10)  # type: ignore[attr-defined]
    assert found.rows.shape == (20, 10) and (found.rows >= 0).all() and (found.rows < N).all()
    for q, rows, sims in zip(queries[:20], found.rows, found.similarities, strict=True):
        assert np.allclose(sims, base[rows] @ q, atol=2e-3)  # f16 storage
        assert (np.diff(sims) <= 1e-6).all()
        assert len(set(rows.tolist())) == 10


def test_tuned_effort_reaches_the_recall_target_and_is_the_cheapest(built: tuple[Kind, object],
                                                                    clustered: tuple[np.ndarray, np.ndarray]) -> None:
    kind, index = built
    base, queries = clustered
    reference = RecallReference.of(base, queries, k=10)
    effort, recall = tune_effort(index, reference, target=0.95)  # type: ignore[arg-type]
    assert recall >= 0.95
    cheaper = [e for e in EFFORT_LADDER[kind] if e < effort]
    if cheaper:  # the effort just below did not reach the target
        index.set_effort(cheaper[-1])  # type: ignore[attr-defined]
        assert recall_at_k(index, reference) < 0.95  # type: ignore[arg-type]
    index.set_effort(effort)  # type: ignore[attr-defined]
    exact = exact_top_k(base, queries, 10)
    found = index.search(queries, 10).rows  # type: ignore[attr-defined]
    strict = np.mean([len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)])
    assert strict >= 0.9  # tie tolerance aside, the answers are the exact ones


def test_vectors_by_row_and_a_saved_index_answers_the_same(built: tuple[Kind, object], tmp_path: Path,
                                                           clustered: tuple[np.ndarray, np.ndarray]) -> None:
    kind, index = built
    base, queries = clustered
    rows = np.array([0, 17, N - 1], dtype=np.int64)
    assert np.allclose(index.vectors(rows), base[rows], atol=2e-3)  # type: ignore[attr-defined]
    path = tmp_path / "index.bin"
    index.save(path)  # type: ignore[attr-defined]
    if kind == "ivf":
        loaded = IvfIndex.load(path)
    else:
        loaded = HnswIndex.load(path, keys=campaign_keys([f"c{i:05d}" for i in range(N)]), view=True)
    loaded.set_effort(64)
    index.set_effort(64)  # type: ignore[attr-defined]
    assert (loaded.search(queries[:30], 10).rows == index.search(queries[:30], 10).rows).all()  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_small_indexes_are_exact_and_pad_short_answers(kind: Kind) -> None:
    rng = np.random.default_rng(1)
    base = unit_rows(rng.standard_normal((5, 8)))
    index = build_index([f"c{i}" for i in range(5)], base, options=IndexOptions(kind=kind))
    assert index.exact
    found = index.search(base[2], 8)
    assert found.rows.shape == (1, 5) and found.rows[0, 0] == 2  # k is capped at the size
    assert sorted(found.rows[0].tolist()) == [0, 1, 2, 3, 4]
    empty = build_index([], np.zeros((0, 8), dtype=np.float32), options=IndexOptions(kind=kind))
    assert empty.size == 0 and (empty.search(base[0], 3).rows == -1).all()


def test_ivf_list_count_grows_with_the_square_root() -> None:
    assert default_lists(200_000) == 894 and default_lists(25_000) == 316
    assert default_lists(1_000) == 25  # never under ~39 vectors per list: k-means needs them


def test_manifests_of_the_first_format_still_load() -> None:
    legacy = {"version": "v1", "size": 3, "dim": 8, "dtype": "f16", "connectivity": 16, "expansion_add": 128,
              "expansion_search": 256, "model": "m", "built_at": "2024-01-01", "build_seconds": 1.0,
              "recall_at_10": 0.99, "recall_queries": 10, "recall_passed": True, "extra": {}, "future_field": 1}
    manifest = Manifest.from_json(json.dumps(legacy).encode())
    assert manifest.kind == "hnsw" and manifest.search_effort == 256
    assert manifest.params == {"connectivity": 16, "expansion_add": 128}
    assert manifest.extra["unknown"] == {"future_field": 1} and manifest.recall_passed is True


def test_the_exact_index_gives_its_stored_vectors_bit_for_bit_by_a_read_only_view() -> None:
    """The exact (flat) index answers ``vectors`` from a zero-copy view of its storage: the same floats
    as faiss's own ``reconstruct_batch``, read-only, and still right after the index grows."""
    rng = np.random.default_rng(5)
    index = IvfIndex.build(rng.normal(size=(50, 16)).astype(np.float32))
    assert index.exact
    rows = np.array([0, 7, 7, 49, 3], dtype=np.int64)
    expected = np.asarray(index._index.reconstruct_batch(rows), dtype=np.float32)
    got = index.vectors(rows)
    assert got.tobytes() == expected.tobytes()
    view = index._flat_vectors()
    assert view is not None and not view.flags.writeable
    index._index.add(unit_rows(rng.normal(size=(30, 16)).astype(np.float32)))  # storage may move
    rows = np.array([1, 60, 79], dtype=np.int64)
    assert index.vectors(rows).tobytes() == np.asarray(index._index.reconstruct_batch(rows)).tobytes()
    assert index.vectors(np.zeros(0, dtype=np.int64)).shape == (0, 16)
