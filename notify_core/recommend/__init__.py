"""Real-time campaign recommendation: the ANN index (build, version, publish), serving (hot swap and the
live overlay), the recommender (candidates, filters, blended score, fallback) and campaign upserts.

No Dagster and no Lambda imports here: assets, sensors and handlers call these plain functions.
"""

from __future__ import annotations

from notify_core.recommend.artefacts import ArtefactStore, LocalArtefactStore, S3ArtefactStore, build_artefact_store
from notify_core.recommend.build import IndexBuild, build_campaign_index
from notify_core.recommend.index import (
    IndexOptions,
    Manifest,
    campaign_key,
    current_version,
    load_version,
    publish,
    publishable_versions,
)
from notify_core.recommend.recommender import (
    Recommendation,
    Recommendations,
    Recommender,
    ScoreWeights,
)
from notify_core.recommend.serving import IndexHolder, OverlayEntry, ServingSnapshot
from notify_core.recommend.updates import CampaignIn, UpsertResult, upsert_campaign

__all__ = [
    "ArtefactStore", "CampaignIn", "IndexBuild", "IndexHolder", "IndexOptions", "LocalArtefactStore", "Manifest",
    "OverlayEntry", "Recommendation", "Recommendations", "Recommender", "S3ArtefactStore", "ScoreWeights",
    "ServingSnapshot", "UpsertResult", "build_artefact_store", "build_campaign_index", "campaign_key",
    "current_version", "load_version", "publish", "publishable_versions", "upsert_campaign",
]
