"""Every Store table Notify uses, with its key shape: the access patterns, written down once.

| table            | pk                      | sk                                   | read as                          |
|------------------|-------------------------|--------------------------------------|----------------------------------|
| users            | user_id                 | "profile"                            | get / batch get                  |
| products         | product_id              | "product"                            | get / batch get                  |
| campaigns        | campaign_id             | "campaign"                           | get / batch get                  |
| purchases        | user_id                 | "<ts ISO>#<order_id>#<product_id>"   | a user's history by time range   |
| user_product     | user_id                 | product_id                           | a user's row of the matrix       |
| user_features    | user_id                 | "features"                           | get                              |
| product_features | product_id              | "features"                           | get                              |
| events           | event_id                | "event"                              | ledger: an order fully persisted |
| user_events      | user_id                 | "<ts ISO>#<event_id>"                | a user's clicks/opens by time    |
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

USERS = "users"
PRODUCTS = "products"
CAMPAIGNS = "campaigns"
PURCHASES = "purchases"
USER_PRODUCT = "user_product"
USER_FEATURES = "user_features"
PRODUCT_FEATURES = "product_features"
EVENTS = "events"
USER_EVENTS = "user_events"

PROFILE_SK = "profile"
PRODUCT_SK = "product"
CAMPAIGN_SK = "campaign"
FEATURES_SK = "features"
EVENT_SK = "event"


def time_sk(ts: datetime) -> str:
    """Sort-key prefix for time-ordered items: ISO seconds, lexicographic order = time order (UTC).

    ``isoformat()[:19]`` rather than ``strftime``: half the cost on the consumer's per-event path, and the
    year is always four digits (``strftime("%Y")`` writes year 5 as ``5``, which sorts wrongly).
    """
    return ts.isoformat()[:19]


def purchase_sk(ts: datetime, order_id: str, product_id: str) -> str:
    return purchase_sk_at(time_sk(ts), order_id, product_id)


def purchase_sk_at(time_key: str, order_id: str, product_id: str) -> str:
    """:func:`purchase_sk` from the line's :func:`time_sk` already in hand (the consumer's trusted path)."""
    return f"{time_key}#{order_id}#{product_id}"

# Embeddings (issue 3): one vector per entity, pk "<entity_type>#<id>" (product, order, user, campaign),
# sk "vector"; attributes vector (float32 bytes), dim, model, content_hash, updated_at. Read by key,
# strongly consistent, for serving. | embeddings | "<entity_type>#<id>" | "vector" | get / batch get |
EMBEDDINGS = "embeddings"
VECTOR_SK = "vector"

# Sends (issue 5, read by recommendation; written by the delivery worker): one item per notification
# sent, pk user_id, sk "<ts ISO>#<campaign_id>" (attributes campaign_id, ts, notification_id). The
# recommender reads a user's partition from (now - longest cooldown) to filter campaigns still in
# their cooldown. | sends | user_id | "<ts ISO>#<campaign_id>" | a user's sends by time range |
SENDS = "sends"


def send_sk(ts: datetime, campaign_id: str) -> str:
    return f"{time_sk(ts)}#{campaign_id}"

# Scheduling (issue 6). | schedules | "<due minute UTC>#<shard 00..N-1>" | "<user_id>#<notification_id>" | what
# is due in minute M: one query per shard | and | plans | user_id | "<plan_day>#<notification_id>" | a user's
# plan for a day (re-plan, cancellation) |. Items carry status pending -> claimed -> sent | cancelled and a TTL.
SCHEDULES = "schedules"
PLANS = "plans"


def due_minute(ts: datetime) -> str:
    """The schedules partition prefix of an instant: its UTC minute, ISO, e.g. ``2026-11-24T10:05``."""
    return ts.strftime("%Y-%m-%dT%H:%M")


def schedule_pk(minute: str, shard: int) -> str:
    return f"{minute}#{shard:02d}"


def schedule_sk(user_id: str, notification_id: str) -> str:
    return f"{user_id}#{notification_id}"


def plan_sk(plan_day: str, notification_id: str) -> str:
    return f"{plan_day}#{notification_id}"

# Delivery (issue 7). | dedupe | notification_id | "dedupe" | the 24 h idempotency window (TTL) |
# | dedupe | "cap#<user_id>#<plan_day>" | "0".."4" | the day's send tokens (notify_core.delivery.day_cap) |
# | deliveries | notification_id | "attempt#<n>" | one row per attempt (outcome, times, latency) |
# | retries | "<due minute UTC>#<shard>" | "<due epoch ms, 13 digits>#<notification_id>" | retries due by now:
# one bounded range query per shard | dead_letters | "<day UTC>" | "<ts ISO>#<notification_id>" | a day's
# dead letters | delivery_cursor | "minute" | "<due minute>" | minutes fully delivered (skipped on restart) |
# | notification_interactions | notification_id | "open" / "click" | first open/click (unique CTR) |
# | campaign_stats | campaign_id | "<day>" | sent / opened / clicked by UTC day; planned, budget_spent by plan day |
# | user_fatigue | user_id | "fatigue" | consecutive notifications without interaction |
DEDUPE = "dedupe"
DEDUPE_SK = "dedupe"


def day_cap_pk(user_id: str, plan_day: str) -> str:
    """The partition of a user's plan day's send tokens in ``dedupe`` (never a notification id: those are hex)."""
    return f"cap#{user_id}#{plan_day}"


DELIVERIES = "deliveries"
RETRIES = "retries"
DEAD_LETTERS = "dead_letters"
DELIVERY_CURSOR = "delivery_cursor"
NOTIFICATION_INTERACTIONS = "notification_interactions"
CAMPAIGN_STATS = "campaign_stats"
USER_FATIGUE = "user_fatigue"
FATIGUE_SK = "fatigue"


def attempt_sk(attempt: int) -> str:
    return f"attempt#{attempt}"


def retry_sk(due_ms: int, notification_id: str) -> str:
    return f"{due_ms:013d}#{notification_id}"

# Convergence (issue 13). | sync_ledger | "<table or dataset>" | "<lake partition>" | the digest of the source rows
# the Store is known to hold for that partition, written only after they all are; a missing or different digest
# means "compare and repair this partition" (an interrupted run, a full disk, a wiped or restored Store).
SYNC_LEDGER = "sync_ledger"
# Stream positions (issue 13): where the event consumer's group is, per partition, kept in the Store so
# that it travels with the Store's backups (a restored Store replays what it lost from the stream).
# | stream_positions | group | "<topic>#<partition>" | get / batch get; a group's positions |
STREAM_POSITIONS = "stream_positions"


def stream_position_sk(topic: str, partition: int) -> str:
    return f"{topic}#{partition}"

# Re-plans limited to the users whose vectors changed (notify_core.scheduling.replan_users): | replan_users |
# "<random set id>" | "<user id>" | query one set | ``user_id`` (the erasure finds it), a TTL of a week. The
# set id and its size are all the user_embeddings materialisation records in Dagster, whose run storage
# cannot forget one user.
REPLAN_USERS = "replan_users"

# Every table above: what the deployable templates create (notify_cli/deploy_templates.py renders one
# DynamoDB table each; a test fails if a table constant is missing here).
ALL_TABLES: tuple[str, ...] = (
    USERS, PRODUCTS, CAMPAIGNS, PURCHASES, USER_PRODUCT, USER_FEATURES, PRODUCT_FEATURES, EVENTS, USER_EVENTS,
    EMBEDDINGS, SENDS, SCHEDULES, PLANS, DEDUPE, DELIVERIES, RETRIES, DEAD_LETTERS, DELIVERY_CURSOR,
    NOTIFICATION_INTERACTIONS, CAMPAIGN_STATS, USER_FATIGUE, SYNC_LEDGER, STREAM_POSITIONS, REPLAN_USERS,
)

# Security (issue 14). | api_keys | key_id | "key" | one API key: keyed hash, scopes, expiry, revocation |
# | audit_log | "log" | "<seq, 12 digits>" | the hash-chained audit trail in order | and pk "head", sk "head":
# the last entry's seq and hash (a deleted tail is caught against it) |
API_KEYS = "api_keys"
API_KEY_SK = "key"
AUDIT_LOG = "audit_log"
ALL_TABLES = (*ALL_TABLES, API_KEYS, AUDIT_LOG)

# Right to erasure (the erasure register). | erasures | "<pseudonym of the user id>" | "erasure" | get; scanned whole
# by batch ingestion, the consumer, a restore | one item per erased user: ``erased_at`` (ISO, UTC), no TTL (kept as
# long as the data it suppresses can come back). The key is a one-way digest of the id
# (notify_core.erasure_register.pseudonym), never the id.
ERASURES = "erasures"
ERASURE_SK = "erasure"
ALL_TABLES = (*ALL_TABLES, ERASURES)
# | erasure_queue | "<pseudonym of the user id>" | "queued" | scanned whole by the sweep | an erasure begun but not
# finished (the DELETE route's time budget ran out, or it was killed): ``user_id`` and ``erased_at``. The id is
# kept only while the user's data still is: the sweep (notify_core.erasure.sweep_erasures) deletes the entry
# last, once every table, file and object is clear of them.
ERASURE_QUEUE = "erasure_queue"
ERASURE_QUEUE_SK = "queued"
ALL_TABLES = (*ALL_TABLES, ERASURE_QUEUE)

# Key documents (wrapped data keys, signing rings) shared by every instance in aws
# (notify_core/store/key_documents.py). | key_documents | "<document name>" e.g. "data.keys" | "document" | get,
# consistent | ``body`` (JSON; every secret in it wrapped by the master key), ``revision`` (compare-and-set).
KEY_DOCUMENTS = "key_documents"
KEY_DOCUMENT_SK = "document"
ALL_TABLES = (*ALL_TABLES, KEY_DOCUMENTS)

# Facts every process of a deployment agrees on (notify_core/deployment_facts.py), recorded once by the first
# process to ask. | deployment | "<fact>" e.g. "plan_start_date" | "fact" | get, consistent | ``day`` (ISO) |
DEPLOYMENT = "deployment"
DEPLOYMENT_SK = "fact"
ALL_TABLES = (*ALL_TABLES, DEPLOYMENT)

# Where a user's items are: what the right to erasure (notify_core.erasure) deletes, table by table. In a
# listed table an item goes when its ``user_id`` attribute is the user, and by the table's key rule when its
# partition key is the user id (UserKey.PK), "user#<id>" (VECTOR_PK), its sort key is "<id>#<its notification>" (SK), or
# its partition key is one of the user's notifications (NOTIFICATION: markers without a user id, so listed
# last, after the tables that name the notifications). A table not listed holds no user's items: its keys are
# products, campaigns, days, minutes, stream positions, key documents, deployment facts or the audit trail, the
# register the erasure writes and its queue (which names a user only until their erasure is finished, and is
# cleared last). Such a key may equal a user id (27 Online Retail customer numbers are also stock codes: a
# key-shape match over every table erased product 15036 with customer 15036). A new table goes in one of the two
# lists; a test checks. The erase function's role is derived from them too
# (notify_cli.deploy_access).
class UserKey(StrEnum):
    PK = "pk is the user id"
    VECTOR_PK = "pk is user#<id>"
    SK = "sk is <id>#<notification id>"
    ATTRIBUTE = "the user_id attribute only"
    NOTIFICATION = "pk is one of the user's notifications"


USER_ITEMS: dict[str, UserKey] = {
    USERS: UserKey.PK, PURCHASES: UserKey.PK, USER_PRODUCT: UserKey.PK, USER_FEATURES: UserKey.PK,
    USER_EVENTS: UserKey.PK, SENDS: UserKey.PK, PLANS: UserKey.PK, USER_FATIGUE: UserKey.PK,
    EMBEDDINGS: UserKey.VECTOR_PK, SCHEDULES: UserKey.SK,
    EVENTS: UserKey.ATTRIBUTE, DEDUPE: UserKey.ATTRIBUTE, DELIVERIES: UserKey.ATTRIBUTE, RETRIES: UserKey.ATTRIBUTE,
    DEAD_LETTERS: UserKey.ATTRIBUTE, REPLAN_USERS: UserKey.ATTRIBUTE,
    NOTIFICATION_INTERACTIONS: UserKey.NOTIFICATION,
}
NO_USER_ITEMS: tuple[str, ...] = (
    PRODUCTS, CAMPAIGNS, PRODUCT_FEATURES, CAMPAIGN_STATS, DELIVERY_CURSOR, SYNC_LEDGER, STREAM_POSITIONS,
    API_KEYS, AUDIT_LOG, ERASURES, KEY_DOCUMENTS, ERASURE_QUEUE, DEPLOYMENT,
)
