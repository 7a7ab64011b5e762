"""Settings for every ctloop service: one module, environment variables with the `CTLOOP_` prefix.

`CommonSettings` holds what all services share (broker, schema, registry address); each service
has one subclass that adds its own fields, named after the service so that the environment
variable says whom it configures (`CTLOOP_SERVING_PORT`, `CTLOOP_TRAINER_MIN_EXAMPLES`).

>>> import os
>>> os.environ["CTLOOP_SERVING_PORT"] = "9100"
>>> ServingSettings().serving_port
9100
>>> del os.environ["CTLOOP_SERVING_PORT"]
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.registry_api import ENVIRONMENT_PATTERN, PRODUCTION, EnvironmentRule
from shared.signing import BadKey, Signer, Verifier, dev_keypair

PLACEHOLDER_TOKENS = {"", "changeme", "change-me", "secret", "dev-token", "dev-signing-key"}
Role = Literal["producer", "trainer", "operator", "monitor", "reader"]
ROLES: tuple[Role, ...] = ("producer", "trainer", "operator", "monitor", "reader")
RETIRED_VARIABLES = {
    "CTLOOP_REGISTRY_TOKEN": "one token per role now (CTLOOP_TRAINER_TOKEN, CTLOOP_OPERATOR_TOKEN, "
    "CTLOOP_MONITOR_TOKEN, CTLOOP_PRODUCER_TOKEN, CTLOOP_READER_TOKEN)",
    "CTLOOP_SIGNING_KEY": "versions are signed with Ed25519 now (CTLOOP_SIGNING_PRIVATE_KEY on the "
    "registry, CTLOOP_SIGNING_PUBLIC_KEY on loaders; to re-sign old versions once, "
    "CTLOOP_LEGACY_SIGNING_KEY)",
}


REQUIRED_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "registry": ("trainer", "operator", "monitor", "private_key"),
    "ingest": ("producer",),
    "trainer": ("trainer", "public_key"),
    "monitor": ("monitor",),
    "serving": ("public_key",),
    "console": (),
}
"""The credentials each service refuses to start without (outside dev mode): role tokens, and
the registry's private or public key. The reader token is optional everywhere."""


def alias_of_environment(environment: str) -> str:
    """Production's alias is `champion`; every other environment's is its name."""
    return "champion" if environment == PRODUCTION else environment


class CredentialsError(ValueError):
    """A service was started without the credentials its role needs (or with placeholders)."""


DEFAULT_SCHEMA = Path(__file__).parent / "schemas" / "demo.yaml"


class CommonSettings(BaseSettings):
    """Configuration shared by all services."""

    # NOTE: hide_input_in_errors: a refused setting's error names the variable and the reason,
    # never the values given (pydantic echoed the whole input, secrets included).
    model_config = SettingsConfigDict(
        env_prefix="CTLOOP_",
        extra="ignore",
        populate_by_name=True,
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, `host:port[,host:port]`. `ctloop up` sets it to its embedded
    broker when it starts one."""

    topic_partitions: int = Field(3, ge=1, le=256)
    """Partitions of each ctloop topic, used when the topics are created at start-up."""

    kafka_session_timeout_ms: int = Field(8000, ge=3000)
    """Consumer-group session timeout. Tansu delays a group's first join by about half of it,
    so the short default keeps start-up fast; raise it on a real cluster."""

    kafka_heartbeat_interval_ms: int = Field(1000, ge=100)
    """Consumer heartbeat interval; must stay well below the session timeout."""

    kafka_loop_fetch_wait_ms: int = Field(50, ge=1, le=1500)
    """How long a fetch by the loop's own consumers (the monitor's faust streams; drift,
    models, training, examples and control events) may wait at the broker for data: each hop
    of the loop can wait this long. NOTE: measured on Tansu (one hop, ~300 messages/s), the
    median latency was 149 ms at kafka-python's default wait (500 ms), 466 ms at faust's
    (1,500 ms) and 14-15 ms at 20 ms; an idle consumer costs 1.5% of a core at 500 ms, 4.1%
    at 50 ms and 8.3% at 20 ms. The data plane's consumers (ingest's `raw`, the console, the
    registry's evidence) keep kafka-python's default."""

    schema_path: Path = Field(DEFAULT_SCHEMA, validation_alias="CTLOOP_SCHEMA")
    """The dataset schema file (YAML or JSON) that every service reads the same way."""

    registry_url: str = "http://127.0.0.1:8002"
    """Base URL of the registry's HTTP API (artifacts and metadata). Registry replicas with no
    load balancer in front: their URLs, comma-separated; clients stay with the one that
    answered last and move to the next when it does not answer (the console uses the first)."""

    producer_token: SecretStr = SecretStr("")
    """Bearer token of the `producer` role: writes to ingest (`POST /v1/records`,
    `POST /v1/labels`). Ingest needs it; so do the clients that send records over HTTP."""

    trainer_token: SecretStr = SecretStr("")
    """Bearer token of the `trainer` role: uploads of new versions to the registry (and reads).
    The trainer and the registry need it."""

    operator_token: SecretStr = SecretStr("")
    """Bearer token of the `operator` role: promote, approve, roll back, archive and move
    aliases in the registry, start a training run by hand, sign in to the console. Only the
    registry holds it (the trainer and the console ask the registry whether a caller's token
    is an operator's); people and `ctloop models`/`ctloop train` present it."""

    monitor_token: SecretStr = SecretStr("")
    """Bearer token of the `monitor` role: the loop's own changes to aliases, and no others —
    rolling back a champion, and making the current challenger champion after it won its
    shadow comparison. The monitor and the registry need it."""

    reader_token: SecretStr = SecretStr("")
    """Bearer token of the `reader` role, optional. When set, the registry's reads (versions,
    reference profiles with their training rows, artifacts) and the monitor's drift reads need
    it or any role's token; when unset they stay open. Serving and the console need it when
    set."""

    signing_private_key: SecretStr = SecretStr("")
    """The registry's Ed25519 private key (base64 of 32 bytes; `ctloop credentials` makes a
    pair): it signs every version. Only the registry holds it."""

    signing_public_key: str = ""
    """The registry's Ed25519 public key (base64 of 32 bytes): serving and the trainer check
    every version's signature with it."""

    legacy_signing_key: SecretStr = SecretStr("")
    """The retired HMAC key (the old `CTLOOP_SIGNING_KEY`), set once on the registry to
    re-sign versions registered before Ed25519 (docs/security.md); unset it afterwards."""

    dev_mode: bool = False
    """Local development only: an unset credential falls back to a public placeholder
    (`dev-<role>-token`, and a key pair from a public seed). Never in a deployment;
    `ctloop up` and `ctloop demo` generate real credentials instead (`credentials.env` in the
    data folder)."""

    instance: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """This process's instance name, carried in every event's `source`."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the service."""

    consumer_max_attempts: int = Field(3, ge=1, le=20)
    """How often a consumer tries a batch that its handler fails on (waiting
    `consumer_retry_backoff_s`, then twice as long each time) before it takes the messages one
    at a time and dead-letters each that still fails. Broker errors are retried without bound."""

    consumer_retry_backoff_s: float = Field(0.5, gt=0, le=60)
    """The first wait between attempts at a failing batch (doubled each attempt)."""

    data_dir: Path = Path("var")
    """Where services that keep local files (registry store, serving cache, trainer datasets)
    put them; each uses a sub-folder named after itself."""

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    def token(self, role: Role) -> str:
        """The role's token; in dev mode an unset one (but the optional reader's) is the
        role's public placeholder."""
        value = self._secret(role).get_secret_value().strip()
        if not value and self.dev_mode and role != "reader":
            return f"dev-{role}-token"
        return value

    def _secret(self, role: Role) -> SecretStr:
        secret = getattr(self, f"{role}_token")
        assert isinstance(secret, SecretStr)
        return secret

    def signer(self) -> Signer:
        """The registry's signer (the development key pair in dev mode when none is set)."""
        private = self.signing_private_key.get_secret_value().strip()
        return Signer(private or dev_keypair()[0])

    def verifier(self) -> Verifier:
        """What loaders check signatures with (the development public key in dev mode when
        none is set)."""
        return Verifier(self.signing_public_key.strip() or dev_keypair()[1])

    def require_for(self, service: str) -> None:
        """`require` what `service` needs (REQUIRED_CREDENTIALS)."""
        needs = REQUIRED_CREDENTIALS[service]
        roles = [role for role in ROLES if role in needs]
        self.require(*roles, private_key="private_key" in needs, public_key="public_key" in needs)

    def require(self, *roles: Role, private_key: bool = False, public_key: bool = False) -> None:
        """Refuse to start (CredentialsError naming each variable and why, never a value)
        without the credentials a service needs, or with a placeholder, outside dev mode."""
        problems = [
            f"{retired} is retired: {instead}"
            for retired, instead in RETIRED_VARIABLES.items()
            if retired in os.environ
        ]
        if not self.dev_mode:
            for role in roles:
                value = self.token(role)
                variable = f"CTLOOP_{role.upper()}_TOKEN"
                if not value:
                    problems.append(f"{variable} is not set")
                elif _placeholder(value):
                    problems.append(f"{variable} is a placeholder or shorter than 16 characters")
            dev_private, dev_public = dev_keypair()
            for wanted, variable, value, dev_value in (
                (
                    private_key,
                    "CTLOOP_SIGNING_PRIVATE_KEY",
                    self.signing_private_key.get_secret_value(),
                    dev_private,
                ),
                (public_key, "CTLOOP_SIGNING_PUBLIC_KEY", self.signing_public_key, dev_public),
            ):
                if wanted and not value.strip():
                    problems.append(f"{variable} is not set")
                elif wanted and value.strip() == dev_value:
                    problems.append(f"{variable} is the public development key")
        for wanted, variable, make in (
            (private_key, "CTLOOP_SIGNING_PRIVATE_KEY", self.signer),
            (public_key, "CTLOOP_SIGNING_PUBLIC_KEY", self.verifier),
        ):
            if wanted:
                try:
                    make()
                except BadKey as exc:
                    problems.append(f"{variable} is not a valid key: {exc}")
        if problems:
            raise CredentialsError(
                "; ".join(problems)
                + " (generate a set with `ctloop credentials`, or CTLOOP_DEV_MODE=true for local"
                " development; docs/security.md)"
            )


def _placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_TOKENS or lowered.startswith("dev-") or len(lowered) < 16


class HTTPServiceSettings(CommonSettings):
    """A service that answers HTTP (all five do: /healthz and /metrics at least)."""

    host: str = "127.0.0.1"
    """Interface the HTTP server binds to."""

    http_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    """Largest request body this service's endpoints accept; a larger one gets 413 before it
    is read. Ingest (`CTLOOP_INGEST_MAX_BODY_BYTES`), serving (`CTLOOP_SERVING_MAX_BODY_BYTES`)
    and the registry's artifact upload (`CTLOOP_REGISTRY_MAX_ARTIFACT_BYTES`) have their own."""


class ServingSettings(HTTPServiceSettings):
    """The prediction service."""

    serving_port: int = 8000
    """HTTP port of the serving service."""
    serving_grpc_port: int = Field(8081, ge=1, le=65535)
    """gRPC port of the serving service (the Open Inference Protocol V2 over gRPC)."""
    serving_grpc_workers: int = Field(64, ge=1, le=1024)
    """gRPC calls served at once (a thread each; more wait in line). Calls in flight together
    share one model predict (micro-batching), so fewer workers than concurrent callers cost
    throughput."""

    serving_log_buffer: int = Field(10_000, ge=1)
    """Prediction-log records that may wait for Kafka before new ones are dropped (and
    counted): the log never blocks a request."""

    serving_max_batch_rows: int = Field(256, ge=1)
    """Most rows one model call may predict for concurrent requests together (1: no
    micro-batching; each request predicts alone)."""

    serving_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest prediction request body (`/v1` and V2 over HTTP; larger gets 413 before it is
    read) and largest gRPC message (larger gets RESOURCE_EXHAUSTED)."""

    serving_max_rows: int = Field(10_000, ge=1)
    """Most rows one prediction request may carry; more get 413."""

    serving_shadow_fraction: float = Field(1.0, ge=0, le=1)
    """Share of prediction requests also scored by the challenger (when one exists), off the
    request path; its predictions are logged with `shadow: true` for the comparison."""

    serving_shadow_queue: int = Field(1000, ge=1)
    """Requests that may wait for shadow scoring before new ones are skipped (and counted)."""

    serving_swap_check: bool = True
    """Before a new champion takes the traffic, time it and the current one on the same recent
    rows (one at a time) and refuse it if it is too slow (`serving_swap_p99_ratio`)."""

    serving_swap_p99_ratio: float = Field(2.0, ge=1.0)
    """A new champion may take at most this many times the current one's p99 per row..."""

    serving_swap_p99_slack_ms: float = Field(2.0, ge=0)
    """...plus this many milliseconds (so that timer noise on very fast models refuses none)."""

    serving_swap_other_estimator_ms: float = Field(25.0, gt=0)
    """...but a new champion that ends in another estimator than the current one (the trainer's
    small-sample choice alternates logistic regression and the configured estimator) may take
    up to this many milliseconds per row instead: the ratio would compare two different models.
    25 is the trainer's own latency gate."""

    serving_swap_check_rows: int = Field(8, ge=1, le=256)
    """Recent rows the swap check times both models on, one at a time. Each costs two one-row
    predicts while the new model waits (services/serving/perf_check.py: 16 rows delayed the
    drift's first swap by 124-348 ms under the demo's load, 8 rows by 70-101 ms)."""

    serving_swap_check_repeats: int = Field(1, ge=1)
    """Times each row is predicted by each model in the swap check (the fastest counts).
    NOTE: 32 rows x 5 repeats took 2.4 s on an idle core with the demo's HistGradientBoosting
    pipeline (~8 ms per one-row predict on this machine) and 8-9 s per swap in the loop test
    under load, while the drift's answer waited (services/serving/perf_check.py)."""

    serving_registry_retry_s: float = Field(2.0, gt=0)
    """Seconds between attempts to reach the registry while no model is loaded; also the first
    wait before a version the swap check refused, or the registry did not hand over, is
    tried again (then 2x, 4x, 8x)."""

    serving_environment: str = Field(PRODUCTION, pattern=ENVIRONMENT_PATTERN)
    """The environment this instance serves: it follows that environment's alias (`champion`
    for production, the environment's name otherwise) and shadows a challenger only in
    production."""

    @property
    def serving_alias(self) -> str:
        return alias_of_environment(self.serving_environment)


class IngestSettings(HTTPServiceSettings):
    """The intake of records and labels."""

    ingest_port: int = 8001
    """HTTP port of the ingest service."""

    ingest_max_batch: int = Field(5_000, ge=1)
    """Most records (or labels) in one request; more gets 413."""

    ingest_max_unsettled: int = Field(10_000, ge=1)
    """Batches (requests or `raw` polls) whose writes may wait for the broker's answer at once;
    beyond it a request gets 503 with Retry-After (and the `raw` consumer waits)."""

    ingest_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger gets 413."""

    ingest_dedupe_window_s: float = Field(3600.0, ge=0)
    """A record id seen again within this window is a retry, not a new record."""

    ingest_dedupe_capacity: int = Field(1_000_000, ge=1)
    """Most record ids remembered for de-duplication (oldest forgotten first)."""

    ingest_ack_timeout_s: float = Field(10.0, gt=0)
    """How long a request waits for the broker to acknowledge its records before 503."""

    ingest_retry_after_s: int = Field(5, ge=1)
    """The `Retry-After` a 503 carries when the broker cannot take writes."""

    ingest_workers: int = Field(1, ge=1, le=32)
    """Processes of one ingest replica, sharing its port (uvicorn's workers): each takes
    records at most as fast as one core runs Python. Each has its own de-duplication window,
    as replicas do (docs/operations.md), and is a member of the `raw` consumer group."""


class RegistrySettings(HTTPServiceSettings):
    """The model registry."""

    registry_port: int = 8002
    """HTTP port of the registry."""

    registry_db_url: str = ""
    """SQLAlchemy URL of the metadata database; empty means SQLite in `data_dir/registry`."""

    registry_artifact_url: str = ""
    """Where artifacts are stored: `database` (in the registry's database, which registry
    replicas share: set it when running more than one), a folder, or an fsspec URL whose
    filesystem is installed; empty means the folder `data_dir/registry/artifacts`."""

    registry_max_artifact_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    """Largest upload (artifact and metadata) the registry takes; larger gets 413 before it is
    read. Its other endpoints take `CTLOOP_HTTP_MAX_BODY_BYTES`."""

    registry_outbox_keep: int = Field(100_000, ge=100)
    """Sent events kept in the outbox table (they are also what `GET …/events` shows); older
    sent ones are deleted once a minute. Unsent events are never deleted."""

    registry_promotion_policy: Literal["auto", "shadow", "manual"] = "auto"
    """How a version reaches production (the last environment, alias `champion`) once it is in
    the environment before it: `auto`, at once; `shadow`, as the challenger (serving shadows it
    and the monitor promotes it once enough labelled shadow predictions show it at least as
    good; the first model of a name becomes champion); `manual`, when an operator approves it
    (`POST …/approve`)."""

    registry_environments: list[EnvironmentRule] = Field(
        default_factory=lambda: [EnvironmentRule(name="staging", rule="auto")]
    )
    """The environments a version passes through before production, in order (JSON: a list of
    `{"name", "rule", "after_s", "after_labelled"}`; rules `auto`, `after`, `manual`, see docs/security.md). A
    version can reach an environment only after the previous one. `[]`: production only."""

    registry_environment_check_s: float = Field(5.0, ge=0.5, le=3600)
    """How often the registry looks for versions an `after` rule lets into the next environment."""

    @field_validator("registry_environments")
    @classmethod
    def _environments_in_order(cls, value: list[EnvironmentRule]) -> list[EnvironmentRule]:
        names = [e.name for e in value]
        if len(set(names)) != len(names):
            raise ValueError(f"environment names must be unique, got {names}")
        if value and value[0].rule == "after":
            raise ValueError(f"{value[0].name!r} is first: `after` needs a previous environment")
        return value


class TrainerSettings(HTTPServiceSettings):
    """The training service."""

    trainer_port: int = 8003
    """HTTP port of the trainer."""

    trainer_min_examples: int = Field(800, ge=20)
    """Labelled examples needed to train the first model (cold start)."""

    trainer_min_post_drift: int = Field(100, ge=20)
    """Labelled examples from after a drift's onset needed for the first candidate trained on
    them. Small on purpose: a small model that beats a broken champion on post-drift data is
    worth serving while more data arrives (`trainer_refresh_factor` retrains it on more).
    NOTE: measured with bench_loop (3 seeds each, same machine, one after the other), 100
    against 150: the abrupt stream's first new model 240 vs 320 records after the drift, 79.0%
    vs 78.4% over the first 1,000 after it; with 10% label noise 260 vs 300 records, 72.0% vs
    70.2%."""

    trainer_refresh_factor: float = Field(2.0, ge=0)
    """Progressive retraining: after a drift's first candidate (and, with
    `trainer_refresh_first_model`, after the first model) retrain the same episode each time the
    examples it may use (those since the drift's onset, or all of them) have grown by this
    factor, until the training window (`trainer_max_examples`) is full of them. A refresh must
    score at least as well as the champion on its own (newest) holdout, with no tolerance.
    0 (or anything up to 1): off."""

    trainer_refresh_first_model: bool = True
    """Refresh the first model too as labelled data grows (800, 1,600, 3,200, ... examples).
    NOTE: measured on the demo stream, 3 seeds each, on and off: accuracy over the last 1,000
    records before the drift 94.0% vs 92.8% (the model improves with data), the drift's first
    new model 1,940 vs 1,920 records after the drift, accuracy after it 91.1% vs 92.1%. A
    refresh promoted just before a drift restarts the monitor's watch on the new champion (and
    once drew an auto-rollback that cost a swap); `false` avoids that."""

    trainer_schedule_s: float = Field(0.0, ge=0)
    """Retrain on the sliding window every this many seconds (0: no schedule)."""

    trainer_retrain_every: int = Field(0, ge=0)
    """Retrain once this many new labelled examples have arrived since the last run (0: off)."""

    trainer_max_examples: int = Field(50_000, ge=100)
    """Examples kept in memory (oldest dropped first); also the sliding training window."""

    trainer_runs_kept: int = Field(500, ge=1)
    """Run reports kept in memory (what `GET /v1/runs` lists); older ones are dropped."""

    trainer_datasets_kept: int = Field(100, ge=1)
    """Dataset folders kept under `data_dir/trainer/datasets` (newest first). A registered
    version's manifest still names its rows' source offsets on `examples` after its folder
    is pruned."""

    trainer_holdout_fraction: float = Field(0.25, gt=0.05, lt=0.9)
    """The newest fraction of the training set held out for the gates (time-ordered)."""

    trainer_min_accuracy: float = Field(0.6, ge=0, le=1)
    """Gate: the candidate's holdout accuracy must reach this."""

    trainer_recall_episodes: int = Field(3, ge=0)
    """Recurring concepts: a drift's first candidate competes with the newest model of each of
    this many earlier episodes (other than the champion's), each scored on all the post-drift
    examples (none of which it saw); when one scores at least as well as the fresh fit on its
    holdout, that model goes through the gates instead and is registered again as the new
    version (its lineage says which it recalls); the episode's refreshes must beat it. 0: off."""

    trainer_recall_at_alarm: int = Field(40, ge=0)
    """Recurring concepts, sooner: once a drift has this many labelled post-onset examples (and
    fewer than `trainer_min_post_drift`), the trainer scores those earlier episodes' models on
    them before any fit. The best is registered again at once, through the same gates, when
    it scores at least its own holdout accuracy less `RECALL_SLACK` (its concept is back) and
    more than the champion; otherwise the drift waits for its first fit as usual. 0: off."""

    trainer_champion_tolerance: float = Field(0.01, ge=0, le=1)
    """Gate: the candidate may trail the champion on the same holdout by at most this."""

    trainer_threads: int = Field(1, ge=1)
    """OpenMP/BLAS threads for the fit (in the fit process) and for the trainer's own scoring.
    1 leaves the second of 2 cores to the work the trainer does beside the fit (the dataset
    write, the champion's score). Measured on 2 cores, when fits ran on the trainer's worker
    thread: a 37.5k-row HistGradientBoosting fit took 2.3 s with 2 threads (the spinning
    thread team of another thread competes for the cores) and 0.55 s with 1."""

    trainer_fit_timeout_s: float = Field(1800.0, gt=0)
    """A fit (with its serialization and gate measurements) still running after this long
    is stopped and its run fails; the next run gets a new fit process."""

    trainer_estimator: str = "sklearn.ensemble.HistGradientBoostingClassifier"
    """Import path of the estimator at the end of the pipeline."""

    trainer_estimator_params: dict[str, object] = Field(
        default_factory=lambda: dict[str, object](max_iter=100, random_state=0)
    )
    """Keyword arguments for the estimator (JSON in the environment)."""

    trainer_small_sample_estimator: str = "sklearn.linear_model.LogisticRegression"
    """Import path of a second estimator for small training sets (fewer than
    `trainer_small_sample_rows` rows): it competes with `trainer_estimator` by 3-fold
    cross-validation on the training rows, and the better (on a tie, this one: the simpler
    model) is fitted as the candidate; the holdout stays the gates'. A drift's first candidates
    learn from ~75 rows, where a boosted ensemble fits noise (under
    `trainer_small_sample_direct_rows` this one is fitted alone). The choice costs ~180 ms at 75
    rows and ~460 ms at 900 (one idle core). Empty: off.
    NOTE: measured offline (8 seeds per synthetic stream, 10 points of the rainfall data),
    accuracy over the next 1,000 records of a model fitted on the first 100 examples after a
    change (75 to train, 25 held out): HistGradientBoosting 83.9% and logistic regression 91.1%
    on the abrupt stream, 74.8% and 81.6% with label noise, 70.3% and 70.9% on rainfall."""

    trainer_small_sample_direct_rows: int = Field(100, ge=0)
    """Training sets with fewer rows than this (holdout excluded) are fitted with
    `trainer_small_sample_estimator` alone, without the cross-validated choice: a drift's first
    candidate (75 training rows at the default `trainer_min_post_drift`) goes out sooner.
    NOTE: measured offline (as above), a model fitted on the first 100 examples after a change
    and chosen by 5-fold cross-validation served the next 1,000 records at 91.1 / 81.3 / 83.3 /
    70.7% (abrupt, noisy, gradual, rainfall), logistic regression alone at 91.1 / 81.6 / 83.3 /
    70.9%; at 200 examples logistic regression still led HistGradientBoosting on all but rainfall
    (-0.3). The choice cost 463 ms at 75 rows against 22 ms for logistic regression alone
    (in-process, median of 5, 2026-12-06 on a slow day of this 2-core machine)."""

    trainer_small_sample_params: dict[str, object] = Field(default_factory=dict)
    """Keyword arguments for `trainer_small_sample_estimator` (JSON in the environment)."""

    trainer_small_sample_rows: int = Field(1000, ge=0)
    """Training sets with fewer rows than this (holdout excluded) let
    `trainer_small_sample_estimator` compete. From 1,000 on the configured estimator alone is
    fitted, so a large fit costs what it did."""


class MonitorSettings(HTTPServiceSettings):
    """The drift monitor."""

    monitor_port: int = 8004
    """HTTP port of the monitor."""

    monitor_window_kind: Literal["count", "time"] = "count"
    """Feature and prediction windows by record count (`monitor_window`) or by event time
    (`monitor_window_s`)."""

    monitor_window: int = Field(500, ge=50)
    """Records in a count window before it is tested against the reference. Each of N monitor
    workers sees 1/N of the records: use 500 / N to keep the one-worker detection delay
    (`ctloop up --replicas monitor=N` does; measured in benchmarks/RESULTS.md)."""

    monitor_window_s: float = Field(300.0, gt=0)
    """Seconds of event time in a time window."""

    monitor_window_slide: float = Field(0.0, ge=0)
    """0: tumbling windows (disjoint). Otherwise sliding: the last window is tested every this
    many records (count windows) or seconds (time windows)."""

    monitor_min_window: int = Field(100, ge=10)
    """Fewest records a window must hold before any verdict (a time window stays open until
    it has them)."""

    monitor_numeric_test: Literal["ks", "wasserstein", "psi"] = "ks"
    """Drift test for numeric features and prediction scores: Kolmogorov-Smirnov, Wasserstein
    distance over the reference's standard deviation (KS p-value), or PSI on reference deciles."""

    monitor_categorical_test: Literal["chi2", "jensen_shannon", "psi"] = "chi2"
    """Drift test for categorical features and predicted classes: chi-square (Cramér's V),
    Jensen-Shannon distance (G-test p-value), or PSI."""

    monitor_alpha: float = Field(0.01, gt=0, lt=0.5)
    """False-discovery rate for the per-feature tests (Benjamini-Hochberg)."""

    monitor_correction: Literal["benjamini-hochberg", "bonferroni"] = "benjamini-hochberg"
    """Multiple-testing correction across features: false-discovery rate (default) or the
    stricter family-wise Bonferroni."""

    monitor_cooldown_records: int = Field(200, ge=0)
    """No drift alarm after a new champion is promoted until this worker has seen this many
    records and labels since (its windows and error detector start afresh). Counted in data,
    not time, so that it means the same at 30 and at 30,000 records/s."""

    monitor_cooldown_s: float = Field(10.0, ge=0)
    """The cooldown's upper bound: it ends after this many seconds even if fewer records came
    (0: no cooldown)."""

    monitor_rearm_records: int = Field(20_000, ge=1)
    """After an alarm the monitor is quiet until its episode ends (a new champion, or the run
    it caused failing); if neither comes, it watches again after this many records and labels
    (or 300 seconds, whichever comes first)."""

    monitor_min_effect: float = Field(0.1, ge=0)
    """Effect size a feature must also show to count as drifted, in the chosen test's unit (KS
    statistic, Cramér's V, normalized Wasserstein, PSI or JS distance; 0.1 is a moderate shift
    for each), so that verdicts do not flip with the window size. Also the smallest accuracy
    drop that counts for the live-accuracy test and the automatic rollback."""

    monitor_estimated_performance: bool = True
    """Estimate the champion's accuracy on each prediction window from its confidence (the
    score calibrated on its holdout's outcomes, as NannyML's CBPE does) and alarm
    (`estimated-performance`) when it falls significantly, by `monitor_estimated_min_drop` at
    least, below the holdout's: a covariate shift that matters, seen before its labels come."""

    monitor_estimated_min_drop: float = Field(0.05, ge=0, le=1)
    """The smallest drop of the estimated accuracy below the holdout's that counts."""

    monitor_consecutive: int = Field(2, ge=1)
    """Drifting windows in a row needed before an alarm. Measured (benchmarks/bench_monitor.py,
    10 seeds of 100k stationary records, 10 features): 1 gave up to 2 false alarms per 100k,
    2 gave none, and still caught a 0.5 sd shift of one feature within 1,000 records."""

    monitor_error_delta: float = Field(0.05, gt=0)
    """Page-Hinkley tolerance on the 0/1 error stream: about half the smallest rise in error
    rate worth a retrain. Measured: 0.005 false-alarms on every stationary 20k stream at 9%
    error; 0.05 on none of 20, and still fires ~40 labels after a jump to 50% error."""

    monitor_error_threshold: float = Field(15.0, gt=0)
    """Page-Hinkley alarm threshold on the 0/1 error stream (one monitor worker judges every
    label, however many workers there are)."""

    monitor_min_error_samples: int = Field(30, ge=1)
    """Labelled predictions needed before the error detector may fire."""

    monitor_quality_report_s: float = Field(10.0, ge=0.5, le=3600)
    """How often the monitor sends the champion's live accuracy since its last report to the
    `monitoring` topic (the console's accuracy history); nothing is sent while no label arrives."""

    monitor_reconcile_s: float = Field(60.0, ge=5, le=3600)
    """How often each monitor worker asks the registry for the champion, in case it missed a
    promotion event (one that came before its control consumer was first assigned)."""

    monitor_auto_rollback: bool = True
    """Ask the registry to roll back when a new champion's first 200 labelled predictions are
    significantly worse (by `monitor_min_effect` at least) than the champion it replaced. Not
    when it started as well as the replaced one and its errors rose only later inside those
    200 (a drift under it, which the replaced model never saw either: the drift alarm answers
    that)."""

    monitor_shadow_min_labels: int = Field(200, ge=10)
    """Labelled records scored by both champion and challenger before the challenger may be
    promoted (policy `shadow`)."""

    monitor_shadow_tolerance: float = Field(0.0, ge=0, le=1)
    """The challenger is promoted when its accuracy on those records is at least the
    champion's minus this."""

    monitor_environment: str = Field(PRODUCTION, pattern=ENVIRONMENT_PATTERN)
    """The environment whose version this monitor watches (its alias: `champion` for
    production). A monitor of another environment runs in its own consumer group, judges that
    version's predictions and labels, rolls it back in that environment when it does worse
    than the one it replaced, and tags its alarms with the environment (the trainer retrains on
    production's alone); only production's monitor sends the joined examples and compares a
    challenger."""

    monitor_join_ttl_s: float = Field(3600.0, gt=0)
    """How long a prediction waits for its label (and a label for its prediction); also how far
    back a restarted monitor replays its inputs to rebuild the join."""


class ConsoleSettings(HTTPServiceSettings):
    """The console: the loop's history and its operator actions in a browser."""

    console_port: int = 8005
    """HTTP port of the console."""

    console_db_url: str = ""
    """SQLAlchemy URL of the console's history database; empty means SQLite in
    `data_dir/console`. The history outlives the topics' retention, so keep this database."""

    monitor_url: str = "http://127.0.0.1:8004"
    """Base URL of the monitor's HTTP API (the current verdict)."""

    trainer_url: str = "http://127.0.0.1:8003"
    """Base URL of the trainer's HTTP API (runs; an operator's "train now")."""

    console_dead_letters_keep: int = Field(100_000, ge=1000)
    """Dead letters kept in the history (the newest); older ones are deleted once a minute."""

    console_session_hours: float = Field(12.0, gt=0, le=24 * 7)
    """How long an operator's sign-in lasts. Sessions live in the console's memory: a restart
    signs everyone out."""
