"""A real Chromium (Debian's, driven by Playwright) against the real API and worker: one browser for the
session, a fresh context (no cookies) per test. Every request a page makes is recorded: none may
leave the API's host."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, ViewportSize, expect, sync_playwright

from service.db import session_scope
from service.jobs.service import create_job
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.receiver import Receiver
from tests.servers import ApiProcess

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()
LAPTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)
BLOCKING_IMPACTS = {"serious", "critical"}
LINK = "mutation { createPortalSession { url expiresAt } }"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's chromium (Playwright cannot download its own browser here): `apt-get install chromium`.

    One for this package's tests, closed after them: Playwright's sync API runs an event loop in this
    thread while it is open, and tests elsewhere start their own with asyncio.run."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with `apt-get install chromium` (see README)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Portal:
    """One browser context signed in (or not) to one tenant's portal."""

    page: Page
    api: ApiProcess
    tenant: TenantHandle
    gql: GraphQLClient
    requests: list[str] = field(default_factory=list)

    def link(self) -> str:
        """A fresh one-time sign-in link, asked for over the API with the tenant's key."""
        url: str = self.gql(LINK)["createPortalSession"]["url"]
        return url

    def sign_in(self) -> None:
        self.page.goto(self.link())
        expect(self.page).to_have_url(f"{self.api.url}/portal/jobs")

    def open(self, path: str) -> None:
        response = self.page.goto(self.api.url + path)
        assert response is not None
        assert response.status == 200, (path, response.status)

    def open_disclosures(self) -> None:
        """Open every <details> (confirmations, an attempt's request and response) as a user would."""
        self.page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")

    def audit(self) -> None:
        """axe-core on the page with its disclosures open: no serious or critical violation."""
        self.open_disclosures()
        self.page.evaluate(AXE)
        violations: list[dict[str, Any]] = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations.map(
                v => ({id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
        )
        blocking = [violation for violation in violations if violation["impact"] in BLOCKING_IMPACTS]
        assert not blocking, (self.page.url, blocking)

    def fits(self) -> None:
        """Nothing makes the page itself scroll sideways (wide tables scroll inside their own box), with
        its disclosures open."""
        self.open_disclosures()
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (self.page.url, overflow)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def slow_job(portal: Portal, seconds: float, steps: int) -> str:
    """A test-slow job (tests/plugin_kinds.py), created and enqueued as a mutation does."""
    with session_scope() as session:
        job = create_job(session, portal.tenant.id, "test-slow", {"seconds": seconds, "steps": steps}, None)
    return job.id


def speech_job(portal: Portal, text: str = "Hello from the portal.", priority: str = "NORMAL") -> str:
    """A speech job started over the API with the tenant's key."""
    created = portal.gql(SPEECH_MUTATION, {"input": {"text": text, "priority": priority}})["generateSpeech"]
    assert created["userErrors"] == []
    job_id: str = created["job"]["id"]
    return job_id


def _record(requests: list[str]) -> Callable[[Request], None]:
    return lambda request: requests.append(request.url)


@pytest.fixture
def portal(
    browser: Browser, api: ApiProcess, worker: object, tenant: TenantHandle, gql: GraphQLClient
) -> Iterator[Portal]:
    context = browser.new_context(base_url=api.url, viewport=LAPTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    handle = Portal(page=page, api=api, tenant=tenant, gql=gql)
    page.on("request", _record(handle.requests))
    yield handle
    context.close()
    api_host = urlsplit(api.url).netloc
    elsewhere = [url for url in handle.requests if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
    elsewhere = [url for url in elsewhere if urlsplit(url).netloc != api_host]
    assert not elsewhere, f"requests left the API's host: {elsewhere}"


@pytest.fixture
def signed_in(portal: Portal) -> Portal:
    portal.sign_in()
    return portal


def portal_client(api: ApiProcess, link: str) -> httpx.Client:
    """An HTTP client holding the session cookie a sign-in link gives (for requests a page cannot forge)."""
    client = httpx.Client(base_url=api.url, timeout=30)
    response = client.get(link.removeprefix(api.url))
    assert response.status_code == 303, response.text
    return client


def csrf_of(html: str) -> str:
    """The CSRF token a page put in its forms."""
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]
