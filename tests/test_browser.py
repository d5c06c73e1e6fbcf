"""The report in a real browser: headless Chromium loads it with no console error and no network
request, and draws every figure. A screenshot of its top is kept as a test artifact."""

import json

import pytest
from browser import Chromium, find_chromium
from conftest import ARTIFACTS, unavailable, wait_for

IMAGES = (
    "JSON.stringify([...document.images].map(i => ({alt: i.alt, complete: i.complete, "
    "natural: i.naturalWidth, drawn: i.getBoundingClientRect().width})))"
)
# the report's figures: inline SVG, or unpacked from gzip by the page's script
FIGURES = (
    "JSON.stringify([...document.querySelectorAll('figure')].map(f => {"
    " const svg = f.querySelector('svg[role=img]');"
    " return {label: svg ? svg.getAttribute('aria-label') : '',"
    " drawn: svg ? svg.getBoundingClientRect().width : 0,"
    " rules: svg ? svg.querySelectorAll('[id*=rule-]').length : 0}; }))"
)
PACKED = "document.querySelectorAll('[data-gz]').length"
REPORT_WEIGHT_LIMIT = 2_000_000  # bytes: issue 18's target for the default audit's report


def loaded_offline(browser: Chromium, report, schemes_allowed: set[str]) -> list[dict]:
    """Load a report, wait for its packed figures, check it logged no error and requested only
    `schemes_allowed`; return its figures (label, drawn width, rule lines)."""
    browser.load(report.as_uri())
    wait_for(lambda: browser.evaluate(PACKED) == 0, "the compressed figures to unpack", 60)
    figures = json.loads(browser.evaluate(FIGURES))
    assert browser.console_errors() == []
    schemes = {url.split(":", 1)[0] for url in browser.requested_urls()}
    assert schemes <= schemes_allowed, browser.requested_urls()
    return figures


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        unavailable(
            "BROWSER", "no chromium on PATH (Debian package `chromium`; .ci/run installs it)"
        )
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
        figures = loaded_offline(browser, report, {"file", "data", "blob"})  # blob: unpacked
        rows = json.loads(
            browser.evaluate(
                "JSON.stringify([...document.querySelectorAll('.summary tr')].slice(1)"
                ".map(r => r.innerText))"
            )
        )
        order = browser.evaluate(
            "['scope', 'contents', 'verdicts', 'concerns', 'claims']"
            ".map(id => document.getElementById(id).getBoundingClientRect().top)"
        )
        shot = ARTIFACTS / "report-top.png"
        browser.screenshot(shot)
        browser.call("Emulation.setEmulatedMedia", {"media": "print"}, session=True)
        cut_off = browser.evaluate(  # tables running past the printed page's right margin
            "[...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect()"
            ".right > document.body.getBoundingClientRect().right + 1).length"
        )
    assert cut_off == 0
    assert len(figures) == 19  # every figure of the tiny config, each embedded once
    for figure in figures:
        assert figure["drawn"] > 0, figure
        assert "panel" in figure["label"] and len(figure["label"]) > 40  # what it shows
    assert sum(f["rules"] > 0 for f in figures) >= 5  # rule lines survive inlining
    assert len(rows) == 16  # one row per claim
    for row in rows:
        assert "needs" in row, row  # every verdict row states the threshold it is judged on
    assert order == sorted(order)  # scope box and contents come before the verdicts
    assert report.stat().st_size <= REPORT_WEIGHT_LIMIT
    assert shot.stat().st_size > 20_000


@pytest.mark.workflow
def test_the_worked_examples_report_draws_its_figures_and_rules(chromium, example):
    """README's "Audit your own claim": the report of a user's own claims, with an experiment of
    checkpoints trained elsewhere, loads offline and draws every figure with the rules' lines."""
    workdir, _ = example
    report = workdir / "results" / "report" / "index.html"
    with Chromium(chromium, width=1280, height=1600) as browser:
        figures = loaded_offline(browser, report, {"file", "data"})
        assert len(figures) == 7 and all(f["drawn"] > 0 and f["label"] for f in figures)
        assert sum(f["rules"] for f in figures) > 0  # U1 and U2's lines on the rank figures
        browser.evaluate("document.getElementById('verdicts').scrollIntoView()")
        browser.screenshot(ARTIFACTS / "your-claim-report.png")
