"""SSRF guard: which URLs and addresses are refused or allowed, and a pinned request over real TLS."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.webhooks.ssrf import (
    Target,
    UnsafeURLError,
    check_url,
    pinned_url,
    refusal_reason,
    resolve_public,
    resolve_within,
    resolve_within_async,
)
from service.webhooks.transport import Pool, TransportError, request_bytes

REFUSED_URLS = [
    ("http://example.com/hook", "URL_SCHEME"),
    ("ftp://example.com/hook", "URL_SCHEME"),
    ("example.com/hook", "URL_SCHEME"),
    ("https://user:pw@example.com/hook", "URL_CREDENTIALS"),
    ("https://token@example.com/hook", "URL_CREDENTIALS"),
    ("https://example.com\\@127.0.0.1/", "URL_CREDENTIALS"),
    ("https:///hook", "URL_HOST"),
    ("https://a..b/", "URL_HOST"),
    ("https://exa_mple!.com/", "URL_HOST"),
    ("https://%31%32%37.0.0.1/", "URL_HOST"),
    ("https://256.0.0.1/", "URL_HOST"),
    ("https://1.2.3.4.5/", "URL_HOST"),
    ("https://09.0.0.1/", "URL_HOST"),
    ("https://[::1/", "URL_INVALID"),
    ("https://example.com:99999/", "URL_INVALID"),
    ("https://example.com:0/", "URL_INVALID"),
    ("https://exa mple.com/", "URL_INVALID"),
    ("https://example.com/\n", "URL_INVALID"),
    ("https://example.com/" + "a" * 2048, "URL_INVALID"),
    # Every spelling of a private address.
    ("https://127.0.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://2130706433/", "URL_PRIVATE_ADDRESS"),
    ("https://0177.0.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://0x7f000001/", "URL_PRIVATE_ADDRESS"),
    ("https://0x7f.0.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://127.1/", "URL_PRIVATE_ADDRESS"),
    ("https://127.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://127.0.0.1./", "URL_PRIVATE_ADDRESS"),
    ("https://0/", "URL_PRIVATE_ADDRESS"),
    ("https://10.1.2.3/", "URL_PRIVATE_ADDRESS"),
    ("https://172.16.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://192.168.1.1:8443/", "URL_PRIVATE_ADDRESS"),
    ("https://169.254.169.254/latest/meta-data/", "URL_PRIVATE_ADDRESS"),
    ("https://0xa9fea9fe/", "URL_PRIVATE_ADDRESS"),
    ("https://100.64.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://224.0.0.251/", "URL_PRIVATE_ADDRESS"),
    ("https://240.0.0.1/", "URL_PRIVATE_ADDRESS"),
    ("https://255.255.255.255/", "URL_PRIVATE_ADDRESS"),
    ("https://0.0.0.0/", "URL_PRIVATE_ADDRESS"),
    ("https://[::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[::]/", "URL_PRIVATE_ADDRESS"),
    ("https://[::ffff:127.0.0.1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[::ffff:a9fe:a9fe]/", "URL_PRIVATE_ADDRESS"),
    ("https://[::127.0.0.1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[fc00::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[fd12:3456::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[fe80::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[fec0::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[ff02::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[64:ff9b::7f00:1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[64:ff9b::a9fe:a9fe]/", "URL_PRIVATE_ADDRESS"),
    ("https://[64:ff9b:1::808:808]/", "URL_PRIVATE_ADDRESS"),
    ("https://[2002:c0a8:101::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[2002:7f00:1::]/", "URL_PRIVATE_ADDRESS"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "URL_PRIVATE_ADDRESS"),
    ("https://[2001:db8::1]/", "URL_PRIVATE_ADDRESS"),
    ("https://[fe80::1%25eth0]/", "URL_HOST"),
]

ALLOWED_URLS = [
    ("https://example.com/hook", Target("https", "example.com", 443, None)),
    ("https://Hooks.Example.COM.:8443/a?b=c#d", Target("https", "hooks.example.com", 8443, None)),
    ("https://bücher.example/hook", Target("https", "xn--bcher-kva.example", 443, None)),
    ("https://localhost/", Target("https", "localhost", 443, None)),  # a name: refused when resolved
    ("https://8.8.8.8/hook", Target("https", "8.8.8.8", 443, ip_address("8.8.8.8"))),
    ("https://134744072/", Target("https", "8.8.8.8", 443, ip_address("8.8.8.8"))),
    (
        "https://[2606:4700:4700::1111]/",
        Target("https", "2606:4700:4700::1111", 443, ip_address("2606:4700:4700::1111")),
    ),
    ("https://[64:ff9b::808:808]/", Target("https", "64:ff9b::808:808", 443, ip_address("64:ff9b::808:808"))),
    ("https://[2002:808:808::1]/", Target("https", "2002:808:808::1", 443, ip_address("2002:808:808::1"))),
]


@pytest.mark.parametrize(("url", "code"), REFUSED_URLS)
def test_refused_urls(url: str, code: str) -> None:
    with pytest.raises(UnsafeURLError) as caught:
        check_url(url)
    assert caught.value.code == code, caught.value.message


@pytest.mark.parametrize(("url", "target"), ALLOWED_URLS)
def test_allowed_urls(url: str, target: Target) -> None:
    assert check_url(url) == target


def test_http_only_when_allowed_and_allowed_cidrs_let_addresses_through() -> None:
    assert check_url("http://example.com/", allow_http=True).port == 80
    with pytest.raises(UnsafeURLError) as caught:
        check_url("gopher://example.com/", allow_http=True)
    assert caught.value.code == "URL_SCHEME"
    assert check_url("https://127.0.0.1:8443/", allowed_cidrs=["127.0.0.0/8"]).ip == ip_address("127.0.0.1")
    assert check_url("https://[::ffff:127.0.0.1]/", allowed_cidrs=["127.0.0.1/32"]).port == 443
    assert check_url("https://10.1.2.3/", allowed_cidrs=["10.0.0.0/8"]).host == "10.1.2.3"
    with pytest.raises(UnsafeURLError):
        check_url("https://10.1.2.3/", allowed_cidrs=["10.9.0.0/16"])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.100.100.200", "carrier-grade NAT"),
        ("239.1.1.1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::c0a8:1", "tunnel to 192.168.0.1, a private address"),
        ("2002:a9fe:a9fe::", "tunnel to 169.254.169.254, a link-local address"),
        ("2001::1", "Teredo"),
    ],
)
def test_refusal_reasons(address: str, reason: str | None) -> None:
    found = refusal_reason(ip_address(address))
    assert found == reason if reason is None else reason in (found or "")


def test_resolve_refuses_names_of_private_addresses() -> None:
    with pytest.raises(UnsafeURLError) as caught:
        resolve_public("localhost", 443)
    assert caught.value.code == "URL_PRIVATE_ADDRESS"
    assert caught.value.message == (
        "localhost resolves to a non-public address; webhooks go to public addresses only"
    )
    for literal in ("127.0.0.1", "2130706433", "0177.1", "::1", "::ffff:127.0.0.1"):
        with pytest.raises(UnsafeURLError) as caught:
            resolve_public(literal, 443)
        assert caught.value.code == "URL_PRIVATE_ADDRESS"


def test_resolve_allows_private_addresses_inside_allowed_cidrs() -> None:
    assert ip_address("127.0.0.1") in resolve_public("localhost", 443, ["127.0.0.0/8", "::1/128"])
    assert resolve_public("127.0.0.1", 443, ["127.0.0.1/32"]) == [ip_address("127.0.0.1")]
    assert resolve_public("0x7f.1", 443, ["127.0.0.0/8"]) == [ip_address("127.0.0.1")]


def test_resolve_refuses_if_any_address_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [("8.8.8.8", 0), ("10.0.0.7", 0)]

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "mixed.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address, _ in answers]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(UnsafeURLError) as caught:
        resolve_public("mixed.example", 443)
    assert "mixed.example resolves to a non-public address" in caught.value.message
    assert "10.0.0.7" not in caught.value.message  # which internal address is never told
    answers.pop()
    assert resolve_public("Mixed.Example.", 443) == [ip_address("8.8.8.8")]


def test_a_lookup_slower_than_the_timeout_is_refused_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(2)  # a DNS server that does not answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    started = time.monotonic()
    with pytest.raises(UnsafeURLError) as caught:
        resolve_within("slow.example", 443, timeout=0.2)
    assert time.monotonic() - started < 1
    assert caught.value.code == "URL_UNRESOLVABLE"
    assert caught.value.message == "slow.example did not resolve within 0.2 s"

    async def resolve_on_the_loop() -> None:
        with pytest.raises(UnsafeURLError) as caught:
            await resolve_within_async("slow.example", 443, timeout=0.2)
        assert caught.value.code == "URL_UNRESOLVABLE"

    started = time.monotonic()
    asyncio.run(resolve_on_the_loop())
    assert time.monotonic() - started < 1


def test_a_lookup_within_the_timeout_answers_as_resolve_public_does() -> None:
    loopback = ["127.0.0.0/8", "::1/128"]
    assert ip_address("127.0.0.1") in resolve_within("localhost", 443, loopback, timeout=5)
    with pytest.raises(UnsafeURLError) as caught:
        asyncio.run(resolve_within_async("localhost", 443, timeout=5))
    assert caught.value.code == "URL_PRIVATE_ADDRESS"


def test_resolve_reports_names_that_do_not_resolve() -> None:
    with pytest.raises(UnsafeURLError) as caught:
        resolve_public("no-such-host.invalid", 443)
    assert caught.value.code == "URL_UNRESOLVABLE"


@pytest.mark.parametrize(
    ("url", "ip", "expected"),
    [
        (
            "https://hooks.example.com/a?b=1",
            "8.8.8.8",
            ("https://8.8.8.8/a?b=1", "hooks.example.com", "hooks.example.com"),
        ),
        (
            "https://Hooks.Example.com:8443/a",
            ip_address("2606:4700::1"),
            ("https://[2606:4700::1]:8443/a", "hooks.example.com:8443", "hooks.example.com"),
        ),
        (
            "https://bücher.example/",
            "8.8.8.8",
            ("https://8.8.8.8/", "xn--bcher-kva.example", "xn--bcher-kva.example"),
        ),
        ("https://8.8.8.8:444/x", "8.8.8.8", ("https://8.8.8.8:444/x", "8.8.8.8:444", None)),
        ("https://[2606:4700::1]/x", "2606:4700::1", ("https://[2606:4700::1]/x", "[2606:4700::1]", None)),
    ],
)
def test_pinned_url(url: str, ip: str, expected: tuple[str, str, str | None]) -> None:
    assert pinned_url(url, ip) == expected


HOSTNAME = "hooks.example.test"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, list[dict[str, str | None]]]]:
    """HTTPS on 127.0.0.1 with a certificate for HOSTNAME only; records each request's SNI and Host."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    seen: list[dict[str, str | None]] = []
    sni: list[str | None] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server_context.sni_callback = lambda sock, server_name, context: sni.append(server_name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append({"host": self.headers["host"], "sni": sni[-1]})
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    yield server.server_address[1], client_context, seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_pinned_request_reaches_the_checked_address_with_tls_for_the_hostname(
    tls_server: tuple[int, ssl.SSLContext, list[dict[str, str | None]]],
) -> None:
    port, context, seen = tls_server
    url = f"https://{HOSTNAME}:{port}/hook"
    target = check_url(url, allowed_cidrs=["127.0.0.0/8"])
    # The name is never looked up again after the check: the request goes to the address checked.
    pinned = pinned_url(url, resolve_public("127.0.0.1", target.port, ["127.0.0.0/8"])[0])
    assert pinned.url == f"https://127.0.0.1:{port}/hook"
    with httpx.Client(verify=context, trust_env=False) as client:
        response = client.post(
            pinned.url,
            content=b"{}",
            headers={"host": pinned.host_header},
            extensions={"sni_hostname": pinned.sni_hostname},
        )
        assert response.status_code == 204
        assert seen == [{"host": f"{HOSTNAME}:{port}", "sni": HOSTNAME}]
        # Without the SNI hostname the certificate is checked against the address, and fails.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.post(pinned.url, content=b"{}", headers={"host": pinned.host_header})


def test_the_deliverers_client_connects_to_the_checked_address_with_tls_for_the_hostname(
    tls_server: tuple[int, ssl.SSLContext, list[dict[str, str | None]]],
) -> None:
    port, context, seen = tls_server
    pinned = pinned_url(f"https://{HOSTNAME}:{port}/hook", "127.0.0.1")
    request = request_bytes("/hook", [("host", pinned.host_header)], b"{}")

    async def post(server_hostname: str | None) -> int:
        pool = Pool("https", "127.0.0.1", port, server_hostname, context)
        try:
            return (await pool.send(request)).status_code
        finally:
            pool.close()

    assert asyncio.run(post(pinned.sni_hostname)) == 204
    assert seen == [{"host": f"{HOSTNAME}:{port}", "sni": HOSTNAME}]
    # Without the server name the certificate is checked against the address, and fails.
    with pytest.raises(TransportError, match=r"ConnectError: .*CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(post(None))

    # The default context trusts only the usual roots, not this self-signed certificate.
    async def default_roots() -> None:
        await Pool("https", "127.0.0.1", port, HOSTNAME).send(request)

    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(default_roots())
