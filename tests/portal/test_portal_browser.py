"""The portal in a real browser, through the real API and worker: sign-in, live progress, download,
cancel and delete, webhook endpoints and their deliveries, API keys, usage; every page accessible
(axe-core) and readable at phone width, and nothing loaded from another host (the `portal` fixture)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, Page, ViewportSize, expect
from playwright.sync_api import Error as PlaywrightError

from callbacks import verify
from tests.conftest import GraphQLClient
from tests.portal.conftest import LINK, PHONE, Portal, slow_job, speech_job
from tests.receiver import Answer, Receiver
from tests.servers import ROOMY_PLAN, ApiProcess

README_SCREENSHOT = Path(__file__).parents[2] / "service" / "portal" / "static" / "img" / "portal-jobs.png"
SCREENSHOT = ViewportSize(width=1100, height=580)
PAGES = ["/portal/jobs", "/portal/webhooks", "/portal/deliveries", "/portal/keys", "/portal/usage"]


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
    job_id = slow_job(signed_in, 0.2, 1)
    signed_in.gql.wait_for_job(job_id)
    signed_in.open("/portal/webhooks")
    signed_in.page.get_by_label("URL").fill(f"{receiver.url}/axe")
    signed_in.page.get_by_role("button", name="Add endpoint").click()
    signed_in.audit()  # the secret, shown once
    endpoint_path = signed_in.page.get_by_role("link", name="Go to the endpoint").get_attribute("href")
    assert endpoint_path is not None
    signed_in.open(endpoint_path)
    signed_in.page.get_by_role("button", name="Send a test event").click()
    receiver.wait_for("/axe", lambda got: len(got) >= 1)
    for _ in range(50):  # the attempt is recorded just after the answer: its request and response show
        signed_in.open("/portal/deliveries")
        if signed_in.page.locator("pre.request-headers").count():
            break
        signed_in.page.wait_for_timeout(200)
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


def test_jobs_made_after_the_page_opened_appear_at_the_top_and_move_live(signed_in: Portal) -> None:
    page = signed_in.page
    earlier = speech_job(signed_in)
    signed_in.gql.wait_for_job(earlier)
    already = len(signed_in.requests)
    signed_in.open("/portal/jobs")
    page.evaluate("window.stillTheSamePage = true")
    speech = speech_job(signed_in)  # over the API, after the page was rendered
    job_id = slow_job(signed_in, seconds=4, steps=8)
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()
    expect(page.locator("tbody tr[data-job]")).to_have_count(3)
    rows = page.locator("tbody tr[data-job]")
    assert [rows.nth(n).get_attribute("data-job") for n in range(3)] == [job_id, speech, earlier]
    percent = row.locator('[data-field="percent"]')
    expect(percent).not_to_have_text("0%", timeout=20_000)
    first = int(percent.inner_text().rstrip("%"))
    expect(row.locator('[data-field="status"]')).to_have_text("SUCCEEDED", timeout=20_000)
    expect(percent).to_have_text("100%")
    assert first < 100  # it was seen mid-way, then moved on
    assert page.evaluate("window.stillTheSamePage") is True  # rows came by server-sent events, not reloads
    requests = signed_in.requests[already:]
    streams = [url for url in requests if "/portal/jobs/live?" in url]
    assert len(streams) == 1, streams  # one stream for the page, no polling
    assert [url for url in requests if urlsplit(url).path == "/portal/jobs"] == [
        f"{signed_in.api.url}/portal/jobs"
    ]


def test_a_new_job_appears_only_once_it_matches_the_pages_filters(signed_in: Portal) -> None:
    page = signed_in.page
    signed_in.open("/portal/jobs?status=SUCCEEDED&kind=speech")
    expect(page.get_by_text("No jobs match these filters.")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")
    other_kind = slow_job(signed_in, seconds=0.2, steps=1)
    speech = speech_job(signed_in)
    row = page.locator(f'tr[data-job="{speech}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("SUCCEEDED", timeout=20_000)
    assert signed_in.gql.wait_for_job(other_kind)["status"] == "SUCCEEDED"
    expect(page.locator("tbody tr[data-job]")).to_have_count(1)  # the test-slow job never showed
    expect(page.get_by_text("No jobs match these filters.")).to_have_count(0)
    assert page.evaluate("window.stillTheSamePage") is True


def test_a_finished_jobs_file_downloads_through_a_fresh_signed_url(signed_in: Portal) -> None:
    job_id = speech_job(signed_in)
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
    is gone after the reload). A page rendered after the run ended is not live and has nothing to
    wait for (a worker can stop a canceled job before the page the cancel redirects to is rendered).
    Polled with evaluate, because the portal's CSP forbids the eval that wait_for_function needs."""
    deadline = time.monotonic() + 20
    try:
        live = page.evaluate(
            "window.beforeTheEnd = document.querySelector('[data-reload-when-done]') != null"
        )
    except PlaywrightError:  # the run already ended and the page is reloading itself
        page.wait_for_load_state()
        return
    if not live:
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
    job_id = slow_job(signed_in, seconds=30, steps=60)
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
    answer_headers = {"X-Receiver": "portal-test", "Set-Cookie": "session=receivers-own-secret"}
    receiver.script("/hooks", Answer(status=200, body=b"thanks from the receiver", headers=answer_headers))
    signed_in.open("/portal/webhooks")
    page.get_by_label("URL").fill(f"{receiver.url}/hooks")
    page.get_by_label("Description (optional)").fill("portal test")
    page.get_by_label("webhook.test").check()
    page.get_by_label("Rate limit (deliveries a second)").fill("5")
    page.get_by_label("Timeout (seconds)").fill("3")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("heading", name="Endpoint added")).to_be_visible()
    secret = page.get_by_label("Signing secret (whsec_…)").input_value()
    assert secret.startswith("whsec_")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()

    page.get_by_role("link", name="Go to the endpoint").click()
    health = page.locator("section", has=page.get_by_role("heading", name="Health"))
    expect(health.locator("div", has_text="Rate limit")).to_contain_text("5 a second")
    expect(health.locator("div", has_text="Timeout")).to_contain_text("3 s")
    expect(page.get_by_label("Rate limit (deliveries a second)")).to_have_value("5")
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
    sent = delivery.locator("pre.request-headers")
    expect(sent).to_contain_text(f"webhook-id: {first.headers['webhook-id']}")
    expect(sent).to_contain_text(f"webhook-signature: {first.headers['webhook-signature']}")
    expect(delivery.locator("pre.request-body")).to_contain_text('"type": "webhook.test"')
    assert json.loads(delivery.locator("pre.request-body").inner_text()) == json.loads(first.body)
    got = delivery.locator("pre.response-headers")
    expect(got).to_contain_text("x-receiver: portal-test")
    expect(got).to_contain_text("set-cookie: (hidden)")
    assert "receivers-own-secret" not in page.content()
    expect(delivery.locator("pre.response-body")).to_have_text("thanks from the receiver")
    signed_in.fits()  # long headers wrap inside their box

    delivery.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_role("status")).to_contain_text("sent again")
    again = receiver.wait_for("/hooks", lambda got: len(got) >= 2)
    assert again[1].headers["webhook-id"] == first.headers["webhook-id"]


def test_failed_deliveries_are_filtered_shown_in_the_health_and_recovered_since_a_time(
    signed_in: Portal, receiver: Receiver
) -> None:
    page = signed_in.page
    receiver.script("/down", *[Answer(status=503, body=b"down for maintenance")] * 4)
    signed_in.open("/portal/webhooks")
    page.get_by_label("URL").fill(f"{receiver.url}/down")
    page.get_by_role("button", name="Add endpoint").click()
    page.get_by_role("link", name="Go to the endpoint").click()
    endpoint_path = urlsplit(page.url).path
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
    deliveries_url = page.url

    signed_in.open("/portal/webhooks")
    state = page.locator("tr", has_text=f"{receiver.url}/down")
    expect(state).to_contain_text("Failing since")
    signed_in.open(endpoint_path)
    health = page.locator("section", has=page.get_by_role("heading", name="Health"))
    expect(health.locator("div", has_text="State")).to_contain_text("Failing")
    expect(health.locator("div", has_text="Failing since").locator("time")).to_be_visible()
    expect(health.locator("div", has_text="Last success")).to_contain_text("not known")

    page.goto(deliveries_url)
    page.get_by_label("Every failure since (UTC)").fill("2000-01-01T00:00")
    page.get_by_role("button", name="Send them again").click()
    expect(page.get_by_role("status").last).to_contain_text("1 delivery queued again")
    receiver.wait_for("/down", lambda got: len(got) >= 5)  # answered 200 this time
    for _ in range(50):  # the attempt is recorded just after its answer
        signed_in.open(endpoint_path)
        if health.locator(".status-succeeded").count():
            break
        page.wait_for_timeout(200)
    expect(health.locator("div", has_text="State")).to_contain_text("Healthy")
    expect(health.locator("div", has_text="Failing since")).to_contain_text("—")
    expect(health.locator("div", has_text="Last success").locator("time")).to_be_visible()


def test_create_a_key_shown_once_see_its_last_use_then_revoke_it(signed_in: Portal) -> None:
    page = signed_in.page
    signed_in.open("/portal/keys")
    form = page.locator("form", has=page.get_by_role("button", name="Create key"))
    for scope in ("jobs:write", "webhooks:manage"):
        form.get_by_label(scope).uncheck()
    form.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Store this key now: it is shown only once")).to_be_visible()
    key = page.get_by_label("API key with jobs:read").input_value()
    prefix = key.split("_")[1]
    last_used = page.locator("tr", has_text=f"ck_{prefix}_").locator("td").nth(3)
    expect(last_used).to_have_text("never")
    viewer = httpx.post(
        f"{signed_in.api.url}/graphql",
        json={"query": "{ viewer { scopes } }"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert viewer.json()["data"]["viewer"]["scopes"] == ["jobs:read"]

    signed_in.open("/portal/keys")
    assert key not in page.content()  # shown once
    expect(last_used.locator("time")).to_be_visible()  # the request just made
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


def test_usage_shows_running_and_queued_against_the_caps_and_a_chart_of_jobs_per_hour(
    signed_in: Portal,
) -> None:
    for _ in range(2):
        signed_in.gql.wait_for_job(slow_job(signed_in, 0.1, 1))
    running = slow_job(signed_in, seconds=30, steps=60)
    signed_in.gql.wait_for_job(running, until={"RUNNING"})
    signed_in.open("/portal/usage")
    page = signed_in.page
    caps = ROOMY_PLAN
    tile = page.locator("section", has=page.get_by_role("heading", name="Running", exact=True))
    expect(tile.locator(".big")).to_have_text(f"1 of {caps['max_running']:,}")
    expect(tile.locator("meter")).to_have_attribute("max", str(caps["max_running"]))
    queued = page.locator("section", has=page.get_by_role("heading", name="Queued", exact=True))
    expect(queued.locator(".big")).to_contain_text(f"of {caps['max_queued']:,}")
    expect(page.get_by_role("heading", name="Jobs per hour, last 7 days")).to_be_visible()
    expect(page.get_by_text("3 jobs in the last 7 days")).to_be_visible()
    expect(page.locator("#jobs-chart canvas")).to_be_visible()  # uPlot drew it
    expect(page.get_by_role("heading", name="Storage used")).to_be_visible()
    assert (
        signed_in.gql("mutation C($id: ID!) { cancelJob(id: $id) { userErrors { code } } }", {"id": running})[
            "cancelJob"
        ]["userErrors"]
        == []
    )


def test_the_jobs_page_as_shown_in_the_readme(signed_in: Portal, tmp_path: Path) -> None:
    """A screenshot for README; UPDATE_SCREENSHOTS=1 writes it to service/portal/static/img/."""
    for text, priority in (
        ("Quarterly report, read aloud.", "LOW"),
        ("Welcome aboard.", "NORMAL"),
        ("Your order has shipped.", "HIGH"),
    ):
        signed_in.gql.wait_for_job(speech_job(signed_in, text, priority))
    export = signed_in.gql("mutation { startExport(input: {}) { job { id } } }")["startExport"]["job"]["id"]
    signed_in.gql.wait_for_job(export)
    running = slow_job(signed_in, seconds=20, steps=20)
    page = signed_in.page
    page.set_viewport_size(SCREENSHOT)
    signed_in.open("/portal/jobs")
    expect(page.locator(f'tr[data-job="{running}"] [data-field="percent"]')).to_have_text(
        re.compile(r"^[1-3]\d%$"), timeout=20_000
    )
    expect(page.locator(".priority-high")).to_have_text("High")
    shot = tmp_path / "portal-jobs.png"
    page.screenshot(path=str(shot))
    assert 10_000 < shot.stat().st_size < 100_000
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, README_SCREENSHOT)
    signed_in.gql("mutation C($id: ID!) { cancelJob(id: $id) { job { id } } }", {"id": running})


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
