"""Campaign create/edit without retraining: embed just that campaign and put it in the live overlay.

``upsert_campaign`` validates the row, builds the same text and content hash the batch pipeline would
(so the next full build agrees with it), embeds it only when its text changed (pausing a campaign or
moving its dates costs no model call), writes the Store (campaign row + vector) and the lake (so the
next build folds it into the graph), then adds it to the serving overlay: recommendable in this process
at once, in every other serving process on its next refresh tick (2 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic import ValidationError as PydanticValidationError

from notify_core import bounds
from notify_core.campaigns import (
    ACTIVE,
    DEFAULT_CATEGORY,
    DEFAULT_COOLDOWN_HOURS,
    DEFAULT_DAILY_BUDGET,
    DEFAULT_DURATION_DAYS,
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
)
from notify_core.delivery.campaign_checks import check_campaign, check_redirect_url
from notify_core.embeddings.delta import text_hashes
from notify_core.embeddings.embedder import Embedder
from notify_core.embeddings.store import CAMPAIGN, load_embeddings, persist, state_schema, vector_series
from notify_core.embeddings.texts import campaign_texts
from notify_core.errors import ValidationError
from notify_core.lake import Lake
from notify_core.recommend.serving import IndexHolder, OverlayEntry
from notify_core.repositories import save_frame
from notify_core.schemas import CAMPAIGNS
from notify_core.store import tables
from notify_core.store.port import Store


class CampaignIn(BaseModel):
    """A campaign as the API accepts it (the CAMPAIGNS schema, with defaults for the optional parts)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    campaign_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
    name: str = Field(min_length=1, max_length=bounds.MAX_NAME_LENGTH)
    text: str = Field(min_length=1, max_length=bounds.MAX_TEXT_LENGTH)
    # list items bounded as ingestion bounds the same columns (notify_core.bounds): every backend holds the row
    category: bounds.Category = DEFAULT_CATEGORY
    product_ids: list[Annotated[str, StringConstraints(max_length=bounds.MAX_ID_LENGTH)]] = Field(
        default_factory=list, max_length=bounds.MAX_PRODUCT_IDS)
    priority: int = Field(default=DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    # Dates inside bounds' MIN_DATE..MAX_DATE, the window batch ingestion quarantines campaign dates
    # outside: a campaign the API accepts must be one the lake accepts too, and a start near the calendar's
    # end (9999-12-31) used to overflow the default end date into a 500.
    start_date: date | None = Field(default=None, ge=bounds.MIN_DATE, le=bounds.MAX_DATE)  # None: the upsert's day
    end_date: date | None = Field(default=None, ge=bounds.MIN_DATE, le=bounds.MAX_DATE)  # None: a year after start
    target_countries: list[Annotated[str, StringConstraints(max_length=bounds.MAX_COUNTRY_LENGTH)]] = Field(
        default_factory=list, max_length=bounds.MAX_TARGET_COUNTRIES)
    cooldown_hours: int = Field(default=DEFAULT_COOLDOWN_HOURS, ge=0, le=bounds.MAX_COOLDOWN_HOURS)
    daily_budget: int = Field(default=DEFAULT_DAILY_BUDGET, ge=0, le=bounds.MAX_DAILY_BUDGET)
    url: str = ""
    template: str = ""
    status: Literal["active", "paused"] = ACTIVE

    @model_validator(mode="after")
    def _dates(self) -> CampaignIn:
        if self.start_date is not None and self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self

    def dated(self, today: date) -> CampaignIn:
        """Open dates resolved against the caller's day: a start of ``today``, an end a year after the start
        but never past :data:`bounds.MAX_DATE` (a start late in the window would otherwise give an end
        batch ingestion quarantines)."""
        start = self.start_date or today
        end = self.end_date or min(start + timedelta(days=DEFAULT_DURATION_DAYS), bounds.MAX_DATE)
        if end < start:
            raise ValidationError(f"invalid campaign: end_date {end} is before start_date {start}")
        return self.model_copy(update={"start_date": start, "end_date": end})

    @model_validator(mode="after")
    def _content(self) -> CampaignIn:
        try:  # template rendered in the restricted formatter; the tracking redirect's target
            check_campaign(template=self.template, url=self.url)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return self


def parse_campaign(payload: Any) -> CampaignIn:
    if not isinstance(payload, Mapping):
        raise ValidationError("a campaign must be a JSON object")
    try:
        return CampaignIn.model_validate(dict(payload))
    except PydanticValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'campaign'}: {e['msg']}" for e in exc.errors())
        raise ValidationError(f"invalid campaign: {problems}") from None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    campaign_id: str
    created: bool
    embedded: bool
    content_hash: str
    index_version: str | None
    overlay_size: int
    took_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def upsert_campaign(
    payload: Any, *, store: Store, embedder: Embedder, holder: IndexHolder, now: datetime, lake: Lake | None = None,
    allowed_url_domains: tuple[str, ...] = (),
) -> UpsertResult:
    """Create or replace one campaign and make it recommendable without a rebuild (see the module doc).
    ``now`` (the caller's clock) stamps the vector and resolves open dates. ``allowed_url_domains``
    (settings ``campaign_url_domains``): when set, the campaign URL's host must be one of them or under one
    (the https / no-credentials checks apply always)."""
    started = time.perf_counter()
    campaign = parse_campaign(payload).dated(now.astimezone(UTC).date())
    if allowed_url_domains and campaign.url:
        check_redirect_url(campaign.url, allowed_domains=allowed_url_domains)
    frame = pl.DataFrame([campaign.model_dump()], schema=CAMPAIGNS)
    hashed = text_hashes(campaign_texts(frame), id_column="campaign_id", model_id=embedder.model_id)
    content_hash = str(hashed["content_hash"][0])
    existing = store.table(tables.CAMPAIGNS).get(campaign.campaign_id, tables.CAMPAIGN_SK, consistent=True)

    stored = load_embeddings(store, CAMPAIGN, [campaign.campaign_id], model=embedder.model_id)
    previous = stored.get(campaign.campaign_id)
    embedded = previous is None or previous.content_hash != content_hash
    if previous is not None and not embedded:
        vector = previous.vector  # same text and model: a status/date edit costs no model call
    else:
        vector = embedder.embed([str(hashed["text"][0])])[0]
        schema = state_schema(CAMPAIGN, embedder.dim)
        state = pl.DataFrame({"id": [campaign.campaign_id], "content_hash": [content_hash],
                              "model": [embedder.model_id], "updated_at": [now]}).with_columns(
            vector_series(vector[None, :])).select(list(schema)).cast(schema)  # type: ignore[arg-type]
        persist(store, CAMPAIGN, state)

    save_frame(store, tables.CAMPAIGNS, frame)
    if lake is not None:
        lake.merge("campaigns", frame)
    row = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in campaign.model_dump().items()}
    snapshot = holder.upsert([OverlayEntry(campaign_id=campaign.campaign_id, content_hash=content_hash,
                                           updated_at=now.isoformat(timespec="microseconds"), campaign=row,
                                           vector=np.asarray(vector, dtype=np.float32))])
    return UpsertResult(campaign_id=campaign.campaign_id, created=existing is None, embedded=embedded,
                        content_hash=content_hash, index_version=snapshot.version,
                        overlay_size=len(snapshot.overlay),
                        took_ms=round((time.perf_counter() - started) * 1000, 2))
