"""Runs serving: the model holder, the swapper following `models`, the prediction log, HTTP
and gRPC."""

from __future__ import annotations

import os

from shared import topics
from shared.http import serve
from shared.kafka import ConsumeLoop, EventPublisher, make_consumer, make_producer
from shared.logs import setup_logging
from shared.registry_api import PRODUCTION
from shared.registry_client import RegistryClient
from shared.schema import load_schema
from shared.settings import ServingSettings
from shared.sklearn_speedups import skip_absent_pandas
from shared.supervision import Supervisor


def main() -> None:
    skip_absent_pandas()
    # NOTE: more BLAS/OpenMP threads than cores makes one-row predicts several times slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from services.serving.app import build_app
    from services.serving.batching import MicroBatcher
    from services.serving.grpc_server import GrpcServer
    from services.serving.holder import ModelHolder
    from services.serving.perf_check import Budget
    from services.serving.prediction_log import PredictionLog
    from services.serving.scoring import Scorer
    from services.serving.shadow import ShadowScorer
    from services.serving.swapper import Swapper

    settings = ServingSettings()
    setup_logging("serving", settings.log_level)
    settings.require_for("serving")
    schema = load_schema(settings.schema_path)
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    # NOTE: predictions are written one event per row, read by the monitor in windows; waiting
    # 25 ms instead of 5 to fill a batch took /v1 from ~4,590 to ~4,870 requests/s on one core
    # (fewer batches for kafka-python's sender to build and send; alternating runs).
    publisher = EventPublisher(settings, "serving", make_producer(settings, linger_ms=25))
    holder = ModelHolder(
        schema,
        RegistryClient(settings.registry_url, settings.token("reader"), verifier=settings.verifier()),
        # production's cache stays where it was before environments; another one's beside it
        cache_dir=settings.data_dir
        / "serving"
        / "cache"
        / ("" if settings.serving_environment == PRODUCTION else settings.serving_environment)
        / schema.name,
        budget=Budget(
            settings.serving_swap_p99_ratio,
            settings.serving_swap_p99_slack_ms,
            settings.serving_swap_check_rows,
            settings.serving_swap_check_repeats,
            settings.serving_swap_other_estimator_ms,
        )
        if settings.serving_swap_check
        else None,
    )
    swapper = Swapper(holder, publisher, settings.serving_registry_retry_s, settings.serving_environment)
    prediction_log = PredictionLog(publisher, settings.serving_log_buffer)
    shadow = ShadowScorer(
        holder, prediction_log, settings.serving_shadow_fraction, settings.serving_shadow_queue
    )
    # NOTE: each serving replica must see every promotion, so the group id is per instance,
    # and it starts from the latest offset: the registry is asked for the current champion.
    loop = ConsumeLoop(
        "consume-models",
        lambda: make_consumer(
            settings,
            f"ctloop-serving-{settings.instance}",
            [topics.MODELS],
            prompt=True,
            auto_offset_reset="latest",
        ),
        swapper.handle,
        publisher,
        settings,
    )
    batcher = MicroBatcher(settings.serving_max_batch_rows)
    scorer = Scorer(holder, prediction_log, shadow, batcher, settings.serving_max_rows)
    grpc_server = GrpcServer(scorer, settings)
    # Stopped in reverse: the consume loop and the swapper first, the prediction log last
    # (after the gRPC server and the shadow scorer that feed it), then the publisher is flushed.
    supervisor = Supervisor("serving")
    for worker in (prediction_log, batcher, shadow, grpc_server, swapper, loop):
        supervisor.add(worker)
    supervisor.start()
    try:
        serve(
            build_app(scorer, settings, supervisor),
            settings.host,
            settings.serving_port,
            settings.log_level,
        )
    finally:
        supervisor.stop()
        publisher.flush(5)
