"""Google's metadata server and IAM signBlob, faked on loopback, for GCS signing without a key file.

Default credentials come from a fake GCE metadata server (GCE_METADATA_HOST, real HTTP).
google-cloud-storage then POSTs the string to sign to https://iamcredentials.googleapis.com:
HTTPS_PROXY sends that to a local proxy that answers CONNECT for that one host itself (TLS with a
throwaway CA the client trusts through REQUESTS_CA_BUNDLE) and signs with the service account's key,
as IAM would. Nothing leaves the machine: the proxy refuses every other host and never connects
anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.gcs import ServiceAccountKey

IAM_HOST = "iamcredentials.googleapis.com"
ACCESS_TOKEN = "ya29.test-token-from-the-metadata-server"


@dataclass
class Seen:
    """What the fake Google servers were asked."""

    metadata: list[str] = field(default_factory=list)
    sign_blob: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def metadata_handler(email: str, seen: Seen) -> type[BaseHTTPRequestHandler]:
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


def tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
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


def iam_proxy_handler(
    account: ServiceAccountKey, context: ssl.SSLContext, seen: Seen, sign_delay: float = 0.0
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
            time.sleep(sign_delay)  # a round trip to Google
            payload = base64.b64decode(json.loads(body)["payload"])
            call["payload"] = payload.decode()
            signed = base64.b64encode(account.sign(payload)).decode()
            return 200, json.dumps({"keyId": "test-key", "signedBlob": signed}).encode()

    return IamProxy


@contextlib.contextmanager
def fake_google_iam(
    account: ServiceAccountKey,
    directory: Path,
    *,
    base_env: Mapping[str, str] = os.environ,
    sign_delay: float = 0.0,
) -> Iterator[tuple[dict[str, str], Seen]]:
    """The metadata server and the IAM proxy, running; base_env made into the environment a process
    needs to use them (no key file, no gcloud configuration, no other proxy), and what they were asked.

    sign_delay: seconds each signBlob takes, as a round trip to Google would."""
    seen = Seen()
    context, ca_path = tls_context(directory / "tls")
    sdk_config = directory / "gcloud"  # no gcloud application-default credentials either
    sdk_config.mkdir(parents=True, exist_ok=True)
    with (
        serve(metadata_handler(account.email, seen)) as metadata_host,
        serve(iam_proxy_handler(account, context, seen, sign_delay)) as proxy_host,
    ):
        env = {k: v for k, v in base_env.items() if "PROXY" not in k.upper()}
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        env.update(
            GCE_METADATA_HOST=metadata_host,
            GCE_METADATA_IP=metadata_host,
            HTTPS_PROXY=f"http://{proxy_host}",
            REQUESTS_CA_BUNDLE=str(ca_path),
            CLOUDSDK_CONFIG=str(sdk_config),
        )
        yield env, seen
