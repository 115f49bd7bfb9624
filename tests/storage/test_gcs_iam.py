"""Signing through IAM signBlob when there is no key file, as on Cloud Run, GKE or Compute Engine.

A child process runs the gcs backend with no GOOGLE_APPLICATION_CREDENTIALS. Its default credentials
come from a fake GCE metadata server (GCE_METADATA_HOST, real HTTP). google-cloud-storage then POSTs
the string to sign to https://iamcredentials.googleapis.com: HTTPS_PROXY sends that to a local proxy
that answers CONNECT for that one host itself (TLS with a throwaway CA the child trusts through
REQUESTS_CA_BUNDLE) and signs with the service account's key, as IAM would. Nothing leaves the machine:
the proxy refuses every other host and never connects anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.gcs import GcsEmulator, ServiceAccountKey, make_service_account_key, verify_v4_signed_url

IAM_HOST = "iamcredentials.googleapis.com"
ACCESS_TOKEN = "ya29.test-token-from-the-metadata-server"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Seen:
    """What the fake Google servers were asked."""

    metadata: list[str] = field(default_factory=list)
    sign_blob: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _metadata_handler(email: str, seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Metadata(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.metadata.append(self.path)
            path = self.path.split("?", 1)[0]
            accounts = "/computeMetadata/v1/instance/service-accounts/"
            body: Any = None
            if self.headers.get("Metadata-Flavor") != "Google":
                self.send_response(403)
            elif path == "/":
                body = ""
            elif path in (f"{accounts}default/", f"{accounts}{email}/"):
                body = {"email": email, "aliases": ["default"], "scopes": ["cloud-platform"]}
            elif path in (f"{accounts}default/token", f"{accounts}{email}/token"):
                body = {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
            elif path == "/computeMetadata/v1/project/project-id":
                body = "claimcheck-test"
            elif path == "/computeMetadata/v1/universe/universe-domain":
                body = "googleapis.com"
            if body is None:
                self.send_response(404)
                payload = b"not found"
            else:
                self.send_response(200)
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_header(
                    "content-type", "text/plain" if isinstance(body, str) else "application/json"
                )
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Metadata


def _tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A throwaway CA (its PEM file returned) and a server context for IAM_HOST signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "claimcheck test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, IAM_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IAM_HOST)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "iam.pem", directory / "iam.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, ca_path


def _iam_proxy_handler(
    account: ServiceAccountKey, context: ssl.SSLContext, seen: Seen
) -> type[BaseHTTPRequestHandler]:
    class IamProxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_CONNECT(self) -> None:
            if self.path != f"{IAM_HOST}:443":
                seen.refused.append(self.path)
                self.send_error(403, "this test proxy only plays IAM")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.close_connection = True
            with context.wrap_socket(self.connection, server_side=True) as tls:
                reader = tls.makefile("rb")
                method, target, _ = reader.readline().decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, value = line.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                status, answer = self._sign_blob(method, target, headers, body)
                tls.sendall(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(answer)}\r\nconnection: close\r\n\r\n".encode()
                    + answer
                )

        def _sign_blob(
            self, method: str, target: str, headers: dict[str, str], body: bytes
        ) -> tuple[int, bytes]:
            call = {"method": method, "target": target, "authorization": headers.get("authorization")}
            seen.sign_blob.append(call)
            expected = f"/v1/projects/-/serviceAccounts/{account.email}:signBlob"
            if method != "POST" or target.split("?")[0] != expected:
                return 404, b'{"error": {"code": 404}}'
            if headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
                return 401, b'{"error": {"code": 401}}'
            payload = base64.b64decode(json.loads(body)["payload"])
            call["payload"] = payload.decode()
            signed = base64.b64encode(account.sign(payload)).decode()
            return 200, json.dumps({"keyId": "test-key", "signedBlob": signed}).encode()

    return IamProxy


CHILD = """
import json, sys
from service.storage.gcs import GcsStorage

storage = GcsStorage(sys.argv[1], emulator_host=sys.argv[2])
storage.put_stream("tenants/t/jobs/j/a.wav", iter([b"RIFF", b"....WAVE"]), content_type="audio/wav",
                   filename="a.wav")
url = storage.signed_url("tenants/t/jobs/j/a.wav", filename="a.wav", content_type="audio/wav",
                         expires_in=3600)
print(json.dumps({"url": url, "uses_key": storage.signer().uses_key}))
"""


def test_without_a_key_file_urls_are_signed_by_iam_sign_blob(
    gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    account = make_service_account_key(tmp_path / "iam", "runtime")  # IAM holds it; the child never sees it
    seen = Seen()
    context, ca_path = _tls_context(tmp_path / "tls")
    bucket = "claimcheck-iam"
    gcs_emulator.create_bucket(bucket)
    sdk_config = tmp_path / "gcloud"  # no gcloud application-default credentials either
    sdk_config.mkdir()

    with (
        _serve(_metadata_handler(account.email, seen)) as metadata_host,
        _serve(_iam_proxy_handler(account, context, seen)) as proxy_host,
    ):
        env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        env.update(
            GCE_METADATA_HOST=metadata_host,
            GCE_METADATA_IP=metadata_host,
            HTTPS_PROXY=f"http://{proxy_host}",
            REQUESTS_CA_BUNDLE=str(ca_path),
            CLOUDSDK_CONFIG=str(sdk_config),
            PYTHONPATH=str(REPO_ROOT),
        )
        child = subprocess.run(
            [sys.executable, "-c", CHILD, bucket, gcs_emulator.url],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert child.returncode == 0, child.stderr.decode()[-4000:]
    result = json.loads(child.stdout.decode().strip().splitlines()[-1])

    assert result["uses_key"] is False
    assert any("/service-accounts/" in path and "/token" in path for path in seen.metadata)
    assert seen.refused == []
    assert len(seen.sign_blob) == 1
    assert seen.sign_blob[0]["authorization"] == f"Bearer {ACCESS_TOKEN}"

    url = result["url"]
    claims = verify_v4_signed_url(url, account.public_key)
    assert claims.email == account.email
    assert claims.expires_in == 3600
    assert seen.sign_blob[0]["payload"].startswith(f"GOOG4-RSA-SHA256\n{claims.params['X-Goog-Date']}\n")
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"RIFF....WAVE"


def test_with_an_emulator_and_no_credentials_at_all_signing_refuses_clearly(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.storage.gcs import GcsStorage

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    gcs_emulator.create_bucket("claimcheck-nocreds")
    storage = GcsStorage("claimcheck-nocreds", emulator_host=gcs_emulator.url)
    storage.put_stream("k/a.txt", iter([b"x"]), content_type="text/plain", filename="a.txt")  # uploads work
    with pytest.raises(RuntimeError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        storage.signed_url("k/a.txt", filename="a.txt", content_type="text/plain", expires_in=60)
