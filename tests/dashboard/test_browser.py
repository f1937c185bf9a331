"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright) against the
real service and a real worker process running examples/stream_tokens.py (#11).

Screenshots land in test-artifacts/ (laptop and phone widths) for a person to look at.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .conftest import CLIENT_KEY, Endpoint, PageErrors, screenshot

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Generous waits: the machine running the suite may be loaded.
WAIT_MS = 20_000


async def open_dashboard(browser: Any, service: Any, viewport: dict[str, int]) -> tuple[Any, PageErrors]:
    """The page, opened the way a person does: endpoint and key typed into the form."""
    page = await browser.new_page(viewport=viewport)
    errors = PageErrors(page)
    await page.goto(service.url + "/dashboard")
    await page.fill("#endpoint", "ep")
    await page.fill("#key", CLIENT_KEY)
    await page.click("#connect button")
    await page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
    assert CLIENT_KEY not in page.url  # the key never goes into the address
    return page, errors


async def test_page_shows_a_job_appear_and_complete_without_reload(
    keyed: Any, browser: Any, session: Any, stream_worker: Any
) -> None:
    ep = Endpoint(session, keyed.endpoint_url("ep"))
    page, errors = await open_dashboard(browser, keyed, LAPTOP)
    await page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads

    job_id = await ep.run({"prompt": "one two three", "delay": 0.05})
    row = f'#requests tr[data-id="{job_id}"]'
    await page.wait_for_selector(row, timeout=WAIT_MS)
    await page.wait_for_selector(f'{row}[data-status="COMPLETED"]', timeout=WAIT_MS)
    assert await page.evaluate("window.loadedOnce") is True
    assert (await ep.status(job_id))["status"] == "COMPLETED"
    # The worker is listed with its state, and the per-minute chart counted the job.
    await page.wait_for_selector("#workers tbody tr .badge", timeout=WAIT_MS)
    # The per-minute series counted the job: in this minute's bucket, or in the previous one when
    # the minute turned between the job's end and the snapshot (the tile shows this minute only).
    counted = "app.series && app.series.completed.reduce((a, b) => a + b, 0) === 1"
    await page.wait_for_function(counted, timeout=WAIT_MS)

    # The state filter keeps only the chosen state.
    await page.select_option("#filter", "FAILED")
    await page.wait_for_selector("#requests tbody tr:not([data-id])", timeout=WAIT_MS)
    assert await page.locator("#requests tr[data-id]").count() == 0
    await page.select_option("#filter", "COMPLETED")
    await page.wait_for_selector(row, timeout=WAIT_MS)

    await screenshot(page, "dashboard-laptop")

    # The page's own form submits; a prompt that is not text makes the handler fail, and the
    # failed job's page offers Retry, which requeues it (and it fails again).
    await page.select_option("#filter", "")
    await page.fill("#submit-input", '{"prompt": 5}')
    await page.click("#submit button")
    failed = page.locator('#requests tr[data-status="FAILED"] a')
    await failed.first.wait_for(timeout=WAIT_MS)
    await failed.first.click()
    await page.wait_for_selector('#j-status[data-status="FAILED"]', timeout=WAIT_MS)
    assert "AttributeError" in await page.locator("#j-error").text_content()
    assert await page.locator("#j-cancel").is_hidden()
    await page.click("#j-retry")
    await page.wait_for_selector('#j-retries:text-is("1")', timeout=WAIT_MS)
    await page.wait_for_selector('#j-status[data-status="FAILED"]', timeout=WAIT_MS)

    phone, phone_errors = await open_dashboard(browser, keyed, PHONE)
    await phone.wait_for_selector(row, timeout=WAIT_MS)
    await screenshot(phone, "dashboard-phone")
    assert errors.messages == [] and phone_errors.messages == []


async def test_job_page_shows_streamed_chunks_as_they_arrive(
    keyed: Any, browser: Any, session: Any, stream_worker: Any
) -> None:
    ep = Endpoint(session, keyed.endpoint_url("ep"))
    page, errors = await open_dashboard(browser, keyed, LAPTOP)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    job_id = await ep.run({"prompt": " ".join(words), "delay": 0.4})
    await page.click(f'#requests tr[data-id="{job_id}"] a', timeout=WAIT_MS)
    await page.wait_for_selector("#job-view:not([hidden])", timeout=WAIT_MS)
    # The first chunks show while the job still runs, then the rest, then the end.
    await page.wait_for_selector("#j-stream li", timeout=WAIT_MS)
    await page.locator("#j-stream li").nth(5).wait_for(timeout=WAIT_MS)
    await page.wait_for_selector('#j-status[data-status="COMPLETED"]', timeout=WAIT_MS)
    chunks = await page.locator("#j-stream li").all_text_contents()
    assert len(chunks) == 6, chunks
    assert "".join(chunks) == " ".join(words)
    assert '"delay": 0.4' in await page.locator("#j-input").text_content()
    assert "alpha" in await page.locator("#j-output").text_content()
    assert await page.locator("#j-cancel").is_hidden()
    await screenshot(page, "dashboard-job")
    assert errors.messages == []


async def test_cancel_a_running_job_from_its_page(
    keyed: Any, browser: Any, session: Any, stream_worker: Any
) -> None:
    ep = Endpoint(session, keyed.endpoint_url("ep"))
    job_id = await ep.run({"prompt": "slow " * 200, "delay": 0.5})
    await ep.wait_status(job_id, "IN_PROGRESS")
    page = await browser.new_page(viewport=PHONE)
    errors = PageErrors(page)
    await page.goto(keyed.url + "/dashboard")
    await page.evaluate(f"sessionStorage.setItem('worker-kit-key:ep', {CLIENT_KEY!r})")
    await page.goto(keyed.url + f"/dashboard#ep=ep&job={quote(job_id)}")
    await page.wait_for_selector('#j-status[data-status="IN_PROGRESS"]', timeout=WAIT_MS)
    await page.wait_for_selector("#j-stream li", timeout=WAIT_MS)
    await page.click("#j-cancel")
    await page.wait_for_selector('#j-status[data-status="CANCELLED"]', timeout=WAIT_MS)
    assert (await ep.status(job_id))["status"] == "CANCELLED"
    assert await page.locator("#j-cancel").is_hidden() and await page.locator("#j-retry").is_hidden()
    await screenshot(page, "dashboard-job-cancelled-phone")
    assert errors.messages == []
