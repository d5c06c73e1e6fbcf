"""The report in a real browser: headless Chromium loads it with no console error and no network
request, and draws every figure. A screenshot of its top is kept as a test artifact."""

import json
import os

import pytest
from browser import Chromium, find_chromium
from conftest import ARTIFACTS

IMAGES = (
    "JSON.stringify([...document.images].map(i => ({alt: i.alt, complete: i.complete, "
    "natural: i.naturalWidth, drawn: i.getBoundingClientRect().width})))"
)


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        message = "no chromium on PATH (Debian package `chromium`; .ci/run installs it)"
        if os.environ.get("RANKBIAS_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return executable


def test_the_checks_see_errors_and_requests(chromium, tmp_path):
    """A page with a script error, a console error and a remote image must be caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><img src='http://127.0.0.1:9/x.png' alt='remote'>"
        "<script>console.error('broken'); undefined_function();</script></body></html>"
    )
    with Chromium(chromium) as browser:
        browser.load(page.as_uri())
        errors = browser.console_errors()
        assert any("broken" in e for e in errors) and len(errors) >= 2
        assert "http://127.0.0.1:9/x.png" in browser.requested_urls()
        images = json.loads(browser.evaluate(IMAGES))
        assert images[0]["natural"] == 0  # a figure that failed to draw is seen as such


@pytest.mark.workflow
def test_report_loads_in_chromium_offline_and_draws_every_figure(chromium, tiny_run):
    report = tiny_run / "results" / "report" / "index.html"
    with Chromium(chromium, width=1280, height=1600) as browser:
        browser.load(report.as_uri())
        images = json.loads(browser.evaluate(IMAGES))
        assert browser.console_errors() == []
        schemes = {url.split(":", 1)[0] for url in browser.requested_urls()}
        assert schemes <= {"file", "data"}, browser.requested_urls()
        summary_rows = browser.evaluate("document.querySelectorAll('.summary tr').length")
        shot = ARTIFACTS / "report-top.png"
        browser.screenshot(shot)
    assert len(images) == 15  # every figure of the tiny config, each embedded once
    for image in images:
        assert image["complete"] and image["natural"] > 0 and image["drawn"] > 0, image
        assert len(image["alt"]) > 40  # the figure's title and caption
    assert summary_rows == 1 + 16  # header + one row per claim
    assert shot.stat().st_size > 20_000
