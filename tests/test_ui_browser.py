"""The web UI in a real browser (headless Chromium via Playwright) against a real hub process and a real local bridge.

One hub, one service and one bridge serve the whole module (the bridge runs three jobs
at once), so the jobs of one test are on the jobs page of the next. Screenshots of the
main pages go to ``test-artifacts/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pairio import PairioJobDefinition, PairioJobRequiredResources
from pairio.job import PairioJob

from . import test_bridge_e2e as e2e
from .test_bridge_e2e import HubProcess, Stack

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("PAIRIO_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
HELLO_WORLD_COMMAND = f"hello_world={sys.executable} {REPO / 'apps' / 'hello_world' / 'main.py'}"
SMALL = PairioJobRequiredResources(numCpus=1, numGpus=0, memoryGb=0.5, timeSec=120)
TIMEOUT_MS = 30_000

hub = e2e.hub  # one `pairio hub serve` process for the module, with the user alice


def _chromium_or_skip() -> str:
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        return CHROMIUM
    message = f"{CHROMIUM} is missing: install the distribution's Chromium (bash scripts/ensure-test-packages.sh, or apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def ui_stack(hub: tuple[HubProcess, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(hub[0], hub[1], tmp_path_factory.mktemp("ui"))
    stack.hub.admin("add-app", stack.service, str(REPO / "apps" / "hello_world" / "spec.json"))
    stack.register("--app", HELLO_WORLD_COMMAND, "--num-cpus", "1", "--memory-gb", "2", "--multiplicity", "3")
    stack.bridge.start()
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def page(browser: Any, ui_stack: Stack) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test; a failed script or a dialog is recorded, not ignored."""
    context = browser.new_context(base_url=ui_stack.hub.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        pg.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    try:
        yield pg
        assert not pg.errors, f"scripts failed on the page: {pg.errors}"  # type: ignore[attr-defined]
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def submit(stack: Stack, app: str, processor: str, tags: tuple[str, ...] = (), **parameters: Any) -> PairioJob:
    definition = PairioJobDefinition.model_validate({
        "appName": app, "processorName": processor, "inputFiles": [], "outputFiles": [],
        "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
    })
    return stack.client.submit_job(stack.service, definition, SMALL, tags=list(tags), skip_cache=True)


def log_in(page: Any, key: str) -> None:
    page.goto("/settings")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/settings"))
    assert "Logged in as" in page.inner_text("main")


def status_of(page: Any) -> str:
    return str(page.locator("#job-status-line [data-status]").first.get_attribute("data-status"))


def wait_for_status(page: Any, status: str, timeout_ms: int = TIMEOUT_MS) -> None:
    page.wait_for_selector(f'#job-status-line [data-status="{status}"]', timeout=timeout_ms)


# ---------------------------------------------------------------- the tests


def test_the_job_url_shows_hello_world_in_the_console(page: Any, ui_stack: Stack) -> None:
    job = submit(ui_stack, "hello_world", "hello_world_1", tags=("ui-hello",))
    done = ui_stack.wait_done(job, 60)
    assert done.status.value == "completed", (done.error, ui_stack.bridge.log)
    page.goto(job.job_url)
    assert page.locator("#console").inner_text().strip() == "Hello, world!"
    assert status_of(page) == "completed"
    assert page.get_by_role("heading", name="Timeline").is_visible()
    timeline = page.locator("#job-timeline").inner_text()
    assert "created by alice" in timeline and "completed" in timeline
    assert page.get_by_role("link", name="e2e bridge").is_visible()  # which compute client ran it
    screenshot(page, "job-completed")


def test_a_running_job_updates_live_and_its_resource_plot_appears(page: Any, ui_stack: Stack) -> None:
    # ~6 s of output: the bridge records a resource sample when the job starts and every 5 s
    job = submit(ui_stack, "testapp", "work", tags=("ui-live",), message="live start", lines=12, line_interval=0.5)
    page.goto(job.job_url)
    page.evaluate("window.__sameDocument = true")
    page.locator("#console", has_text="line 2").wait_for()  # waits by selector: the page's CSP forbids eval
    wait_for_status(page, "running", 5_000)
    assert "line 11" not in page.locator("#console").inner_text()  # still running: the text arrived live
    screenshot(page, "job-running")
    wait_for_status(page, "completed")
    console = page.locator("#console").inner_text()
    assert console.startswith("live start\nline 0\n") and console.rstrip().endswith("done")
    assert console.count("line 5") == 1
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    plot = page.locator("#resource-plot")
    plot.wait_for(state="visible")
    box = plot.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150
    assert page.locator("#resource-plot .series").count() == 2
    assert page.locator("#live-indicator").count() == 0 or not page.locator("#live-indicator").is_visible()
    plot.scroll_into_view_if_needed()
    screenshot(page, "job-resource-plot")


def test_submit_a_job_from_the_playground_and_see_it_complete(page: Any, ui_stack: Stack) -> None:
    log_in(page, ui_stack.key)
    page.goto(f"/submit?service={ui_stack.service}")
    page.get_by_label("App", exact=True).select_option("hello_world")  # the choice submits itself
    page.wait_for_url(re.compile(r"app=hello_world"))
    page.get_by_label("Processor", exact=True).select_option("hello_world_2")
    page.wait_for_url(re.compile(r"processor=hello_world_2"))
    page.get_by_label("name str").fill("Playwright")
    page.get_by_label("output file name").fill("greeting.txt")
    page.get_by_label("Memory (GB)").fill("0.5")
    page.get_by_label("Tags", exact=True).fill("ui-playground")
    page.locator("#python-code", has_text="value='Playwright'").wait_for()
    code = page.locator("#python-code").inner_text()
    assert "submit_job(" in code and "memoryGb=0.5" in code and "tags=['ui-playground']" in code
    screenshot(page, "playground")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"/job/[A-Za-z0-9]+"))
    assert "Job submitted." in page.inner_text("main")
    wait_for_status(page, "completed", 60_000)
    output = page.locator("#job-outputs").get_by_role("link", name="greeting.txt")
    assert output.is_visible()
    assert "18 B" in page.locator("#job-outputs").inner_text()  # "Hello, Playwright!"
    assert page.request.get(output.get_attribute("href")).text() == "Hello, Playwright!"
    screenshot(page, "job-from-playground")


def test_log_in_and_cancel_a_running_job(page: Any, ui_stack: Stack) -> None:
    job = submit(ui_stack, "testapp", "work", tags=("ui-cancel",), message="long job", sleep=60)
    ui_stack.wait_status(job, "running")
    page.goto(job.job_url)
    assert page.locator("#cancel-button").count() == 0  # not logged in
    log_in(page, ui_stack.key)
    screenshot(page, "settings")
    page.goto(job.job_url)
    wait_for_status(page, "running")
    page.locator("#cancel-button").click()
    page.wait_for_url(re.compile(r"notice=canceled"))
    wait_for_status(page, "failed", 20_000)
    assert "canceled by alice" in page.locator("#job-error").inner_text()
    assert "cancel requested by alice" in page.locator("#job-timeline").inner_text()
    assert ui_stack.client.get_job(job.jobId).status.value == "failed"


def test_an_xss_attempt_stays_inert(page: Any, ui_stack: Stack) -> None:
    evil = '<script>window.__xss = 1; alert("x")</script><img src=x onerror="window.__xss = 2; alert(2)"><b id=injected>b</b>'
    job = submit(ui_stack, "testapp", "work", tags=("ui-xss",), message=evil)
    ui_stack.wait_done(job, 60)
    page.goto(job.job_url)
    assert evil in page.locator("#console").inner_text()  # shown as text
    assert json.dumps(evil) in page.locator("#job-definition").inner_text()  # parameter values are shown as JSON
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#injected").count() == 0 and page.locator("#console img").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]
    page.goto("/jobs?tag=ui-xss")
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_filters_on_the_jobs_page(page: Any, ui_stack: Stack) -> None:
    tagged = [submit(ui_stack, "testapp", "work", tags=("ui-filter",), index=i) for i in range(3)]
    failing = submit(ui_stack, "testapp", "work", tags=("ui-filter",), exit_code=2)
    for job in [*tagged, failing]:
        ui_stack.wait_done(job, 60)
    page.goto(f"/jobs?service={ui_stack.service}")
    rows = page.locator("table.jobs tbody tr")
    assert rows.count() >= 4
    page.get_by_label("Tag", exact=True).fill("ui-filter")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"tag=ui-filter"))
    assert rows.count() == 4
    assert page.locator("#count-all").inner_text() == "4" and page.locator("#count-failed").inner_text() == "1"
    page.get_by_label("Status", exact=True).select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=failed"))
    assert rows.count() == 1 and failing.jobId in rows.first.inner_text()
    page.get_by_role("link", name=re.compile(r"^completed 3$")).click()
    assert rows.count() == 3
    assert page.get_by_role("link", name=failing.jobId).count() == 0
    page.get_by_role("link", name=tagged[0].jobId).click()
    page.wait_for_url(re.compile(tagged[0].jobId))
    page.goto(f"/jobs?service={ui_stack.service}")
    screenshot(page, "jobs")


def test_service_app_and_compute_client_pages(page: Any, ui_stack: Stack) -> None:
    log_in(page, ui_stack.key)
    page.goto(f"/service/{ui_stack.service}")
    assert page.locator(".online").first.is_visible(), (page.inner_text("main"), ui_stack.bridge.log)  # the bridge sends heartbeats
    assert "Add a user" in page.inner_text("main")  # alice owns the service
    screenshot(page, "service")
    page.get_by_role("link", name="hello_world").first.click()
    page.wait_for_url(re.compile(r"/app/hello_world"))
    assert page.get_by_role("heading", name=re.compile("Hello world 2")).is_visible()
    screenshot(page, "app")
    page.goto(f"/service/{ui_stack.service}")
    page.get_by_role("link", name="e2e bridge").first.click()
    page.wait_for_url(re.compile(r"/compute-client/"))
    text = page.inner_text("main")
    for part in ("Slots", "Recent failures", "exited with code 2"):
        assert part in text, f"{part!r} is not on the compute client page {page.url}:\n{text}\n{ui_stack.bridge.log}"
    screenshot(page, "compute-client")


def test_pages_read_without_javascript(browser: Any, ui_stack: Stack) -> None:
    job = submit(ui_stack, "hello_world", "hello_world_1", tags=("ui-nojs",), name="no script")
    ui_stack.wait_done(job, 60)
    context = browser.new_context(base_url=ui_stack.hub.url, java_script_enabled=False)
    try:
        pg = context.new_page()
        pg.goto(job.job_url)
        assert pg.locator("#console").inner_text().strip() == "Hello, no script!"
        assert status_of(pg) == "completed" and "created by alice" in pg.locator("#job-timeline").inner_text()
        pg.goto(f"/jobs?service={ui_stack.service}&tag=ui-nojs")
        assert pg.locator("table.jobs tbody tr").count() == 1
        pg.goto(f"/submit?service={ui_stack.service}")
        pg.get_by_label("App", exact=True).select_option("hello_world")
        pg.get_by_role("button", name="Choose").click()  # without scripts the choice needs a button
        pg.wait_for_url(re.compile(r"app=hello_world"))
        assert "submit_job(" not in pg.inner_text("main")  # no processor chosen yet
    finally:
        context.close()
