"""The embedding checks, as plain functions: the Dagster asset checks call these and report them.

Per entity type: the dimension is the model's, every vector has unit norm, no vector holds a NaN,
there is exactly one vector per upstream entity (no missing, no extra, no duplicate), and what the Store
returns (strongly consistent read) equals what was computed. The per-vector rules run as one
great-expectations suite over a small frame of per-vector facts (id, dim, norm, NaN count), so a
failure names the offending ids.

They run on the computed vectors BEFORE anything is persisted: a run whose vectors fail is not
written, and the last good vectors stay served.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from notify_core.embeddings.embedder import Vectors
from notify_core.embeddings.store import load_embeddings
from notify_core.store.port import Store

DIMENSION = "dimension"
UNIT_NORM = "unit_norm"
NO_NAN = "no_nan"
ONE_PER_ENTITY = "one_vector_per_entity"
STORE_ROUND_TRIP = "store_round_trip"
CHECK_NAMES = (DIMENSION, UNIT_NORM, NO_NAN, ONE_PER_ENTITY, STORE_ROUND_TRIP)
NORM_TOLERANCE = 1e-3
_SHOWN = 10


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def _ge_failures(facts: pl.DataFrame, *, dim: int) -> dict[str, list[str]]:
    """Run the per-vector suite with great-expectations; the failing ids per check name."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    frame = facts.to_pandas(use_pyarrow_extension_array=False)
    batch = (
        context.data_sources.add_pandas("embeddings").add_dataframe_asset("vectors")
        .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="embedding_vectors")
    ex: Any = gx.expectations  # not re-exported for type checkers
    suite.add_expectation(ex.ExpectColumnValuesToBeInSet(column="dim", value_set=[dim],
                                                                      meta={"check": DIMENSION}))
    suite.add_expectation(ex.ExpectColumnValuesToBeBetween(
        column="norm", min_value=1 - NORM_TOLERANCE, max_value=1 + NORM_TOLERANCE, meta={"check": UNIT_NORM}))
    suite.add_expectation(ex.ExpectColumnValuesToNotBeNull(column="norm", meta={"check": UNIT_NORM}))
    suite.add_expectation(ex.ExpectColumnValuesToBeInSet(column="nan_count", value_set=[0],
                                                                      meta={"check": NO_NAN}))
    suite.add_expectation(ex.ExpectColumnValuesToBeUnique(column="id", meta={"check": ONE_PER_ENTITY}))
    outcome = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    failures: dict[str, list[str]] = {}
    ids = facts["id"].to_list()
    for result in outcome.results:
        if result.success:
            continue
        config = result.expectation_config
        name = str((config.meta or {}).get("check", "unknown")) if config is not None else "unknown"
        indices = result.result.get("unexpected_index_list") or []
        rows = [int(i["index"] if isinstance(i, dict) else i) for i in indices]
        failures.setdefault(name, []).extend([ids[r] for r in rows] or ["<unknown>"])
    return failures


def vector_checks(
    ids: Sequence[str], vectors: Vectors, *, dim: int, expected_ids: Collection[str],
) -> list[CheckOutcome]:
    """Dimension, unit norm, no NaN and one vector per upstream entity, on computed vectors."""
    width = int(vectors.shape[1]) if vectors.ndim == 2 else -1
    with np.errstate(invalid="ignore"):
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1) if len(ids) else np.zeros(0)
    facts = pl.DataFrame({
        "id": list(ids),
        "dim": np.full(len(ids), width, dtype=np.int64),
        "norm": norms,
        "nan_count": np.isnan(vectors).sum(axis=1).astype(np.int64) if len(ids) else np.zeros(0, dtype=np.int64),
    }, schema={"id": pl.String, "dim": pl.Int64, "norm": pl.Float64, "nan_count": pl.Int64})
    failures = _ge_failures(facts, dim=dim) if len(ids) else {}
    if width != dim:
        failures.setdefault(DIMENSION, ["<all>"])
    expected = set(expected_ids)
    have = set(ids)
    missing = sorted(expected - have)
    extra = sorted(have - expected)
    duplicates = len(ids) - len(have)
    finite = norms[np.isfinite(norms)]
    return [
        CheckOutcome(DIMENSION, DIMENSION not in failures, {"expected": dim, "actual": width}),
        CheckOutcome(UNIT_NORM, UNIT_NORM not in failures and NO_NAN not in failures, {
            "min_norm": float(finite.min()) if finite.size else 0.0,
            "max_norm": float(finite.max()) if finite.size else 0.0,
            "failing": len(failures.get(UNIT_NORM, [])), "examples": ", ".join(failures.get(UNIT_NORM, [])[:_SHOWN]),
        }),
        CheckOutcome(NO_NAN, NO_NAN not in failures, {
            "vectors_with_nan": len(failures.get(NO_NAN, [])), "examples": ", ".join(failures.get(NO_NAN, [])[:_SHOWN]),
        }),
        CheckOutcome(ONE_PER_ENTITY, not missing and not extra and duplicates == 0, {
            "vectors": len(ids), "upstream_entities": len(expected), "missing": len(missing), "extra": len(extra),
            "duplicates": duplicates, "examples": ", ".join((missing + extra)[:_SHOWN]),
        }),
    ]


def round_trip_check(
    store: Store, entity_type: str, ids: Sequence[str], vectors: Vectors, *, model: str, tolerance: float = 0.0,
) -> CheckOutcome:
    """Read ``ids`` back from the Store (consistent read) and compare with the computed vectors.

    Float32 bytes round-trip exactly on both adapters, so the default tolerance is zero.
    """
    stored = load_embeddings(store, entity_type, ids, consistent=True)
    missing = [i for i in ids if i not in stored]
    wrong_model = [i for i in ids if i in stored and stored[i].model != model]
    mismatched = [
        entity_id for row, entity_id in enumerate(ids)
        if entity_id in stored and (stored[entity_id].vector.shape != vectors[row].shape
                                    or not np.allclose(stored[entity_id].vector, vectors[row], rtol=0, atol=tolerance))
    ]
    bad = missing + wrong_model + mismatched
    return CheckOutcome(STORE_ROUND_TRIP, not bad, {
        "compared": len(ids), "missing": len(missing), "wrong_model": len(wrong_model),
        "mismatched": len(mismatched), "examples": ", ".join(bad[:_SHOWN]),
    })
