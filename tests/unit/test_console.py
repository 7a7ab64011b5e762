"""The console's rules and pages without a broker: what a loop's row says, which version
served when, what each chart holds, what a reader may do, and that nothing shown can inject
HTML. (The pages in a real browser on a real loop: tests/integration/test_console.py.)"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from scipy import stats

from services.console import history
from services.console.pages import build_app
from services.console.store import ConsoleStore
from services.monitor.stats import adjusted_p_values, benjamini_hochberg
from shared.events import (
    EVENT_TYPES,
    ColumnHistogram,
    DeadLetter,
    DriftDetected,
    Envelope,
    FeatureDrift,
    ModelPromoted,
    ModelRegistered,
    ModelSwapped,
    QualityMeasured,
    Source,
    TrainingCompleted,
    TrainingStarted,
    WindowTested,
)
from shared.settings import ConsoleSettings
from shared.validation import FieldError
from tests.fixtures import consumer_record, demo_schema

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # within every page's period
DIGEST = "sha256:" + "0" * 64


def envelope(
    payload: BaseModel,
    at: float,
    correlation_id: str,
    service: str = "test",
    instance: str = "a",
    event_id: str | None = None,
) -> Envelope:
    return Envelope(
        event_id=event_id or f"e-{correlation_id}-{at}-{type(payload).__name__}-{instance}",
        type=EVENT_TYPES[type(payload)],
        occurred_at=T0 + timedelta(seconds=at),
        source=Source(service=service, instance=instance),
        correlation_id=correlation_id,
        payload=payload.model_dump(mode="json"),
    )


def a_loop(cid: str = "drift-1", start: float = 0.0, version: int = 2) -> list[Envelope]:
    """drift -> run -> registered -> promoted -> swapped, one second apart."""
    drift = DriftDetected(
        model_name="demo",
        reference_version=version - 1,
        kind="concept",
        window_start=T0,
        window_end=T0,
        window_size=100,
        onset_time=T0,
        detector="page-hinkley",
    )
    return [
        envelope(drift, start, cid, event_id=cid),
        envelope(TrainingStarted(run_id="r1", model_name="demo", trigger="drift", rows=900), start + 1, cid),
        envelope(
            TrainingCompleted(run_id="r1", model_name="demo", trigger="drift", version=version),
            start + 2,
            cid,
        ),
        envelope(
            ModelRegistered(model_name="demo", version=version, digest=DIGEST, metrics={"accuracy": 0.91}),
            start + 3,
            cid,
        ),
        envelope(
            ModelPromoted(
                model_name="demo",
                version=version,
                alias="champion",
                previous_version=version - 1,
                digest=DIGEST,
            ),
            start + 4,
            cid,
        ),
        envelope(
            ModelSwapped(model_name="demo", version=version, previous_version=version - 1, duration_ms=12.0),
            start + 5,
            cid,
            "serving",
        ),
    ]


def window(
    at: float, effect: float, feature: str = "x1", drifted: bool = False, category: str = "red"
) -> Envelope:
    tested = WindowTested(
        model_name="demo",
        reference_version=1,
        kind="feature",
        window_start=T0,
        window_end=T0 + timedelta(seconds=at),
        size=500,
        drifted=drifted,
        alpha=0.01,
        min_effect=0.1,
        features=[
            FeatureDrift(
                feature=feature,
                test="ks",
                statistic=effect,
                p_value=0.001,
                effect=effect,
                drifted=drifted,
                adjusted_p_value=0.002,
            ),
            FeatureDrift(
                feature="color",
                test="chi2",
                statistic=1.0,
                p_value=0.5,
                effect=0.01,
                drifted=False,
                adjusted_p_value=0.5,
            ),
        ],
        histograms=[
            ColumnHistogram(feature=feature, edges=[0.0, 1.0, 2.0], reference=[5, 5], current=[1, 9]),
            ColumnHistogram(feature="color", categories=[category, "blue"], reference=[3, 7], current=[4, 6]),
        ],
    )
    return envelope(tested, at, f"w-{at}", "monitor", event_id=f"w-{at}")


# --- the rules ---------------------------------------------------------------------------


def stored(events: list[Envelope]) -> list[history.StoredEvent]:
    store = ConsoleStore("sqlite://")
    store.add(events)
    return store.of_types(list(history.STEP_NAMES))


def test_a_loop_row_says_trigger_gates_version_swap_and_the_time_each_step_took() -> None:
    (built,) = history.loops(stored(a_loop()))
    assert (built.trigger, built.drift_kind, built.run_id, built.gates, built.version) == (
        "drift",
        "concept",
        "r1",
        "passed",
        2,
    )
    assert built.promoted_to == "champion" and built.outcome == "v2 serving"
    assert [s.name for s in built.steps] == [
        "drift detected",
        "run started",
        "run completed",
        "version registered",
        "promoted to champion",
        "serving swapped",
    ]
    assert [s.after_s for s in built.steps] == [None, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert built.took_s == 5.0


def test_the_served_timeline_holds_each_instance_version_and_marks_rollbacks() -> None:
    events = a_loop("first", 0, version=2)
    events.append(
        envelope(
            ModelSwapped(model_name="demo", version=2, previous_version=1, duration_ms=9),
            7,
            "first",
            "serving",
            "b",
        )
    )
    rollback = ModelPromoted(
        model_name="demo", version=1, alias="champion", previous_version=2, digest=DIGEST
    )
    events += [
        envelope(rollback, 20, "rb"),
        envelope(
            ModelSwapped(model_name="demo", version=1, previous_version=2, duration_ms=5), 21, "rb", "serving"
        ),
    ]
    found = stored(events)
    swaps = [e for e in found if e.type == "model.swapped"]
    promotions = [e for e in found if e.type == "model.promoted"]
    now = (T0 + timedelta(seconds=60)).timestamp()
    timeline = history.served_timeline(swaps, promotions, now)
    t = T0.timestamp()
    assert timeline.x == [t + 5, t + 7, t + 21, now]
    assert timeline.series == {"serving/a": [2, 2, 1, 1], "serving/b": [None, 2, 2, 2]}
    assert timeline.rollbacks == [(t + 20, 1)]
    (rolled_back,) = [loop for loop in history.loops(found) if loop.correlation_id == "rb"]
    assert rolled_back.trigger == "rollback" and rolled_back.steps[0].name == "rolled back to v1"


def test_accuracy_is_merged_into_buckets_and_the_shadow_pair_is_kept_apart() -> None:
    class Row(BaseModel):
        occurred_at: float
        labelled: int
        correct: int
        shadow_labelled: int = 0
        shadow_champion_correct: int = 0
        shadow_challenger_correct: int = 0

    rows = [Row(occurred_at=i, labelled=10, correct=i % 11) for i in range(1000)]
    rows[-1] = Row(
        occurred_at=999,
        labelled=10,
        correct=5,
        shadow_labelled=4,
        shadow_champion_correct=2,
        shadow_challenger_correct=3,
    )
    series = history.accuracy_series(rows, max_points=100)
    assert len(series.x) == 100 and series.labelled == 10_000
    assert series.champion[0] == pytest.approx(sum(i % 11 for i in range(10)) / 100)
    assert series.challenger[-1] == 0.75 and series.shadow_champion[-1] == 0.5
    assert series.challenger[0] is None


def test_adjusted_p_values_make_the_same_decisions_as_the_corrections() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.uniform(0, 0.05, size=int(rng.integers(1, 12))))
        adjusted = adjusted_p_values(p, "benjamini-hochberg")
        assert adjusted == pytest.approx(list(stats.false_discovery_control(p)))
        assert [a <= 0.01 for a in adjusted] == benjamini_hochberg(p, 0.01)


def test_the_vendored_chart_library_is_the_one_its_readme_names() -> None:
    vendor = Path(__file__).parents[2] / "services" / "console" / "static" / "vendor"
    readme = (vendor / "README.md").read_text()
    assert "uPlot | 1.6.32" in readme
    for name, digest in re.findall(r"`([\w.]+)`: sha256 `([0-9a-f]{64})`", readme):
        assert hashlib.sha256((vendor / "uplot-1.6.32" / name).read_bytes()).hexdigest() == digest
    assert len(re.findall(r"sha256 `", readme)) >= 2


# --- the pages ---------------------------------------------------------------------------


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[TestClient, ConsoleStore]]:
    store = ConsoleStore(f"sqlite:///{tmp_path / 'console.db'}")
    # nothing listens on port 9: the details the pages fetch say they could not be had
    settings = ConsoleSettings(
        registry_url="http://127.0.0.1:9", monitor_url="http://127.0.0.1:9", trainer_url="http://127.0.0.1:9"
    )
    with httpx.Client() as calls, TestClient(build_app(settings, demo_schema(), store, calls)) as client:
        yield client, store
    store.close()


PAGES = ["/", "/loops", "/models", "/drift", "/drift?kind=prediction", "/quality", "/dead-letters", "/login"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_works_before_there_is_any_model_and_says_what_to_do(
    console: tuple[TestClient, ConsoleStore], path: str
) -> None:
    client, _ = console
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    if path not in ("/login",):
        assert 'class="empty"' in response.text


def test_pages_show_the_history(console: tuple[TestClient, ConsoleStore]) -> None:
    client, store = console
    store.add([*a_loop(), window(10, 0.3, drifted=True), window(20, 0.05)])
    quality = QualityMeasured(
        model_name="demo", model_version=2, labelled=50, correct=45, first_event_time=T0, last_event_time=T0
    )
    store.add([envelope(quality, 30, "q")])
    loops = client.get("/loops").text
    assert "/loops/drift-1" in loops and "v2 serving" in loops
    chain = client.get("/loops/drift-1").text
    assert chain.count("<li>") == 6 and "page-hinkley" in chain
    models = client.get("/models").text
    spec = json.loads(re.search(r'id="served-timeline-data">(.*?)</script>', models, re.S).group(1))  # type: ignore[union-attr]
    assert spec["series"][0]["values"][0] == 2
    drift = client.get("/drift").text
    first = json.loads(re.search(r'id="drift-0-data">(.*?)</script>', drift, re.S).group(1))  # type: ignore[union-attr]
    assert first["series"][1]["values"] == [0.3, 0.05] and first["drifted"] == [True, False]
    assert first["hlines"][0]["y"] == 0.01
    shown = client.get("/drift/windows/w-10").text
    assert shown.index("x1") < shown.index("color")  # largest effect first
    quality_page = client.get("/quality").text
    spec = json.loads(re.search(r'id="quality-accuracy-data">(.*?)</script>', quality_page, re.S).group(1))  # type: ignore[union-attr]
    assert spec["series"][0]["values"] == [0.9]
    assert any(m["label"] == "swap to v2" for m in spec["marks"])


@pytest.mark.parametrize(
    "path", ["/loops/nope", "/drift/windows/nope", "/loops/%3Cscript%3E", "/models/abc", "/nowhere"]
)
def test_unknown_ids_get_a_404_page_not_a_stack_trace(
    console: tuple[TestClient, ConsoleStore], path: str
) -> None:
    client, _ = console
    response = client.get(path)
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"] and "Traceback" not in response.text
    assert "<script>" not in response.text


def test_what_the_data_says_is_shown_as_text_never_as_html(console: tuple[TestClient, ConsoleStore]) -> None:
    client, store = console
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    letter = DeadLetter.of(
        "ctloop.raw.v1", [FieldError(index=0, field=evil, reason=f"bad value {evil}")], evil
    )
    store.add(
        [
            envelope(letter, 1, "d"),
            window(5, 0.5, feature=evil, drifted=True, category=f"c</script>{evil}"),
        ]
    )
    for path in ("/dead-letters", "/drift", "/drift/windows/w-5"):
        page = client.get(path).text
        assert evil not in page, path
        assert "<img src=x" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/dead-letters").text
    # inside a chart's JSON, "<" is a JSON escape: the data cannot close its script element
    assert "c\\u003c/script\\u003e" in client.get("/drift/windows/w-5").text


def test_a_bad_parameter_gets_a_page_naming_it(console: tuple[TestClient, ConsoleStore]) -> None:
    client, _ = console
    response = client.get("/compare?a=1&b=<b>x</b>")
    assert response.status_code == 422 and "text/html" in response.headers["content-type"]
    assert "b: " in response.text and "<b>x</b>" not in response.text


def test_a_reader_sees_no_action_and_cannot_act(console: tuple[TestClient, ConsoleStore]) -> None:
    client, store = console
    store.add(a_loop())
    for path in ("/", "/models"):
        assert "/actions/" not in client.get(path).text
    response = client.post("/actions/rollback", data={"reason": "because", "csrf": "x"})
    assert response.status_code == 403
    assert "sign in" in response.text


def test_an_operator_action_is_confirmed_with_what_the_operator_saw(
    console: tuple[TestClient, ConsoleStore],
) -> None:
    from services.console.operators import SESSION_COOKIE

    client, store = console
    first = ModelRegistered(model_name="demo", version=1, digest=DIGEST, metrics={"accuracy": 0.9})
    store.add([envelope(first, -10, "first"), *a_loop()])
    session_id, session = client.app.state.sessions.open("operator-token")  # type: ignore[attr-defined]
    client.cookies.set(SESSION_COOKIE, session_id)
    models = client.get("/models").text
    assert 'name="replaces" value="2"' in models and "override_rollback" in models  # v1's form
    form = {
        "reason": "v1 again",
        "csrf": session.csrf,
        "version": "1",
        "replaces": "2",
        "override_rollback": "true",
    }
    confirm = client.post("/actions/promote", data=form).text
    assert 'name="replaces" value="2"' in confirm and 'name="override_rollback" value="true"' in confirm
    assert "even though it was rolled back" in confirm
    assert client.post("/actions/promote", data={**form, "csrf": "forged"}).status_code == 403


def test_a_token_that_cannot_be_a_header_is_refused_with_a_page(
    console: tuple[TestClient, ConsoleStore],
) -> None:
    client, _ = console
    response = client.post("/login", data={"token": "Éç\t¦"})
    assert response.status_code == 422 and "token" in response.text


def test_a_sign_in_the_registry_cannot_check_is_refused(console: tuple[TestClient, ConsoleStore]) -> None:
    client, _ = console
    response = client.post("/login", data={"token": "whatever"})
    assert response.status_code == 503 and "did not answer" in response.text
    assert "ctloop_console_session" not in response.headers.get("set-cookie", "")


def test_a_database_that_does_not_answer_holds_the_batch_and_loses_nothing(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from services.console.follower import Follower
    from shared.kafka import TryLater

    store = ConsoleStore(f"sqlite:///{tmp_path / 'console.db'}")
    follower = Follower(store, dead_letters_keep=1000)

    messages = [consumer_record("ctloop.models.v1", e.encode(), i) for i, e in enumerate(a_loop())] + [
        consumer_record("ctloop.models.v1", b"not an event", 9)
    ]
    working = store.engine
    store.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/gone")  # nothing listens
    with pytest.raises(TryLater, match="console's database"):
        follower.handle(messages)  # held (the consume loop retries it), not dead-lettered
    store.engine = working
    follower.handle(messages)  # the database is back: the same batch goes in
    assert len(store.loop_events(["drift-1"])) == 6
    store.close()
