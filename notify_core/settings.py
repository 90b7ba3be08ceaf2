"""Settings: one switch (``local`` | ``aws``) and what each environment needs.

Nothing reads the environment at import time. Each entry point (Dagster definitions, a Lambda cold
start, the CLI) calls :func:`load_settings` once and passes the result down.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from notify_core.clock import Clock, starting_at
from notify_core.errors import ConfigurationError

Environment = Literal["local", "aws"]

ENV_PREFIX = "NOTIFY_"
# NOTIFY_* environment variables that are NOT settings fields and are read by something else, so the settings
# let them be. Any other NOTIFY_* variable that names no field is refused (a misspelt NOTIFY_ENV would
# otherwise run locally, a misspelt NOTIFY_CLOCK_START give a replay the system clock). Each entry: who reads it.
ENVIRONMENT_ALLOWLIST: frozenset[str] = frozenset({
    "NOTIFY_LOG_LEVEL",  # lambdas/http.py: the Lambda handlers' log level
    "NOTIFY_TEST_DAEMON_LOG",  # tests/pipeline/test_living_pipeline.py: print the Dagster daemon's launches
    "NOTIFY_SOCKET",  # systemd (sd_notify), not Notify: set for every Type=notify service it starts
})


# How long a Kafka produce waits for the brokers' acknowledgement (``message.timeout.ms``) before it fails:
# the capture route then answers 503 with Retry-After. With the adapter's report slack
# (notify_core/stream/kafka.py REPORT_SLACK_S) it stays under the route functions' 30 s timeout and API
# Gateway's 30 s, so a client gets that 503, not the gateway's timeout with the function killed
# mid-request (at the old 30 s, a broker outage held each capture request 30.0 s, measured).
KAFKA_DELIVERY_TIMEOUT_S = 10.0
# How long a Kafka producer waits to fill a message set before it sends (``linger.ms``): every capture
# request waits about this long for its acknowledgement, and the brokers pay per message set. 5 ms keeps
# capture fast. At the spec's 49k events/s, 25 ms (NOTIFY_KAFKA_LINGER_MS=25) made the message sets ~5x
# larger and cut the broker's CPU from 0.35 to 0.11 cores (librdkafka's mock broker, 60 s runs): see
# docs/peak-performance.md, session 36.
KAFKA_LINGER_MS = 5

# How long a client of ``notify serve`` may take to send a request's line and headers (from its connection
# or its first byte), and then its body. uvicorn limits neither: a client that stopped mid-headers, or
# declared a length and stopped mid-body, held its connection and request open for ever, so enough slow
# clients ran the server out of descriptors (tests/api/test_gateway_slow_*.py). 30 s is API Gateway's own
# integration limit; at the 6 MB body cap it still allows ~200 kB/s.
REQUEST_HEADERS_TIMEOUT_S = 10.0
REQUEST_BODY_TIMEOUT_S = 30.0


class NotifySettings(BaseSettings):
    """Typed settings, read from ``NOTIFY_*`` environment variables (or passed explicitly)."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="forbid", frozen=True)

    env: Environment = "local"
    data_dir: Path = Field(default=Path(".notify"), description="Embedded default: store, log, lake, artefacts.")
    landing_dir: Path | None = Field(default=None, description="Batch landing folder; default <data_dir>/landing.")
    source_data: Path = Field(
        default=Path("../shared/data/online_retail/online_retail.parquet"),
        description="The Online Retail file the demo loads.",
    )
    seed: int = 7
    clock_start: datetime | None = Field(
        default=None, description="Start this process's clock at this time (tests, replays); unset: the system clock.",
    )
    clock_frozen: bool = Field(
        default=False, description="With clock_start: the clock stands still at that instant (sleeps move only the "
        "sleeper's own copy), so a replay decides exactly as another replay of the same data, however long it runs.",
    )

    # event stream: the embedded log by default (env=local), Kafka for env=aws or when chosen
    stream_backend: Literal["local", "kafka"] | None = None
    kafka_bootstrap: str | None = None
    kafka_delivery_timeout_s: float = Field(default=KAFKA_DELIVERY_TIMEOUT_S, gt=0, le=20)
    kafka_linger_ms: int = Field(default=KAFKA_LINGER_MS, ge=0, le=1000)
    stream_log_path: Path | None = None  # default <data_dir>/stream/log.sqlite
    stream_fsync: bool = False
    # the embedded Store's commits fsynced (synchronous=FULL): a write answered 2xx survives a power cut, not only
    # a killed process; the one-machine systemd units set it (notify_cli/systemd_units.py)
    store_fsync: bool = False

    # serving
    request_headers_timeout_s: float = Field(default=REQUEST_HEADERS_TIMEOUT_S, gt=0, le=300)
    request_body_timeout_s: float = Field(default=REQUEST_BODY_TIMEOUT_S, gt=0, le=300)
    # how long DELETE /v1/users/{id} erases before answering 202 and leaving the rest to the erasure sweep
    # (notify_core.erasure.sweep_erasures): well inside the erase function's 30 s timeout, whatever the data's size
    erasure_request_budget_s: float = Field(default=10.0, gt=0, le=25)
    recommend_effort: int | None = None  # ANN search effort (ivf lists probed / hnsw ef); default: the manifest's
    # per-worker cache of the time-independent ranking work of recently seen users (issue 21; exact: keyed
    # by the snapshot and the user's vector and purchases, notify_core/recommend/work_cache.py); 0: none.
    # ~40 kB a user at most on the demo data (heavy buyers' co-purchase arrays).
    recommend_cache_users: int = Field(default=1024, ge=0)

    # aws environment
    aws_region: str = "eu-west-1"
    dynamodb_endpoint_url: str | None = None
    table_prefix: str = "notify_"
    s3_bucket: str | None = None
    s3_prefix: str = "notify/"
    # the bucket S3 replication copies s3_bucket to (another region): S3 does not replicate version deletes, so
    # the erasure walks it too (notify_core/erasure.py, erasure_replicas); None: no replica to reach
    s3_replica_bucket: str | None = None
    s3_replica_region: str | None = None  # default: aws_region
    # endpoints (issue 15): None = the AWS default; set to reach DynamoDB Local, SeaweedFS/MinIO, a local SNS
    s3_endpoint_url: str | None = None
    sns_endpoint_url: str | None = None
    cloudwatch_endpoint_url: str | None = None  # where `notify consume` in aws sends its SLO counters

    # delivery (issue 7): the channel, its endpoint and secrets, and where tracking links point
    delivery_channel: Literal["outbox", "webhook", "sns"] | None = None  # default: outbox (local), sns (aws)
    outbox_path: Path | None = None  # default <data_dir>/outbox/notifications.jsonl
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, repr=False)
    webhook_timeout_s: float = 2.0
    sns_topic_arn: str | None = None
    public_base_url: str = "http://127.0.0.1:8080"  # tracking links: <public_base_url>/t/<notification_id>
    delivery_concurrency: int = Field(default=16, ge=1, le=256)
    delivery_lease_s: float = Field(default=30.0, gt=0)
    # a notification found later than this after its send time is not sent (suppressed ``too_late``)
    delivery_max_late_s: float = Field(default=3600.0, gt=0)
    # backups (issue 13): a folder or s3://bucket/prefix[?endpoint=...] for `notify backup` / `notify restore`
    backup_url: str | None = None

    # security (issue 14): personal fields sealed at rest (on by default; turning it off is this visible
    # flag), the master key (KMS key id in aws, else the 0600 file under <data_dir>/secrets), TLS for
    # `notify serve`, TLS/SASL for Kafka
    encrypt_personal_fields: bool = True
    kms_key_id: str | None = None
    # a master key file every instance mounts (a Kubernetes secret), for aws without KMS; locally the
    # default is <data_dir>/secrets/master.keys.json (notify_core/security/vault.py)
    master_key_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    plan_start_date: date | None = Field(
        default=None, description="First day of the plan's Dagster partitions; default: the deployment's first day, "
                                  "recorded in the Store by the first process to load the definitions "
                                  "(notify_core.deployment_facts), so every pod has the same partitions.")

    # security (issue 14): campaign URL allowlist (empty: any https host), API keys
    campaign_url_domains: tuple[str, ...] = ()
    api_key_pepper: str | None = Field(default=None, repr=False)  # local: a 0600 file when unset
    # aws: the Secrets Manager secret (ARN or name) holding the pepper, read once at a cold start; the template
    # sets this, never the pepper itself (an environment variable is readable by whoever reads the function)
    api_key_pepper_secret: str | None = None

    # issue 19: the exploration budget, the share of slots the campaign bandit may spend (0: off; 0.1 = 10 %)
    exploration_share: float = Field(default=0.0, ge=0.0, le=0.5,
                                     description="Share of the users' notification slots given to Thompson draws "
                                                 "over campaigns (notify_core.scheduling.exploration); 0 = off.")
    # issue 21: processes ranking the daily plan's candidates (notify_core.scheduling.candidate_pool)
    plan_candidate_workers: int = Field(default=0, ge=0,
                                        description="Processes that rank the recommender's candidates of a day's "
                                                    "plan: 0 = one per core, 1 = in the planning process.")
    # issue 21: `notify worker` sends webhooks from coroutines on one event loop (False: the sender threads)
    delivery_async_senders: bool = True

    @model_validator(mode="before")
    @classmethod
    def _check_environment(cls, data: Any) -> Any:
        """pydantic-settings ignores NOTIFY_* variables that name no field (``extra`` covers keyword
        arguments only): refuse them here, whoever builds the settings."""
        check_environment(os.environ, fields=cls.model_fields)
        return data

    @model_validator(mode="after")
    def _check_delivery(self) -> NotifySettings:
        if self.channel == "webhook" and not (self.webhook_url and self.webhook_secret):
            raise ConfigurationError("the webhook channel needs NOTIFY_WEBHOOK_URL and NOTIFY_WEBHOOK_SECRET")
        if self.channel == "sns" and not self.sns_topic_arn:
            raise ConfigurationError("the sns channel needs NOTIFY_SNS_TOPIC_ARN")
        if self.clock_frozen and self.clock_start is None:
            raise ConfigurationError("NOTIFY_CLOCK_FROZEN needs NOTIFY_CLOCK_START: the instant it stands at")
        return self

    def clock(self) -> Clock:
        """The clock every entry point hands the domain: the system clock unless ``clock_start`` pins it
        (frozen there with ``clock_frozen``: each caller gets its own clock standing at that instant)."""
        return starting_at(self.clock_start, frozen=self.clock_frozen)

    @property
    def channel(self) -> Literal["outbox", "webhook", "sns"]:
        if self.delivery_channel is not None:
            return self.delivery_channel
        return "sns" if self.env == "aws" else "outbox"

    @property
    def outbox(self) -> Path:
        return self.outbox_path if self.outbox_path is not None else self.data_dir / "outbox" / "notifications.jsonl"

    @model_validator(mode="after")
    def _check_aws(self) -> NotifySettings:
        if self.env == "aws" and not self.s3_bucket:
            raise ConfigurationError("NOTIFY_ENV=aws needs NOTIFY_S3_BUCKET (landing files, lake, artefacts)")
        return self

    @property
    def landing(self) -> Path:
        return self.landing_dir if self.landing_dir is not None else self.data_dir / "landing"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "store.sqlite"

    @property
    def lake_root(self) -> str:
        """Root of the columnar lake: a local folder, or an S3 prefix in aws."""
        if self.env == "aws":
            return f"s3://{self.s3_bucket}/{self.s3_prefix.rstrip('/')}/lake"
        return str(self.data_dir / "lake")

    @property
    def stream(self) -> Literal["local", "kafka"]:
        if self.stream_backend is not None:
            return self.stream_backend
        return "kafka" if self.env == "aws" else "local"

    @property
    def local_log_path(self) -> Path:
        return self.stream_log_path if self.stream_log_path is not None else self.data_dir / "stream" / "log.sqlite"

    @property
    def local_databases(self) -> dict[str, Path]:
        """The SQLite files of this deployment, by name: the Store (not in aws) and the embedded stream log (when
        the stream is local). What a backup replicates and what a server watches for a restore under it."""
        found = {} if self.env == "aws" else {"store": self.sqlite_path.resolve()}
        if self.stream == "local":
            found["stream"] = self.local_log_path.resolve()
        return found

    @property
    def quarantine_root(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def s3_root(self) -> str | None:
        """``s3://<bucket>/<prefix>`` in aws (landing, quarantine, lake and artefacts live under it)."""
        if self.env != "aws":
            return None
        return f"s3://{self.s3_bucket}/{self.s3_prefix.rstrip('/')}"

    @property
    def s3_storage_options(self) -> dict[str, str] | None:
        """Object-store options for polars/pyarrow when an S3 endpoint is set (None: the SDK defaults)."""
        if self.s3_endpoint_url is None:
            return None
        return {"aws_endpoint_url": self.s3_endpoint_url, "aws_region": self.aws_region,
                "aws_allow_http": str(self.s3_endpoint_url.startswith("http://")).lower(),
                "aws_virtual_hosted_style_request": "false"}

    @property
    def secrets_dir(self) -> Path:
        """Key files (tracking, webhook, the local master key, the API key pepper, the first admin key):
        0600 files in a 0700 folder."""
        return self.data_dir / "secrets"


def check_environment(environ: Mapping[str, str], *, fields: Mapping[str, object] | None = None) -> None:
    """Raise :class:`ConfigurationError` naming each ``NOTIFY_*`` variable of ``environ`` that is neither a
    settings field nor in :data:`ENVIRONMENT_ALLOWLIST`, with the closest known name. Names are compared
    case-insensitively, as pydantic-settings reads them."""
    known = {ENV_PREFIX + name.upper() for name in (NotifySettings.model_fields if fields is None else fields)}
    known |= ENVIRONMENT_ALLOWLIST
    unknown = sorted(name for name in environ
                     if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)
    if not unknown:
        return
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), list(suffixes), n=1, cutoff=0.6)
        problems.append(f"{name} (did you mean {suffixes[close[0]]}?)" if close else f"{name} (no setting is "
                        "named like it)")
    raise ConfigurationError(
        f"unknown Notify environment variable(s): {'; '.join(problems)}. A NOTIFY_* variable must name a "
        "setting (notify_core/settings.py NotifySettings) or be in ENVIRONMENT_ALLOWLIST; unset or rename it.")


def load_settings(**overrides: Any) -> NotifySettings:
    """Read settings from the environment, with explicit overrides winning. Call once per entry point."""
    try:
        return NotifySettings(**overrides)
    except ConfigurationError:
        raise
    except Exception as exc:  # pydantic's ValidationError: re-raise as ours, with the message
        raise ConfigurationError(f"invalid Notify settings: {exc}") from exc
