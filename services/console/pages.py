"""The console's web pages (FastAPI + Jinja2, rendered on the server; charts drawn in the
browser by the vendored uPlot from JSON the page carries) and its operator actions.

History comes from the console's store; details (a version's gates, dataset, lineage; the
monitor's verdict) from the services' HTTP APIs, each call bounded so a service that does not
answer makes its part of a page say so instead of stalling the page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import history
from services.console.operators import SESSION_COOKIE, Session, Sessions, csrf_ok
from services.console.store import ConsoleStore
from shared.http import create_app
from shared.schema import DatasetSchema
from shared.settings import ConsoleSettings
from shared.supervision import Supervisor

HERE = Path(__file__).parent
LOOPS_PER_PAGE = 50
DRIFT_POINTS = 500
"""Points per column on the drift page; more windows are merged into buckets (store)."""
DETAIL_TIMEOUT_S = 3.0
TOKEN_PATTERN = r"^[!-~]+$"
"""A bearer token is visible ASCII (it goes into an HTTP header as it is)."""
NAV = [
    ("/", "Overview"),
    ("/loops", "Loops"),
    ("/models", "Models"),
    ("/drift", "Drift"),
    ("/quality", "Quality"),
    ("/dead-letters", "Dead letters"),
]
ACTIONS = {
    "promote": "Make v{version} the champion",
    "rollback": "Roll back to the previous champion",
    "train": "Start a training run now",
}


def _time(value: float | str | None) -> str:
    """A timestamp (epoch seconds or ISO text) as UTC text; '' for none."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value).timestamp()
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _chart(spec: dict[str, Any]) -> str:
    """A chart's data as the JSON a page embeds, with `<`, `>` and `&` written as JSON escapes
    (as Django's json_script does), so that no value (a feature name, a category) can close the
    script element it sits in or read as markup."""
    return json.dumps(spec).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_app(
    settings: ConsoleSettings,
    schema: DatasetSchema,
    store: ConsoleStore,
    client: httpx.Client,
    supervisor: Supervisor | None = None,
    ready: Callable[[], bool] = lambda: True,
) -> FastAPI:
    """`client` calls the other services (one client: a new one per call cost ~30 ms)."""
    app = create_app(
        "ctloop console",
        health=lambda: {"ready": ready(), "service": "console"},
        supervisor=supervisor,
        max_body_bytes=settings.http_max_body_bytes,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["time"] = _time
    templates.env.filters["seconds"] = _seconds
    templates.env.filters["chart"] = _chart
    sessions = app.state.sessions = Sessions(settings.console_session_hours * 3600)
    model = schema.name
    registry = settings.registry_url.split(",")[0].strip().rstrip("/")

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(SESSION_COOKIE))

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            template,
            {"nav": NAV, "model": model, "operator": session_of(request), **context},
            status_code=status_code,
        )

    def fetch(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        """(status, JSON or error text) of a call to another service (with the operator's token,
        or the reader's when one is configured); 0 when it did not answer."""
        token = token or settings.token("reader")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = client.request(method, url, headers=headers, json=body, timeout=DETAIL_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return 0, f"{url.split('/v1/')[0]} did not answer: {type(exc).__name__}"
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text[:500]

    def is_page(request: Request) -> bool:
        return not request.url.path.startswith(("/healthz", "/livez", "/metrics", "/static/", "/openapi"))

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_page(request):
            return Response(
                json.dumps({"detail": exc.detail}), exc.status_code, media_type="application/json"
            )
        return page(request, "error.html", exc.status_code, title=str(exc.status_code), message=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        """A page asked with a bad id or parameter: an error page naming it (404 for a path
        that names nothing, e.g. `/models/abc`; 422 for a bad query or form field)."""
        errors = exc.errors()
        in_path = any(e["loc"][:1] == ("path",) for e in errors)
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in errors[:5])
        status = 404 if in_path else 422
        return page(request, "error.html", status, title=str(status), message=message)

    # --- pages ---------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, tags=["pages"])
    def overview(request: Request) -> HTMLResponse:
        """The champion, the monitor's verdict, the last drift and run, recent accuracy."""
        champion = store.latest(["model.promoted"], limit=50)
        champion_event = next((e for e in champion if e.payload.get("alias") == "champion"), None)
        status_code, monitor = fetch(f"{settings.monitor_url.rstrip('/')}/v1/drift/status")
        accuracy = history.accuracy_series(store.quality_since(time.time() - 6 * 3600), max_points=120)
        swaps = store.latest(["model.swapped"], limit=1)
        return page(
            request,
            "overview.html",
            title="Overview",
            champion=champion_event,
            serving=swaps[0] if swaps else None,
            monitor=monitor if status_code == 200 else None,
            monitor_error=None if status_code == 200 else monitor,
            drift=next(iter(store.latest(["drift.detected"])), None),
            run=next(iter(store.latest(["training.started", "training.completed", "training.failed"])), None),
            accuracy=accuracy,
            actions=store.recent_actions(10),
        )

    @app.get("/loops", response_class=HTMLResponse, tags=["pages"])
    def loops(
        request: Request, page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1
    ) -> HTMLResponse:
        """Every loop (one correlation id) as a row, newest first."""
        ids, total = store.loop_ids((page_number - 1) * LOOPS_PER_PAGE, LOOPS_PER_PAGE)
        found = history.loops(store.loop_events(ids)) if ids else []
        pages = max(1, -(-total // LOOPS_PER_PAGE))
        return page(
            request, "loops.html", title="Loops", loops=found, total=total, page=page_number, pages=pages
        )

    @app.get("/loops/{correlation_id}", response_class=HTMLResponse, tags=["pages"])
    def loop(request: Request, correlation_id: str) -> HTMLResponse:
        """One loop's causal chain, each event with its payload."""
        found = store.loop_events([correlation_id[:64]])
        if not found:
            raise StarletteHTTPException(404, f"no loop with correlation id {correlation_id!r}")
        built = history.loop_of(correlation_id, found)
        payloads = [json.dumps(s.event.payload, indent=2) for s in built.steps]
        return page(request, "loop.html", title="Loop", chain=built, payloads=payloads)

    @app.get("/models", response_class=HTMLResponse, tags=["pages"])
    def models(request: Request) -> HTMLResponse:
        """Versions with metrics and aliases; which version served when."""
        registered = store.of_types(["model.registered"])
        promotions = store.of_types(["model.promoted"])
        aliases: dict[int, set[str]] = {}
        for p in promotions:  # replay the alias moves: where each alias points now
            for names in aliases.values():
                names.discard(p.payload["alias"])
            aliases.setdefault(int(p.payload["version"]), set()).add(p.payload["alias"])
        timeline = history.served_timeline(store.of_types(["model.swapped"]), promotions, time.time())
        chart = {
            "type": "step",
            "x": timeline.x,
            "series": [{"label": instance, "values": values} for instance, values in timeline.series.items()],
            "marks": [{"x": at, "label": f"rollback to v{v}"} for at, v in timeline.rollbacks],
            "ylabel": "version",
        }
        versions = sorted(registered, key=lambda e: e.version or 0, reverse=True)
        champion = next((v for v, names in aliases.items() if "champion" in names), None)
        return page(
            request,
            "models.html",
            title="Models",
            versions=versions,
            aliases=aliases,
            champion=champion,
            timeline=chart,
            metric_names=sorted({k for e in versions for k in e.payload.get("metrics", {})}),
        )

    def version_details(version: int) -> tuple[dict[str, Any] | None, str | None]:
        status_code, found = fetch(f"{registry}/v1/models/{model}/versions/{version}")
        if status_code == 404:
            raise StarletteHTTPException(404, f"model {model!r} has no version {version}")
        if status_code != 200:
            return None, str(found)
        found.pop("reference_profile", None)  # 1,000 raw rows: not for a page
        return found, None

    @app.get("/models/{version}", response_class=HTMLResponse, tags=["pages"])
    def version(request: Request, version: int) -> HTMLResponse:
        """One version: metrics, gate report, dataset manifest, lineage, aliases."""
        found, error = version_details(version)
        status_code, lineage = fetch(f"{registry}/v1/models/{model}/versions/{version}/lineage")
        summary_status, summary = fetch(f"{registry}/v1/models/{model}")
        champion = summary.get("aliases", {}).get("champion") if summary_status == 200 else None
        return page(
            request,
            "version.html",
            title=f"v{version}",
            number=version,
            version=found,
            error=error,
            lineage=lineage if status_code == 200 else None,
            champion=champion,
        )

    @app.get("/compare", response_class=HTMLResponse, tags=["pages"])
    def compare(
        request: Request, a: Annotated[int, Query(ge=1)], b: Annotated[int, Query(ge=1)]
    ) -> HTMLResponse:
        """Two versions side by side."""
        left, left_error = version_details(a)
        right, right_error = version_details(b)
        metrics = sorted(set((left or {}).get("metrics", {})) | set((right or {}).get("metrics", {})))
        gates = sorted(
            {g["name"] for v in (left, right) if v for g in v.get("gate_report", {}).get("gates", [])}
        )
        return page(
            request,
            "compare.html",
            title=f"v{a} and v{b}",
            a=a,
            b=b,
            left=left,
            right=right,
            error=left_error or right_error,
            metrics=metrics,
            gates=gates,
        )

    @app.get("/drift", response_class=HTMLResponse, tags=["pages"])
    def drift(
        request: Request, kind: Annotated[str, Query(pattern="^(feature|prediction)$")] = "feature"
    ) -> HTMLResponse:
        """Each column's adjusted p-value and effect per window, every drift alarm marked (at
        the end of the window it judged)."""
        series = history.feature_series(store.feature_series(kind, DRIFT_POINTS))
        alarms = [
            {"x": _when(e.payload["window_end"]), "label": f"{e.payload.get('kind')} alarm"}
            for e in store.of_types(["drift.detected"])
        ]
        charts = [
            {
                "type": "drift",
                "x": s.x,
                "series": [
                    {"label": "adjusted p-value", "values": s.adjusted_p, "scale": "p"},
                    {"label": "effect", "values": s.effect, "scale": "effect"},
                ],
                "hlines": [
                    {"y": s.alpha, "scale": "p", "label": f"alpha {s.alpha:g}"},
                    {"y": s.min_effect, "scale": "effect", "label": f"min effect {s.min_effect:g}"},
                ],
                "marks": alarms,
                "drifted": s.drifted,
            }
            for s in series
        ]
        recent = store.windows_list(30)
        drifted = store.windows_list(1, drifted_only=True)
        return page(
            request,
            "drift.html",
            title="Drift",
            kind=kind,
            series=series,
            charts=charts,
            windows=recent,
            last_drifted=drifted[0] if drifted else None,
        )

    @app.get("/drift/windows/{event_id}", response_class=HTMLResponse, tags=["pages"])
    def window(request: Request, event_id: str) -> HTMLResponse:
        """One tested window: each column's reference and current distribution, overlaid,
        the largest effect first."""
        event = store.event(event_id[:64])
        if event is None or event.type != "window.tested":
            raise StarletteHTTPException(404, f"no tested window {event_id!r}")
        results = {f["feature"]: f for f in event.payload["features"]}
        columns = []
        for h in event.payload.get("histograms", []):
            result = results.get(h["feature"], {})
            ref_total, cur_total = sum(h["reference"]) or 1, sum(h["current"]) or 1
            if h["edges"]:
                labels = [f"{lo:.3g}..{hi:.3g}" for lo, hi in zip(h["edges"], h["edges"][1:], strict=False)]
            else:
                labels = h["categories"]
            columns.append(
                {
                    "feature": h["feature"],
                    "result": result,
                    "chart": {
                        "type": "bars",
                        "labels": labels,
                        "x": list(range(len(labels))),
                        "series": [
                            {"label": "reference", "values": [c / ref_total for c in h["reference"]]},
                            {"label": "this window", "values": [c / cur_total for c in h["current"]]},
                        ],
                        "ylabel": "share",
                    },
                }
            )
        columns.sort(key=lambda c: -float(c["result"].get("effect", 0.0)))
        return page(request, "window.html", title="Window", event=event, columns=columns)

    @app.get("/quality", response_class=HTMLResponse, tags=["pages"])
    def quality(request: Request, hours: Annotated[float, Query(gt=0, le=24 * 365)] = 24.0) -> HTMLResponse:
        """Live accuracy over time, drift alarms and swaps marked, the challenger beside."""
        since = time.time() - hours * 3600
        accuracy = history.accuracy_series(store.quality_since(since))
        marks = [
            {"x": e.occurred_at, "label": f"{e.payload.get('kind')} drift"}
            for e in store.of_types(["drift.detected"], since)
        ]
        marks += [
            {"x": e.occurred_at, "label": f"swap to v{e.payload.get('version')}"}
            for e in store.of_types(["model.swapped"], since)
        ]
        series = [{"label": "champion", "values": accuracy.champion}]
        if any(v is not None for v in accuracy.challenger):
            series += [
                {"label": "challenger (shadow)", "values": accuracy.challenger},
                {"label": "champion on the same records", "values": accuracy.shadow_champion},
            ]
        chart = {
            "type": "time",
            "x": accuracy.x,
            "series": series,
            "marks": marks,
            "yrange": [0, 1],
            "ylabel": "accuracy",
        }
        return page(
            request, "quality.html", title="Quality", accuracy_chart=chart, accuracy=accuracy, hours=hours
        )

    @app.get("/dead-letters", response_class=HTMLResponse, tags=["pages"])
    def dead_letters(request: Request) -> HTMLResponse:
        """The latest rejected inputs by topic and reason, with counts over time."""
        since = time.time() - 24 * 3600
        counts = store.dead_letter_counts(since, 300)
        origins = sorted({r.origin for r in counts})
        x = sorted({float(r.bucket) for r in counts})
        at = {(float(r.bucket), r.origin): r.n for r in counts}
        chart = {
            "type": "time",
            "x": x,
            "series": [{"label": o, "values": [at.get((t, o), 0) for t in x]} for o in origins],
            "ylabel": "per 5 minutes",
        }
        return page(
            request,
            "dead_letters.html",
            title="Dead letters",
            latest=store.latest_dead_letters(100),
            reasons=store.dead_letter_reasons(30),
            counts_chart=chart,
        )

    # --- operators -----------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, tags=["operators"])
    def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html", title="Sign in", error=None)

    @app.post("/login", response_class=HTMLResponse, tags=["operators"])
    def login(
        request: Request, token: Annotated[str, Form(max_length=500, pattern=TOKEN_PATTERN)]
    ) -> Response:
        """Sign in with the operator token; the registry says whether it is one."""
        status_code, answer = fetch(f"{registry}/v1/auth", token=token)
        if status_code == 200 and not (isinstance(answer, dict) and answer.get("role") == "operator"):
            status_code = 403  # another role's token (the trainer's, the monitor's): not a person's
        if status_code != 200:
            error = "the registry refused this token" if status_code in (401, 403) else str(answer)
            return page(
                request, "login.html", 401 if status_code in (401, 403) else 503, title="Sign in", error=error
            )
        session_id, _ = sessions.open(token)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, session_id, httponly=True, samesite="strict", max_age=int(sessions.lifetime_s)
        )
        return response

    @app.post("/logout", tags=["operators"])
    def logout(request: Request) -> Response:
        sessions.close(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.post("/actions/{action}", response_class=HTMLResponse, tags=["operators"])
    def act(
        request: Request,
        action: str,
        reason: Annotated[str, Form(min_length=3, max_length=200)],
        csrf: Annotated[str, Form(max_length=100)],
        version: Annotated[int | None, Form(ge=1)] = None,
        replaces: Annotated[int | None, Form(ge=1)] = None,
        override_rollback: Annotated[bool, Form()] = False,
        confirmed: Annotated[bool, Form()] = False,
    ) -> Response:
        """An operator's action: first a page that says what will happen, then (confirmed)
        the call with the operator's token; the reason and the outcome are recorded. `replaces`
        is the champion the operator saw: if it moved meanwhile the registry refuses (409)."""
        session = session_of(request)
        if session is None or not csrf_ok(session, csrf):
            return page(request, "error.html", 403, title="403", message="sign in as an operator to act")
        if action not in ACTIONS or (action == "promote" and version is None):
            raise StarletteHTTPException(404, f"no action {action!r}")
        what = ACTIONS[action].format(version=version)
        if not confirmed:
            return page(
                request,
                "confirm.html",
                title="Confirm",
                action=action,
                what=what,
                version=version,
                reason=reason,
                replaces=replaces,
                override_rollback=override_rollback,
            )
        if action == "promote":
            url, body = (
                f"{registry}/v1/models/{model}/versions/{version}/promote",
                {
                    "alias": "champion",
                    "reason": reason,
                    "replaces": replaces,
                    "override_rollback": override_rollback,
                },
            )
        elif action == "rollback":
            url, body = f"{registry}/v1/models/{model}/rollback", {"reason": reason, "replaces": replaces}
        else:
            url, body = f"{settings.trainer_url.rstrip('/')}/v1/runs", None
        status_code, answer = fetch(url, token=session.token, method="POST", body=body)
        outcome = "done" if 200 <= status_code < 300 else f"refused ({status_code}): {answer}"
        store.record_action(session.operator, action, what, reason, outcome[:1000])
        # the service's own refusal (401, 409, ...) is passed on; no answer or its 5xx is a 502
        status = 200 if 200 <= status_code < 300 else status_code if 400 <= status_code < 500 else 502
        return page(request, "done.html", status, title="Action", what=what, outcome=outcome, answer=answer)

    return app


def _when(value: str | float) -> float:
    """An event's time (ISO text in payloads) as epoch seconds, the charts' x."""
    return float(value) if isinstance(value, int | float) else datetime.fromisoformat(value).timestamp()
