"""The portal's webhook endpoint settings and its paged, filtered lists, in a real browser through the
real API and worker: edit an endpoint's URL and delivery settings, disable and enable it, rotate its
secret (shown once); page the jobs and the delivery log by cursor under filters. Settings out of
bounds are refused with the field's label, over HTTP as a form posts them."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from callbacks import verify
from callbacks.errors import WebhookVerificationError
from tests.conftest import GraphQLClient
from tests.portal.conftest import Portal, csrf_of, portal_client, slow_job, speech_job
from tests.receiver import Receiver
from tests.servers import ApiProcess

ADD_ENDPOINT = """
mutation Add($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { endpoint { id } userErrors { code message } }
}
"""


def _add_endpoint(page: Page, url: str) -> str:
    """Add an endpoint on the webhooks page; its whsec_ secret, shown once."""
    page.get_by_label("URL").fill(url)
    page.get_by_label("webhook.test").check()
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.get_by_label("Signing secret (whsec_…)").input_value()
    page.get_by_role("link", name="Go to the endpoint").click()
    return secret


def _fact(page: Page, name: str) -> Locator:
    health = page.locator("section", has=page.get_by_role("heading", name="Health"))
    return health.locator("div", has=page.locator("dt", has_text=re.compile(f"^{name}$")))


def test_edit_disable_enable_and_rotate_the_secret_of_an_endpoint(
    signed_in: Portal, receiver: Receiver
) -> None:
    page = signed_in.page
    signed_in.open("/portal/webhooks")
    first_secret = _add_endpoint(page, f"{receiver.url}/before")
    endpoint_url = page.url

    page.get_by_label("URL").fill(f"{receiver.url}/after")
    page.get_by_label("Description").fill("edited in the portal")
    page.get_by_label("Rate limit (deliveries a second)").fill("2.5")
    page.get_by_label("Retry schedule (seconds)").fill("0, 1")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("The endpoint is saved.")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{receiver.url}/after")
    expect(_fact(page, "Rate limit")).to_contain_text("2.5 a second")
    expect(_fact(page, "Retry schedule")).to_contain_text("0, 1 s")
    expect(_fact(page, "Timeout")).to_contain_text("(the default)")
    expect(page.get_by_label("Description")).to_have_value("edited in the portal")
    page.get_by_label("Rate limit (deliveries a second)").fill("")  # back to no limit of its own
    page.get_by_role("button", name="Save").click()
    expect(_fact(page, "Rate limit")).to_contain_text("none of its own")

    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_contain_text("disabled")
    expect(_fact(page, "State")).to_contain_text("Disabled")
    expect(_fact(page, "Why disabled")).to_contain_text("disabled by the tenant")
    expect(page.get_by_role("button", name="Send a test event")).to_have_count(0)
    page.get_by_role("button", name="Enable").click()
    expect(_fact(page, "State")).to_contain_text("Healthy")

    page.get_by_text("Rotate the signing secret…").click()
    page.get_by_label("Old secret keeps working for").select_option(label="no overlap")
    page.get_by_role("button", name="Rotate the secret").click()
    expect(page.get_by_role("heading", name="Secret rotated")).to_be_visible()
    secret = page.get_by_label("Signing secret (whsec_…)").input_value()
    assert secret.startswith("whsec_")
    assert secret != first_secret
    page.goto(endpoint_url)
    assert secret not in page.content()  # shown once
    page.get_by_role("button", name="Send a test event").click()
    (sent,) = receiver.wait_for("/after", lambda got: len(got) >= 1)
    assert verify(sent.body, sent.headers, secret)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError):
        verify(sent.body, sent.headers, first_secret)  # no overlap: the old secret signs no more
    assert receiver.wait_for("/before", lambda got: False, timeout=0) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate_limit_per_second", "5000", "Rate limit (deliveries a second) must be between 0.01 and 1000"),
        ("rate_limit_per_second", "fast", "Rate limit (deliveries a second): write a number"),
        ("timeout_seconds", "0.5", "Timeout (seconds) must be between 1 and 60"),
        (
            "retry_schedule",
            "5, soon",
            "Retry schedule (seconds): write delays in seconds separated by commas",
        ),
        ("retry_schedule", ", ".join(["1"] * 21), "Retry schedule (seconds) takes at most 20 delays"),
    ],
)
def test_delivery_settings_out_of_bounds_are_refused_naming_the_field(
    api: ApiProcess, gql: GraphQLClient, receiver: Receiver, field: str, value: str, message: str
) -> None:
    created = gql(ADD_ENDPOINT, {"input": {"url": f"{receiver.url}/bounds", "rateLimitPerSecond": 3}})
    endpoint_id = created["createWebhookEndpoint"]["endpoint"]["id"]
    client = portal_client(api, gql("mutation { createPortalSession { url } }")["createPortalSession"]["url"])
    try:
        page = client.get(f"/portal/webhooks/{endpoint_id}")
        form = {"csrf_token": csrf_of(page.text), "url": f"{receiver.url}/bounds", field: value}
        refused = client.post(f"/portal/webhooks/{endpoint_id}", data=form)
        assert refused.status_code == 400
        assert message in refused.text
        assert f'id="{field}" name="{field}" value="{value}"' in refused.text  # kept, to correct it
        assert 'aria-invalid="true"' in refused.text
        added = client.post("/portal/webhooks", data={**form, "csrf_token": csrf_of(page.text)})
        assert added.status_code == 400
        assert message in added.text
    finally:
        client.close()
    endpoints = gql("{ webhookEndpoints { url rateLimitPerSecond } }")["webhookEndpoints"]
    assert endpoints == [{"url": f"{receiver.url}/bounds", "rateLimitPerSecond": 3.0}]  # nothing changed


def test_jobs_and_deliveries_are_filtered_and_paged_by_cursor(signed_in: Portal, receiver: Receiver) -> None:
    page = signed_in.page
    created = signed_in.gql(
        ADD_ENDPOINT,
        {"input": {"url": f"{receiver.url}/log", "eventTypes": ["job.queued", "job.succeeded"]}},
    )
    assert created["createWebhookEndpoint"]["userErrors"] == []
    slow = [slow_job(signed_in, 0.01, 1) for _ in range(26)]
    speech = speech_job(signed_in)
    for job_id in [*slow, speech]:
        signed_in.gql.wait_for_job(job_id)
    receiver.wait_for("/log", lambda got: len(got) >= 2 * 27)

    signed_in.open("/portal/jobs")
    page.get_by_label("Kind").select_option("speech")  # htmx swaps the results and the address
    expect(page).to_have_url(re.compile(r"kind=speech"))
    expect(page.locator("tbody tr[data-job]")).to_have_count(1)
    page.get_by_label("Kind").select_option("test-slow")
    page.get_by_label("Status").select_option("SUCCEEDED")
    expect(page.locator("tbody tr[data-job]")).to_have_count(25)
    expect(page.locator("tbody tr[data-job]").first).to_have_attribute("data-job", slow[-1])
    page.get_by_role("link", name="Older jobs").click()
    expect(page).to_have_url(re.compile(rf"after={slow[1]}"))
    expect(page.locator("tbody tr[data-job]")).to_have_count(1)
    expect(page.locator("tbody tr[data-job]")).to_have_attribute("data-job", slow[0])
    expect(page.get_by_role("link", name="Older jobs")).to_have_count(0)
    page.get_by_role("link", name="Newest jobs").click()
    expect(page.locator("tbody tr[data-job]")).to_have_count(25)

    signed_in.open("/portal/deliveries")
    for _ in range(50):  # the last attempts are recorded just after their answers
        page.get_by_label("Status").select_option("SUCCEEDED")
        page.get_by_label("Event type").select_option("job.queued")
        if (
            page.locator(".delivery").count() == 20
            and page.get_by_role("link", name="Older deliveries").count()
        ):
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator(".delivery")).to_have_count(20)
    expect(page.locator(".delivery .event")).to_have_text(["job.queued"] * 20)
    page.get_by_role("link", name="Older deliveries").click()
    expect(page).to_have_url(re.compile(r"before=whd_"))
    expect(page.locator(".delivery")).to_have_count(27 - 20)
    expect(page.get_by_role("link", name="Older deliveries")).to_have_count(0)

    signed_in.open(f"/portal/deliveries?job={speech}")
    expect(page.locator(".delivery .event")).to_have_text(["job.succeeded", "job.queued"])
    succeeded = page.locator(".delivery", has=page.locator(".event", has_text="job.succeeded"))
    succeeded.get_by_text("Request and response").first.click()
    body = succeeded.locator("pre.request-body").first
    expect(body).to_contain_text(f'"id": "{speech}"')
    expect(body).to_contain_text("a download link signed for this attempt alone: not shown")
    assert "/downloads/" not in page.content()  # a live download link is a credential

    page.get_by_label("Until (UTC)").fill("2000-01-01T00:00")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No deliveries match these filters.")).to_be_visible()
