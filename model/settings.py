"""The platform's one settings object, read from ``FER_*`` environment variables and ``.env``."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.errors import ConfigError


def check_cron(value: str) -> str:
    """Return ``value`` if it has the five fields of a cron expression.

    Raises:
        ValueError: naming the expected form.
    """
    if len(value.split()) != 5:
        raise ValueError(
            f"{value!r} is not a five-field cron expression (minute hour day month weekday)"
        )
    return value


def check_timezone(value: str) -> str:
    """Return ``value`` if it names an IANA time zone.

    Raises:
        ValueError: naming the value.
    """
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{value!r} is not an IANA time zone name, e.g. Europe/Berlin") from error
    return value


class ArchiveLimits(BaseModel):
    """Upper bounds an archive must respect to be extracted (archive-bomb guard).

    Attributes:
        max_files: most entries (files and folders) an archive may hold; FER2013 has ~35,900.
        max_total_bytes: most uncompressed bytes an archive may extract to.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_files: int = Field(200_000, ge=1, description="Most entries an archive may hold.")
    max_total_bytes: int = Field(
        4 * 1024**3, ge=1, description="Most uncompressed bytes an archive may extract to."
    )


class Settings(BaseSettings):
    """Platform settings. Every field is listed in docs/settings.md (see :func:`settings_table`).

    Values come from environment variables prefixed ``FER_`` (``FER_HOME``, ``FER_S3_BUCKET``...)
    or from a ``.env`` file in the working directory.
    """

    model_config = SettingsConfigDict(
        env_prefix="FER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    dataset: str = Field(
        "kaggle://msambare/fer2013",
        description="Dataset source in FER layout: a folder or .zip/.tar.gz archive, an "
        "http(s):// archive, an s3:// prefix or archive, or kaggle://owner/dataset.",
    )
    home: Path = Field(
        Path("~/.fer"),
        description="Platform home: caches, run directories, service data, pids and logs.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint; unset means the local SeaweedFS at 127.0.0.1:<s3_port>.",
    )
    s3_port: int = Field(8333, ge=1, le=65535, description="Port of the local SeaweedFS S3 API.")
    s3_bucket: str = Field("fer", min_length=3, description="Bucket holding models and reports.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_access_key_id: str = Field("fer-dev", description="S3 access key id.")
    s3_secret_access_key: SecretStr = Field(
        SecretStr("fer-dev-secret"), description="S3 secret access key."
    )
    s3_attempts: int = Field(
        6,
        ge=1,
        le=20,
        description="Attempts per store call on a transient error (connection refused, timeout, "
        "5xx), with boto3's jittered exponential backoff between them: six wait up to about "
        "half a minute in all (15 s on average) for the store to come back; fewer fail faster.",
    )
    prefect_api_url: str | None = Field(
        None,
        description="Prefect API URL; unset means the local server on <prefect_port>.",
    )
    prefect_port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server.")
    serve_host: str = Field("127.0.0.1", description="Interface the Gradio app binds to.")
    serve_port: int = Field(7860, ge=1, le=65535, description="Port of the Gradio app.")
    serve_auth: SecretStr | None = Field(
        None,
        description="Access control for the page and the API: a bearer token, or "
        "comma-separated user:password pairs. Unset: open, and `fer serve` refuses a host "
        "other than loopback unless given --public. The probes and /metrics stay open.",
    )
    serve_max_stale_seconds: float = Field(
        86400.0,
        ge=0,
        description="/readyz answers 503 once the model store has not answered for this long "
        "(the model served may be out of date); 0: never. A day by default, so a store outage "
        "does not take every replica out before the next nightly run.",
    )
    serve_drain_seconds: float = Field(
        5.0,
        ge=0,
        le=120,
        description="On SIGTERM, how long the server answers /readyz with 503 while still "
        "serving, so load balancers stop sending; then requests in flight finish and it exits.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as JSON objects (one per line)."
    )
    archive_max_files: int = Field(
        200_000, ge=1, description="Most files a dataset archive may hold (archive-bomb guard)."
    )
    archive_max_bytes: int = Field(
        4 * 1024**3, ge=1, description="Most bytes a dataset archive may extract to."
    )
    champion_poll_seconds: float = Field(
        10.0, gt=0, description="How often the app checks the store for a newly promoted model."
    )
    serve_max_upload_bytes: int = Field(
        20 * 1024**2, ge=1, description="Largest image file the app accepts, in bytes."
    )
    serve_max_pixels: int = Field(
        2_000_000, ge=10_000, description="Images with more pixels are downscaled to this."
    )
    serve_reject_pixels: int = Field(
        50_000_000,
        ge=10_000,
        description="Images with more pixels are refused before they are decoded.",
    )
    serve_detect_side: int = Field(
        640,
        ge=64,
        le=4096,
        description="Long side, in pixels, of the copy of a photo that faces are searched on: "
        "faces below about 1/30 of it are missed, and detection time grows with its square "
        "(bench/RESULTS.md, Face detection).",
    )
    retrain_cron: str = Field(
        "0 2 * * *",
        description="Cron schedule of the `retrain/nightly` deployment (five fields).",
    )
    retrain_timezone: str = Field(
        "UTC", description="IANA time zone the cron schedule is read in, e.g. Europe/Berlin."
    )
    health_cron: str = Field(
        "0 6 * * *",
        description="Cron schedule of the `health/daily` deployment (five fields), in "
        "FER_RETRAIN_TIMEZONE.",
    )
    health_metrics_urls: str | None = Field(
        None,
        description="Comma-separated /metrics addresses of the serving replicas the daily "
        "health report reads (one per replica: behind a load balancer, list each pod); unset: "
        "the local app, http://127.0.0.1:<serve_port>/metrics.",
    )
    health_drift_share: float = Field(
        0.10,
        gt=0,
        lt=1,
        description="The daily health report flags an emotion whose share of the predictions "
        "moved more than this week over week (0.10: ten percentage points) as possible drift.",
    )
    work_pool: str = Field(
        "fer-process", min_length=1, description="Prefect work pool the worker polls."
    )
    work_pool_type: Literal["process", "kubernetes"] = Field(
        "process",
        description="Worker type of the pool: process (flow runs as local processes) or "
        "kubernetes (each flow run a Kubernetes Job; infra/k8s).",
    )
    alert_block: str | None = Field(
        None,
        description="Prefect notification block that alerts go through, as "
        "<block-type-slug>/<name> (e.g. slack-webhook/fer-alerts); `fer deploy` then creates "
        "the automations for failed, crashed and late retrain runs. Unset: alerts are off.",
    )
    distribute: Literal["none", "mirrored"] = Field(
        "none",
        description="How training uses the machine's accelerators: none (one device) or "
        "mirrored (tf.distribute.MirroredStrategy over every local GPU).",
    )

    @field_validator("alert_block")
    @classmethod
    def _block_name(cls, value: str | None) -> str | None:
        if value is not None and value.count("/") != 1:
            raise ValueError(
                f"{value!r} is not <block-type-slug>/<name>, e.g. slack-webhook/fer-alerts "
                "(`prefect block ls` lists them)"
            )
        return value

    @field_validator("retrain_cron", "health_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("retrain_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @cached_property
    def home_dir(self) -> Path:
        """The platform home with ``~`` expanded, as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def archive_limits(self) -> ArchiveLimits:
        """Limits applied when extracting dataset archives."""
        return ArchiveLimits(
            max_files=self.archive_max_files, max_total_bytes=self.archive_max_bytes
        )

    @property
    def s3_url(self) -> str:
        """The S3 endpoint that clients use."""
        return self.s3_endpoint_url or f"http://127.0.0.1:{self.s3_port}"

    @property
    def metrics_urls(self) -> list[str]:
        """The serving replicas' ``/metrics`` addresses the daily health report reads."""
        if self.health_metrics_urls:
            return [url.strip() for url in self.health_metrics_urls.split(",") if url.strip()]
        return [f"http://127.0.0.1:{self.serve_port}/metrics"]

    @property
    def prefect_url(self) -> str:
        """The Prefect API URL that clients use."""
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        """The Prefect UI address (the API URL without ``/api``)."""
        return self.prefect_url.removesuffix("/").removesuffix("/api")


def get_settings() -> Settings:
    """Read the settings from the environment (and ``.env``) now.

    Returns:
        A fresh ``Settings``; environment changes since the last call are seen.

    Raises:
        ConfigError: naming each invalid ``FER_*`` variable and why it is invalid.
    """
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"FER_{'_'.join(str(part) for part in item['loc']).upper()}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(
            f"invalid setting(s): {problems}; fix the environment variable or .env entry"
        ) from error


def _default_text(value: object) -> str:
    secret = getattr(value, "get_secret_value", None)
    if secret is not None:
        value = secret()
    return "unset" if value is None else f"`{value}`"


def settings_table() -> str:
    """The settings as a Markdown table (variable, default, meaning), from the fields themselves.

    ``docs/settings.md`` holds its output; a test fails when the two disagree. Regenerate with
    ``uv run python -c "from model.settings import settings_table; print(settings_table())"``.
    """
    rows = [
        f"| `FER_{name.upper()}` | {_default_text(field.default)} | {field.description} |"
        for name, field in Settings.model_fields.items()
    ]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows])
