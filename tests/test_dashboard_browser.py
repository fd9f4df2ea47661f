"""The dashboard and the report in a real headless Chromium: they load without a console
error, the task stream has one bar per call, and a screenshot of each is saved for a person
to look at (in $REMOTEFN_ARTIFACTS, default test-artifacts/ beside tests/)."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

import browser
import remotefn
from helpers import wait_for_file, wait_until
from remotefn import remote

pytestmark = pytest.mark.skipif(browser.skip_reason() is not None,
                                reason=str(browser.skip_reason()))

ARTIFACTS = os.environ.get("REMOTEFN_ARTIFACTS") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")
BAR_COUNT = "return Bokeh.documents[0].get_model_by_name('tasks').data.worker.length"


def simulate(step):
    """A call that works for a moment (busy, so the bars have a length)."""
    end = time.process_time() + 0.005 * (1 + step % 4)
    while time.process_time() < end:
        pass
    return step


def analyse(step):
    if step % 5 == 4:
        raise ValueError(f"step {step} did not converge")
    return simulate(step)


def wait_at(gate):
    wait_for_file(gate)
    return gate


@pytest.fixture
def chromium():
    yield from browser.chromium()


def run_known_calls() -> list[concurrent.futures.Future]:
    """21 calls of two functions on two workers, 2 of them failing; returns when all are
    done."""
    sim = remote(simulate, block=True, max_workers=2)
    ana = remote(analyse, block=True, max_workers=2)
    futures = [sim(i) for i in range(11)] + [ana(i) for i in range(10)]
    concurrent.futures.wait(futures)
    return futures


def bokeh_ready(driver) -> bool:
    return driver.execute_script(
        "return !!(window.Bokeh && Bokeh.documents.length && Bokeh.documents[0]"
        ".get_model_by_name('tasks'))")


def screenshot(driver, name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the whole page
        "width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    path = os.path.join(ARTIFACTS, name)
    driver.save_screenshot(path)
    assert os.path.getsize(path) > 10_000
    return path


def test_the_dashboard_in_a_browser_shows_each_call_and_the_running_one(chromium, tmp_path):
    gate = str(tmp_path / "gate")
    with remotefn.session("local", max_cores=3, forward_output=False,
                          dashboard=True) as session:
        url = open(session.dashboard.url_file).read().strip()
        chromium.get(url)  # before the calls: the page must follow the run as it goes
        wait_until(lambda: bokeh_ready(chromium), what="Bokeh to draw the dashboard")
        assert chromium.execute_script(BAR_COUNT) == 0
        futures = run_known_calls()
        held = remote(wait_at)(gate)
        wait_until(lambda: chromium.execute_script(BAR_COUNT) == len(futures),
                   what="one bar per finished call")
        wait_until(lambda: "wait_at" in chromium.execute_script(
            "return document.getElementById('running').textContent"),
            what="the running call in its table")
        rows = chromium.execute_script(
            "return document.getElementById('workers').rows.length")
        errors = chromium.execute_script(
            "return Array.from(document.querySelectorAll('#errors summary'), e => e.textContent)")
        screenshot(chromium, "dashboard.png")
        open(gate, "w").close()
        held.result(timeout=60)
        console = browser.console_errors(chromium)
    assert console == []
    assert rows - 1 >= len({f.info.worker_id for f in futures})  # a header, then a worker each
    assert sorted(error.split(": ", 2)[-1] for error in errors) == [
        "ValueError: step 4 did not converge", "ValueError: step 9 did not converge"]


def test_the_report_in_a_browser_shows_each_call(chromium, tmp_path):
    with remotefn.session("local", max_cores=2, forward_output=False,
                          record=tmp_path / "run.jsonl") as session:
        futures = run_known_calls()
    path = tmp_path / "run.html"
    from remotefn.dashboard.report import read_events, write_report

    write_report(read_events(tmp_path / "run.jsonl"), path, title="remotefn run report")
    chromium.get(path.as_uri())
    wait_until(lambda: bokeh_ready(chromium), what="Bokeh to draw the report")
    assert chromium.execute_script(BAR_COUNT) == len(futures)
    text = chromium.execute_script("return document.body.innerText")
    assert f"{len(futures)} calls ran on" in text
    screenshot(chromium, "report.png")
    assert browser.console_errors(chromium) == []
    assert session.closed
