"""The console in a real browser (Debian's Chromium, driven by Playwright) on a real loop: the
demo's drifting stream through the five services, then every page checked for console errors,
its charts for the points the events say they hold, HTML in the data shown as text, a narrow
screen, and a rollback clicked by an operator that serving then answers with.

Screenshots of each page are taken on the way; with CTLOOP_CONSOLE_SCREENSHOTS=docs/console
they land where docs/console.md shows them (how they were made for the docs).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from services.demo.driver import DemoConfig, run_demo
from services.supervisor import SERVICES, Stack
from shared import topics
from shared.events import Envelope
from tests.integration.conftest import read_topic, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<img src=x onerror=alert(1)>"
PAGES = {
    "overview": "/",
    "loops": "/loops",
    "models": "/models",
    "drift": "/drift",
    "quality": "/quality",
    "dead-letters": "/dead-letters",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # monitor reports accuracy every second so that a short stream draws a line, not a point
    running = start_stack(tmp_path_factory.mktemp("console"), SERVICES, CTLOOP_MONITOR_QUALITY_REPORT_S="1")
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def loop(stack: Stack) -> list[Envelope]:
    """The demo's loop run to its swap; the `models` events it made."""
    report = run_demo(stack, DemoConfig(warmup=1000, drift_at=1500, after_swap=300, timeout_s=300), say=print)
    assert report.closed, report.reason
    # a record whose feature value is HTML: refused by ingest, shown on the dead-letters page
    response = httpx.post(
        f"{stack.url('ingest')}/v1/records",
        json={
            "records": [{"id": "r-evil", "features": {"x1": 1, "x2": 2, "x3": 3, "amount": 1, "color": EVIL}}]
        },
        headers={"Authorization": f"Bearer {stack.token('producer')}"},
        timeout=30,
    )
    assert response.json()["rejected"], response.text
    return read_topic(
        stack.bootstrap, topics.MODELS, lambda es: sum(e.type == "model.swapped" for e in es) >= 2
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser: Browser, width: int = 1280) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: problems.append(f"a dialog opened: {dialog.message}"))
    return page, problems


def chart(page: Page, chart_id: str) -> dict[str, Any]:
    """What a drawn chart holds: its spec and the data uPlot drew."""
    return page.evaluate(
        "id => { const c = window.ctloopCharts[id]; return {spec: c.spec, data: c.plot.data}; }", chart_id
    )


def screenshot(page: Page, name: str, folder: Path) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    if target := os.environ.get("CTLOOP_CONSOLE_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=False)


def test_every_page_loads_clean_and_its_charts_hold_what_the_events_say(
    stack: Stack, loop: list[Envelope], browser: Browser, tmp_path: Path
) -> None:
    console = stack.url("console")
    swaps = [e for e in loop if e.type == "model.swapped"]
    # the console has read the events the test saw (its follower commits after each write)
    wait_for(lambda: "v2" in httpx.get(f"{console}/models", timeout=10).text, "the console to see v2", 120)
    wait_for(
        lambda: "No labelled" not in httpx.get(f"{console}/quality", timeout=10).text, "accuracy history", 120
    )

    page, problems = open_page(browser)
    for name, path in PAGES.items():
        page.goto(console + path)
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").inner_text(), path
        screenshot(page, name, tmp_path)
        assert not problems, (path, problems)

        if name == "models":
            drawn = chart(page, "served-timeline")
            (instance,) = drawn["spec"]["series"]
            values = instance["values"]
            # v1, then its refreshes and the drift's models (and any rollback), as swapped
            assert values[0] == 1 and values[-1] >= 2
            assert values[: len(swaps)] == [s.payload["version"] for s in swaps]
            swap_times = [s.occurred_at.timestamp() for s in swaps]
            assert drawn["spec"]["x"][: len(swap_times)] == pytest.approx(swap_times, abs=1e-3)
            assert drawn["data"][1] == values
        if name == "drift":
            drawn = chart(page, "drift-0")
            alarms = [m["x"] for m in drawn["spec"]["marks"]]
            drift_events = read_topic(
                stack.bootstrap, topics.DRIFT, lambda es: any(e.type == "drift.detected" for e in es)
            )
            ends = [e.parsed().window_end.timestamp() for e in drift_events if e.type == "drift.detected"]  # type: ignore[union-attr]
            assert ends and all(any(abs(a - e) < 1e-3 for e in ends) for a in alarms)
            assert any(abs(a - ends[0]) < 1e-3 for a in alarms)  # the alarm of the loop's drift
            assert len(drawn["data"][0]) == len(drawn["spec"]["x"]) >= 2
        if name == "quality":
            drawn = chart(page, "quality-accuracy")
            assert len(drawn["data"][0]) >= 3
            assert all(v is None or 0 <= v <= 1 for v in drawn["data"][1])
            assert any(
                m["label"] == f"swap to v{swaps[-1].payload['version']}" for m in drawn["spec"]["marks"]
            )
        if name == "dead-letters":
            shown = page.locator("#dead-letters").inner_text()
            assert EVIL in shown  # as text...
            assert page.locator("#dead-letters img").count() == 0  # ...never as an element

    # a loop's page: the whole chain, drift to swap, from the loops table (the loop that ended
    # in a swap: a later alarm may be newer and still open, or merged into a run)
    drifts = read_topic(stack.bootstrap, topics.DRIFT, lambda es: any(e.type == "drift.detected" for e in es))
    swapped_loops = {s.correlation_id for s in swaps}
    answered = next(e.correlation_id for e in drifts if e.correlation_id in swapped_loops)
    page.goto(console + "/loops")
    page.locator(f'#loops a[href$="{answered}"]').first.click()
    page.wait_for_load_state("networkidle")
    chain = page.locator("#chain").inner_text()
    for step in (
        "drift detected",
        "run started",
        "run completed",
        "version registered",
        "promoted to champion",
        "serving swapped",
    ):
        assert step in chain, chain
    screenshot(page, "loop", tmp_path)
    # one tested window's distributions, overlaid
    page.goto(console + "/drift")
    page.locator("#windows a").first.click()
    page.wait_for_load_state("networkidle")
    drawn = chart(page, "hist-0")
    assert [s["label"] for s in drawn["spec"]["series"]] == ["reference", "this window"]
    assert sum(drawn["spec"]["series"][1]["values"]) == pytest.approx(1.0)
    screenshot(page, "window", tmp_path)
    assert not problems, problems

    # a narrow screen: nothing wider than the screen but the tables' own scrolling boxes
    narrow, narrow_problems = open_page(browser, width=390)
    for path in PAGES.values():
        narrow.goto(console + path)
        narrow.wait_for_load_state("networkidle")
        overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
        if path == "/":
            screenshot(narrow, "overview-narrow", tmp_path)
    assert not narrow_problems, narrow_problems


def test_an_operator_rolls_back_in_the_console_and_serving_answers_with_the_previous_version(
    stack: Stack, loop: list[Envelope], browser: Browser, tmp_path: Path
) -> None:
    console, serving = stack.url("console"), stack.url("serving")
    current = httpx.get(f"{serving}/healthz", timeout=10).json()["model_version"]
    page, problems = open_page(browser)
    page.goto(console + "/")
    assert page.locator("form.action").count() == 0  # a reader sees no action

    page.goto(console + "/login")
    page.fill("input[name=token]", "wrong-token")
    page.click("button[type=submit]")
    assert "refused" in page.locator(".error").inner_text()
    assert problems == [
        "error: Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    problems.clear()  # the browser logs the refused sign-in's 401: expected, and nothing else

    page.fill("input[name=token]", stack.token("trainer"))  # a valid token, but not a person's
    page.click("button[type=submit]")
    assert "refused" in page.locator(".error").inner_text()
    problems.clear()  # its 403, expected

    page.fill("input[name=token]", stack.token("operator"))
    page.click("button[type=submit]")
    page.wait_for_url(console + "/")
    rollback = page.locator("form.action:has(button[data-action=rollback])")
    rollback.locator("input[name=reason]").fill("console test: <b>roll back</b>")
    rollback.locator("button").click()
    assert "Roll back" in page.locator(".confirm").inner_text()
    screenshot(page, "confirm", tmp_path)
    assert page.locator("input[name=replaces]").get_attribute("value") == str(current)  # conditional
    page.click("#confirm")
    assert page.locator("#outcome").inner_text() == "done"

    wait_for(
        lambda: httpx.get(f"{serving}/healthz", timeout=5).json().get("model_version") == current - 1,
        f"serving to answer with v{current - 1}",
        120,
    )
    predicted = httpx.post(
        f"{serving}/v1/predict",
        json={"features": {"x1": 0.1, "x2": 0.2, "x3": 0.3, "amount": 1.0, "color": "red"}},
        timeout=10,
    )
    assert predicted.json()["model_version"] == current - 1
    page.goto(console + "/")
    recorded = page.locator("table").last.inner_text()
    assert "console test: <b>roll back</b>" in recorded and "done" in recorded
    history = httpx.get(
        f"{stack.url('registry')}/v1/models/demo/history", timeout=10, headers=stack.auth()
    ).json()
    assert history[-1]["reason"] == "console test: <b>roll back</b>"
    assert not problems, problems
