"""Wire schemas of the registry's HTTP API, shared by the registry and its clients.

A model version is uploaded as an artifact plus `VersionMetadata`; what comes back is a
`ModelVersion`. The reference profile is what the drift monitor compares live data with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, Field, model_validator

from shared.schema import DatasetSchema
from shared.validation import FeatureValue


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A time in UTC. SQLite hands the registry's times back without their zone; the API always
writes one (RFC 3339 `date-time`, as the OpenAPI schema says)."""


class GateResult(BaseModel):
    """One validation gate of a training run, with the value it measured."""

    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


class GateReport(BaseModel):
    passed: bool
    gates: list[GateResult]


class DatasetManifest(BaseModel):
    """What a model was trained on: enough to find and check the same data again."""

    version: str
    rows: int
    holdout_rows: int
    time_start: datetime
    time_end: datetime
    sha256: str
    """sha256 of the Parquet file: the same rows give the same bytes and version."""
    source: str
    offsets: dict[str, list[int]] = {}
    """Per source partition, the first and last offset of the rows used."""
    columns: list[str] = []
    path: str | None = None
    """The Parquet file, relative to the trainer's dataset folder."""


class ReferenceProfile(BaseModel):
    """A sample of the training features (for drift tests) and the validation accuracy (for
    the live-accuracy comparison)."""

    sample: dict[str, list[FeatureValue]]
    validation_accuracy: float
    class_frequencies: dict[str, float] = {}
    predictions: dict[str, list[FeatureValue]] = {}
    """The model's own outputs on its holdout (rows it did not train on): `prediction` (class,
    as text) and `score` (the top class's probability), the reference for prediction drift,
    and `correct` (1 where the prediction was right), which calibrates the score into an
    estimate of accuracy for the monitor's estimated-performance signal."""


class Lineage(BaseModel):
    run_id: str
    trigger: str
    trigger_event_id: str | None = None
    correlation_id: str | None = None
    recalled_from: int | None = None
    """The earlier version whose model this one registers again (a recurring concept)."""


class VersionMetadata(BaseModel):
    """Everything uploaded with an artifact. A version without an input schema is refused."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    input_schema: DatasetSchema
    metrics: dict[str, float] = {}
    gate_report: GateReport
    dataset: DatasetManifest | None = None
    reference_profile: ReferenceProfile | None = None
    estimator: str = ""
    package_versions: dict[str, str] = {}
    lineage: Lineage


MAX_VERSION = 2**31 - 1
"""The largest version number (a 32-bit SQL integer)."""

# A version number in a URL path: bounded so that a huge number is a 422, not an integer
# overflow in the database (schemathesis found that 500).
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Version number")]


class StagedArtifact(BaseModel):
    """An artifact the registry verified and holds for the version that will name it."""

    digest: str
    size: int


class ModelVersion(VersionMetadata):
    name: str
    version: int
    created_at: UtcDatetime
    status: Literal["active", "archived"] = "active"
    signature: str = ""
    """HMAC-SHA256 of the digest under the registry's signing key; loaders verify it."""
    aliases: list[str] = []


class AliasChange(BaseModel):
    """One move of an alias (promotion, approval, rollback), kept forever."""

    alias: str
    version: int | None
    previous_version: int | None
    reason: str
    correlation_id: str | None = None
    at: UtcDatetime
    environment: str | None = None
    """The environment whose alias moved (`production` for champion and challenger)."""
    actor: str | None = None
    """Who moved it: the role of the token (`operator`, `monitor`, `trainer` for a policy on
    upload) or `registry` (an environment's `after` rule)."""


ENVIRONMENT_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
PRODUCTION = "production"


class EnvironmentRule(BaseModel):
    """An environment a version passes through before production, and how it gets there."""

    name: str = Field(pattern=ENVIRONMENT_PATTERN)
    """Also the environment's alias (serving instances with `CTLOOP_SERVING_ENVIRONMENT` set to
    it follow that alias)."""
    rule: Literal["auto", "after", "manual"]
    """`auto`: on upload when the gates passed (first environment), or as soon as the version
    reaches the previous environment; `after`: automatically once the version has been in the
    previous environment for `after_s` seconds without being rolled back there; `manual`: an
    operator promotes it (with a reason, recorded)."""
    after_s: float = Field(0.0, ge=0, le=90 * 24 * 3600)
    """For `after`: seconds in the previous environment."""
    after_labelled: int = Field(0, ge=0)
    """For `after`: labelled predictions the version made in the previous environment, as that
    environment's monitor counted them (`quality.measured`). Both conditions must hold."""

    @model_validator(mode="after")
    def _not_reserved(self) -> EnvironmentRule:
        if self.name in (PRODUCTION, "champion", "challenger"):
            raise ValueError(f"{self.name!r} is reserved: production is always the last environment")
        return self


class EnvironmentInfo(BaseModel):
    """One environment as the registry runs it: `GET /v1/environments`, in promotion order."""

    name: str
    alias: str
    rule: Literal["auto", "after", "manual", "shadow"]
    after_s: float = 0.0
    after_labelled: int = 0
    previous: str | None
    """The environment a version must have reached first (None: the first one)."""


class VersionLineage(BaseModel):
    """Where a version came from and what happened to it: dataset -> run -> trigger -> promotions."""

    name: str
    version: int
    dataset: DatasetManifest | None
    run_id: str
    trigger: str
    trigger_event_id: str | None
    correlation_id: str | None
    estimator: str
    package_versions: dict[str, str]
    promotions: list[AliasChange]


class ModelSummary(BaseModel):
    name: str
    latest_version: int
    aliases: dict[str, int]


class ConditionalChange(BaseModel):
    """What every alias change may carry: the version the caller expects to replace (the
    registry answers 409 when the alias points elsewhere now: someone moved it since the caller
    looked), and the override that promoting a rolled-back version to champion needs."""

    replaces: int | None = Field(None, ge=1, le=MAX_VERSION)
    """The version the alias must point at now; None changes it whatever it points at."""
    override_rollback: bool = False
    """Make champion a version that was once rolled back from champion (refused otherwise)."""


class PromoteRequest(ConditionalChange):
    alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    reason: str = Field("manual", max_length=200)
    environment: str | None = Field(None, pattern=ENVIRONMENT_PATTERN)
    """Promote into this environment (its alias; overrides `alias`)."""


class ApproveRequest(ConditionalChange):
    reason: str = Field("approved", max_length=200)
    environment: str = Field(PRODUCTION, pattern=ENVIRONMENT_PATTERN)
    """The environment the version is approved for (its alias moves to it)."""


class AliasTarget(ConditionalChange):
    version: int = Field(ge=1, le=MAX_VERSION)
    reason: str = Field("manual", max_length=200)


class RollbackRequest(BaseModel):
    reason: str = Field("manual rollback", max_length=200)
    environment: str = Field(PRODUCTION, pattern=ENVIRONMENT_PATTERN)
    """The environment whose alias goes back to the version it named before."""
    replaces: int | None = Field(None, ge=1, le=MAX_VERSION)
    """The champion the caller wants to roll back from; 409 when the champion is another
    version now (e.g. someone rolled back already)."""
