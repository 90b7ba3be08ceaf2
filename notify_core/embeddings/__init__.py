"""Embeddings: products -> orders -> users (hierarchical) and campaigns (independent), delta-refreshed.

Public API: the Embedder port and its implementations, the four refreshes, and the Store reader that
serving uses.
"""

from __future__ import annotations

from notify_core.embeddings.combine import Interactions
from notify_core.embeddings.embedder import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from notify_core.embeddings.pipeline import (
    EmbeddingRun,
    refresh_campaign_embeddings,
    refresh_order_embeddings,
    refresh_product_embeddings,
    refresh_user_embeddings,
)
from notify_core.embeddings.store import CAMPAIGN, ORDER, PRODUCT, USER, StoredEmbedding, load_embeddings

__all__ = [
    "CAMPAIGN", "ORDER", "PRODUCT", "USER", "Embedder", "EmbeddingRun", "HashingEmbedder", "Interactions",
    "SentenceTransformerEmbedder", "StoredEmbedding", "load_embeddings", "refresh_campaign_embeddings",
    "refresh_order_embeddings", "refresh_product_embeddings", "refresh_user_embeddings",
]
