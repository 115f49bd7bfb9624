"""The portal in a real browser, through the real API and worker: sign-in, live progress, download,
cancel and delete, webhook endpoints and their deliveries, API keys, usage; every page accessible
(axe-core) and readable at phone width, and nothing loaded from another host (the `portal` fixture)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from callbacks import verify
from service.db import session_scope
from service.jobs.service import create_job
from tests.conftest import SPEECH_MUTATION, GraphQLClient
from tests.portal.conftest import LINK, PHONE, Portal
from tests.receiver import Answer, Receiver
from tests.servers import ApiProcess

README_SCREENSHOT = Path(__file__).parents[2] / "service" / "portal" / "static" / "img" / "portal-jobs.png"
PAGES = ["/portal/jobs", "/portal/webhooks", "/portal/deliveries", "/portal/keys", "/portal/usage"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def _slow_job(portal: Portal, seconds: float, steps: int) -> str:
    """A test-slow job (tests/plugin_kinds.py), created and enqueued as a mutation does."""
    with session_scope() as session:
        job = create_job(session, portal.tenant.id, "test-slow", {"seconds": seconds, "steps": steps}, None)
    return job.id


def _speech_job(portal: Portal, text: str = "Hello from the portal.") -> str:
    created = portal.gql(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]
    assert created["userErrors"] == []
    job_id: str = created["job"]["id"]
    return job_id


def test_a_link_signs_in_once_with_a_strict_http_only_cookie(portal: Portal) -> None:
    link = portal.link()
    portal.page.goto(link)
    expect(portal.page).to_have_url(f"{portal.api.url}/portal/jobs")
    expect(portal.page.get_by_role("heading", name="Jobs")).to_be_visible()
    (cookie,) = portal.page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/portal"
    assert (
        cookie["secure"] is False
    )  # plain http here; over https it is Secure (tests/portal/test_portal_access.py)

    again = portal.page.goto(link)
    assert again is not None
    assert again.status == 410
    expect(portal.page.get_by_role("heading", name="This sign-in link cannot be used")).to_be_visible()

    portal.page.goto(f"{portal.api.url}/portal/jobs")  # the session it opened is still signed in
    expect(portal.page.get_by_role("heading", name="Jobs")).to_be_visible()
    portal.page.get_by_role("button", name="Sign out").click()
    expect(portal.page).to_have_url(f"{portal.api.url}/portal/signed-out")
    signed_out = portal.page.goto(f"{portal.api.url}/portal/jobs")
    assert signed_out is not None
    assert signed_out.status == 401


def test_every_page_passes_axe_and_fits_a_phone(signed_in: Portal, receiver: Receiver) -> None:
    job_id = _slow_job(signed_in, 0.2, 1)
    signed_in.gql.wait_for_job(job_id)
    signed_in.open("/portal/webhooks")
    signed_in.page.get_by_label("URL").fill(f"{receiver.url}/axe")
    signed_in.page.get_by_role("button", name="Add endpoint").click()
    signed_in.audit()  # the secret, shown once
    endpoint_path = signed_in.page.get_by_role("link", name="Go to the endpoint").get_attribute("href")
    assert endpoint_path is not None
    signed_in.open(endpoint_path)
    signed_in.page.get_by_role("button", name="Send a test event").click()
    pages = [*PAGES, f"/portal/jobs/{job_id}", endpoint_path, "/portal/signed-out"]
    for path in pages:
        signed_in.open(path)
        signed_in.audit()
    signed_in.page.set_viewport_size(PHONE)
    for path in pages:
        signed_in.open(path)
        signed_in.fits()


def test_keyboard_users_skip_to_the_content_and_reach_every_section(signed_in: Portal) -> None:
    page = signed_in.page
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    nav = page.get_by_role("navigation", name="Portal")
    for name in ("Jobs", "Webhooks", "Deliveries", "API keys", "Usage"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    nav.get_by_role("link", name="API keys").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="API keys")).to_have_attribute("aria-current", "page")


def test_a_job_appears_and_its_progress_moves_live_without_reloading(signed_in: Portal) -> None:
    page = signed_in.page
    speech = _speech_job(signed_in)
    job_id = _slow_job(signed_in, seconds=4, steps=8)
    page.reload()
    expect(page.locator(f'tr[data-job="{speech}"]')).to_be_visible()
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")
    percent = row.locator('[data-field="percent"]')
    expect(percent).not_to_have_text("0%", timeout=20_000)
    first = int(percent.inner_text().rstrip("%"))
    expect(row.locator('[data-field="status"]')).to_have_text("SUCCEEDED", timeout=20_000)
    expect(percent).to_have_text("100%")
    assert first < 100  # it was seen mid-way, then moved on
    assert page.evaluate("window.stillTheSamePage") is True  # moved by server-sent events, not reloads
    assert any("/portal/jobs/live?" in url for url in signed_in.requests)


def test_a_finished_jobs_file_downloads_through_a_fresh_signed_url(signed_in: Portal) -> None:
    job_id = _speech_job(signed_in)
    assert signed_in.gql.wait_for_job(job_id)["status"] == "SUCCEEDED"
    signed_in.open(f"/portal/jobs/{job_id}")
    expect(signed_in.page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(signed_in.page.locator(".timeline")).to_contain_text("job.succeeded")
    with signed_in.page.expect_download() as downloading:
        signed_in.page.get_by_role("link", name="Download speech.wav").click()
    download = downloading.value
    assert download.suggested_filename == "speech.wav"
    assert Path(download.path()).read_bytes()[:4] == b"RIFF"
    assert any("/downloads/" in url for url in signed_in.requests)


def _wait_for_the_reload_at_the_end(page: Page) -> None:
    """A job's page reloads itself once its run ends: wait until it has (a mark set on the window now
    is gone after the reload). Polled with evaluate, because the portal's CSP forbids the eval that
    wait_for_function needs."""
    deadline = time.monotonic() + 20
    try:
        page.evaluate("window.beforeTheEnd = true")
    except PlaywrightError:  # the run already ended and the page is reloading itself
        page.wait_for_load_state()
        return
    while time.monotonic() < deadline:
        try:
            if page.evaluate("window.beforeTheEnd") is None:
                page.wait_for_load_state()
                return
        except PlaywrightError:  # between two documents
            pass
        time.sleep(0.1)
    raise AssertionError("the job's page did not reload itself when the run ended")


def test_cancel_then_delete_a_job_after_confirming(signed_in: Portal) -> None:
    page = signed_in.page
    job_id = _slow_job(signed_in, seconds=30, steps=60)
    signed_in.gql.wait_for_job(job_id, until={"RUNNING"})
    signed_in.open(f"/portal/jobs/{job_id}")
    confirm = page.get_by_role("button", name="Yes, cancel the job")
    expect(confirm).to_be_hidden()  # behind its "Cancel job…" disclosure
    page.get_by_text("Cancel job…").click()
    confirm.click()
    expect(page.get_by_role("status")).to_contain_text("canceled")
    _wait_for_the_reload_at_the_end(page)
    expect(page.locator('[data-field="status"]')).to_have_text("CANCELED", timeout=20_000)
    assert signed_in.gql.wait_for_job(job_id)["status"] == "CANCELED"

    page.get_by_text("Delete job…").click()
    page.get_by_role("button", name="Yes, delete the job").click()
    expect(page).to_have_url(f"{signed_in.api.url}/portal/jobs?done=deleted")
    expect(page.locator(f'tr[data-job="{job_id}"]')).to_have_count(0)
    assert signed_in.gql("query Q($id: ID!) { job(id: $id) { id } }", {"id": job_id})["job"] is None


def test_add_an_endpoint_send_a_test_event_see_the_attempt_and_redeliver(
    signed_in: Portal, receiver: Receiver
) -> None:
    page = signed_in.page
    receiver.script("/hooks", Answer(status=200, body=b"thanks from the receiver"))
    signed_in.open("/portal/webhooks")
    page.get_by_label("URL").fill(f"{receiver.url}/hooks")
    page.get_by_label("Description (optional)").fill("portal test")
    page.get_by_label("webhook.test").check()
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("heading", name="Endpoint added")).to_be_visible()
    secret = page.get_by_label("Signing secret (whsec_…)").input_value()
    assert secret.startswith("whsec_")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()

    page.get_by_role("link", name="Go to the endpoint").click()
    page.get_by_role("button", name="Send a test event").click()
    expect(page.get_by_role("status")).to_contain_text("webhook.test event is on its way")
    (first,) = receiver.wait_for("/hooks", lambda got: len(got) >= 1)
    payload = verify(first.body, first.headers, secret)  # signed with the secret the page showed once
    assert payload["type"] == "webhook.test"

    delivery = page.locator(".delivery").first
    for _ in range(50):  # the attempt is recorded just after the answer
        if delivery.locator(".code.ok").count():
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(delivery.locator(".code.ok")).to_have_text("200")
    delivery.get_by_text("Request and response").click()
    expect(delivery.locator("pre.body")).to_have_text("thanks from the receiver")

    delivery.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_role("status")).to_contain_text("sent again")
    again = receiver.wait_for("/hooks", lambda got: len(got) >= 2)
    assert again[1].headers["webhook-id"] == first.headers["webhook-id"]


def test_failed_deliveries_are_filtered_and_recovered_since_a_time(
    signed_in: Portal, receiver: Receiver
) -> None:
    page = signed_in.page
    receiver.script("/down", *[Answer(status=503, body=b"down for maintenance")] * 4)
    signed_in.open("/portal/webhooks")
    page.get_by_label("URL").fill(f"{receiver.url}/down")
    page.get_by_role("button", name="Add endpoint").click()
    page.get_by_role("link", name="Go to the endpoint").click()
    page.get_by_role("button", name="Send a test event").click()
    receiver.wait_for("/down", lambda got: len(got) >= 4)  # WEBHOOK_RETRY_SCHEDULE has four attempts

    page.get_by_label("Status").select_option("FAILED")  # htmx swaps the results and the address
    expect(page).to_have_url(re.compile(r"status=FAILED"))
    failed = page.locator(".delivery")
    for _ in range(50):  # the last attempt is recorded just after its answer
        if failed.count():
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(failed).to_have_count(1)
    expect(failed.locator(".attempts tbody tr:not(.exchange)")).to_have_count(4)
    expect(failed.locator(".status")).to_have_text("FAILED")

    page.get_by_label("Every failure since (UTC)").fill("2000-01-01T00:00")
    page.get_by_role("button", name="Send them again").click()
    expect(page.get_by_role("status").last).to_contain_text("1 delivery queued again")
    receiver.wait_for("/down", lambda got: len(got) >= 5)


def test_create_a_key_shown_once_then_revoke_it(signed_in: Portal) -> None:
    page = signed_in.page
    signed_in.open("/portal/keys")
    form = page.locator("form", has=page.get_by_role("button", name="Create key"))
    for scope in ("jobs:write", "webhooks:manage"):
        form.get_by_label(scope).uncheck()
    form.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Store this key now: it is shown only once")).to_be_visible()
    key = page.get_by_label("API key with jobs:read").input_value()
    viewer = httpx.post(
        f"{signed_in.api.url}/graphql",
        json={"query": "{ viewer { scopes } }"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert viewer.json()["data"]["viewer"]["scopes"] == ["jobs:read"]

    prefix = key.split("_")[1]
    page.reload()  # a reload re-posts nothing visible: the key is not on the page again
    signed_in.open("/portal/keys")
    assert key not in page.content()
    row = page.locator("tr", has_text=f"ck_{prefix}_")
    row.get_by_text("Revoke…").click()
    row.get_by_role("button", name=f"Yes, revoke ck_{prefix}").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    expect(page.locator("tr", has_text=f"ck_{prefix}_").locator(".status")).to_have_text("Revoked")
    refused = httpx.post(
        f"{signed_in.api.url}/graphql",
        json={"query": "{ viewer { scopes } }"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 401


def test_usage_shows_limits_and_a_chart_of_jobs_per_hour(signed_in: Portal) -> None:
    for _ in range(3):
        _slow_job(signed_in, 0.1, 1)
    signed_in.open("/portal/usage")
    page = signed_in.page
    expect(page.get_by_role("heading", name="Jobs per hour, last 7 days")).to_be_visible()
    expect(page.get_by_text("3 jobs in the last 7 days")).to_be_visible()
    expect(page.locator("#jobs-chart canvas")).to_be_visible()  # uPlot drew it
    expect(page.get_by_role("heading", name="Storage used")).to_be_visible()


def test_the_jobs_page_as_shown_in_the_readme(signed_in: Portal, tmp_path: Path) -> None:
    """A screenshot for README; UPDATE_SCREENSHOTS=1 writes it to service/portal/static/img/."""
    for text in ("Your order has shipped.", "Welcome aboard.", "Quarterly report, read aloud."):
        signed_in.gql.wait_for_job(_speech_job(signed_in, text))
    export = signed_in.gql("mutation { startExport(input: {}) { job { id } } }")["startExport"]["job"]["id"]
    signed_in.gql.wait_for_job(export)
    running = _slow_job(signed_in, seconds=40, steps=40)
    signed_in.open("/portal/jobs")
    expect(signed_in.page.locator(f'tr[data-job="{running}"] [data-field="percent"]')).to_have_text(
        re.compile(r"^[1-3]\d%$"), timeout=20_000
    )
    shot = tmp_path / "portal-jobs.png"
    signed_in.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, README_SCREENSHOT)


def test_a_link_followed_from_another_site_signs_in(
    browser: Browser, api: ApiProcess, gql: GraphQLClient
) -> None:
    """A link clicked in a web mail client: the redirect after it is a cross-site navigation, which
    carries no SameSite=Strict cookie; the portal reloads that page once from its own site."""
    link = gql(LINK)["createPortalSession"]["url"]
    other_site = f"http://localhost:{urlsplit(api.url).port}"  # another site than 127.0.0.1
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(
            f"{other_site}/mail",
            lambda route: route.fulfill(
                content_type="text/html", body=f'<a href="{link}">Open the portal</a>'
            ),
        )
        page.goto(f"{other_site}/mail")
        page.get_by_role("link", name="Open the portal").click()
        expect(page).to_have_url(f"{api.url}/portal/jobs")
        expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    finally:
        context.close()
