"""Keys, signing and verification; the reference `standardwebhooks` library is the oracle for `v1`."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceVerificationError

from callbacks import (
    FutureTimestampError,
    InvalidPayloadError,
    InvalidTimestampError,
    MalformedHeaderError,
    MalformedKeyError,
    MissingHeaderError,
    NoMatchingSignatureError,
    StaleTimestampError,
    WebhookVerificationError,
    verify,
)
from callbacks.keys import decode_public_key, decode_secret, generate_keypair, generate_secret, public_key_for
from callbacks.signing import USER_AGENT, build_headers, sign, signed_content
from callbacks.verify import MAX_SIGNATURE_HEADER_LENGTH, MAX_SIGNATURES

PAYLOAD = {"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {"jobId": "job_1", "n": "é"}}
BODY = json.dumps(PAYLOAD, ensure_ascii=False).encode()
EVENT_ID = "evt_2vX9"


def now() -> int:
    return int(time.time())


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    signature = sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("nbytes", [24, 32, 64])
def test_reference_library_verifies_our_deliveries_unchanged(nbytes: int) -> None:
    secret = generate_secret(nbytes)
    assert len(decode_secret(secret)) == nbytes
    headers = build_headers(EVENT_ID, now(), BODY, secret)
    assert Webhook(secret).verify(BODY, headers) == PAYLOAD


def test_reference_library_verifies_each_key_of_a_rotation_and_skips_v1a() -> None:
    old, new = generate_secret(), generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, [old, new, generate_keypair().private_key])
    assert [entry.split(",")[0] for entry in headers["webhook-signature"].split(" ")] == ["v1", "v1", "v1a"]
    assert Webhook(old).verify(BODY, headers) == PAYLOAD
    assert Webhook(new).verify(BODY, headers) == PAYLOAD
    with pytest.raises(ReferenceVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_we_verify_what_the_reference_library_signs() -> None:
    secret = generate_secret()
    timestamp = now()
    reference = Webhook(secret).sign(EVENT_ID, datetime.fromtimestamp(timestamp, UTC), BODY.decode())
    headers = {"Webhook-Id": EVENT_ID, "WEBHOOK-TIMESTAMP": str(timestamp), "webhook-signature": reference}
    assert verify(BODY, headers, secret) == PAYLOAD
    assert reference == sign(EVENT_ID, timestamp, BODY, secret)


def test_ed25519_round_trip_and_wrong_key() -> None:
    private, public = generate_keypair()
    assert public_key_for(private) == public
    timestamp = now()
    headers = build_headers(EVENT_ID, timestamp, BODY, private)
    version, _, encoded = headers["webhook-signature"].partition(",")
    assert version == "v1a"
    # Independent of our verify: plain ed25519 over "{id}.{timestamp}.{body}".
    decode_public_key(public).verify(base64.b64decode(encoded), signed_content(EVENT_ID, timestamp, BODY))
    assert verify(BODY, headers, public) == PAYLOAD
    with pytest.raises(NoMatchingSignatureError):
        verify(BODY, headers, generate_keypair().public_key)
    with pytest.raises(NoMatchingSignatureError):
        verify(BODY, headers, generate_secret())  # a v1a signature never satisfies a whsec_ key


def test_rotation_signs_with_every_key_and_each_verifies() -> None:
    old, new, stranger = generate_secret(), generate_secret(), generate_secret()
    private, public = generate_keypair()
    headers = build_headers(EVENT_ID, now(), BODY, [old, new, private])
    assert len(headers["webhook-signature"].split(" ")) == 3
    for key in (old, new, public, [stranger, new], [stranger, public]):
        assert verify(BODY, headers, key) == PAYLOAD
    with pytest.raises(NoMatchingSignatureError):
        verify(BODY, headers, [stranger, generate_keypair().public_key])


@pytest.mark.parametrize("scheme", ["v1", "v1a"])
@pytest.mark.parametrize("field", ["body", "webhook-id", "webhook-timestamp"])
def test_tampering_with_signed_content_is_refused(scheme: str, field: str) -> None:
    private, public = generate_keypair()
    secret = generate_secret()
    signing, verifying = (secret, secret) if scheme == "v1" else (private, public)
    headers = build_headers(EVENT_ID, now(), BODY, signing)
    body = BODY
    if field == "body":
        body = BODY.replace(b"job_1", b"job_2")
    elif field == "webhook-id":
        headers["webhook-id"] = "evt_other"
    else:
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    with pytest.raises(NoMatchingSignatureError) as caught:
        verify(body, headers, verifying)
    assert caught.value.code == "NO_MATCHING_SIGNATURE"


@pytest.mark.parametrize(
    ("offset", "tolerance", "error", "code"),
    [
        (-301, 300, StaleTimestampError, "TIMESTAMP_TOO_OLD"),
        (301, 300, FutureTimestampError, "TIMESTAMP_TOO_NEW"),
        (-61, 60, StaleTimestampError, "TIMESTAMP_TOO_OLD"),
        (61, 60, FutureTimestampError, "TIMESTAMP_TOO_NEW"),
    ],
)
def test_timestamps_outside_the_tolerance_are_refused(
    offset: int, tolerance: int, error: type[WebhookVerificationError], code: str
) -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now() + offset, BODY, secret)
    with pytest.raises(error) as caught:
        verify(BODY, headers, secret, tolerance=tolerance)
    assert caught.value.code == code


@pytest.mark.parametrize("offset", [-290, 290])
def test_timestamps_inside_the_tolerance_pass(offset: int) -> None:
    secret = generate_secret()
    assert verify(BODY, build_headers(EVENT_ID, now() + offset, BODY, secret), secret) == PAYLOAD


@pytest.mark.parametrize("value", ["abc", "1.7e9", "-5", "", " ", "\u0661\u0667" + "\u0660" * 8])
def test_a_timestamp_that_is_not_unix_seconds_is_refused(value: str) -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, secret) | {"webhook-timestamp": value}
    expected = MissingHeaderError if not value.strip() else InvalidTimestampError
    with pytest.raises(expected):
        verify(BODY, headers, secret)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_headers_are_refused(header: str) -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, secret)
    for broken in ({k: v for k, v in headers.items() if k != header}, headers | {header: ""}):
        with pytest.raises(MissingHeaderError) as caught:
            verify(BODY, broken, secret)
        assert caught.value.header == header
        assert caught.value.code == "MISSING_HEADER"
        assert header in str(caught.value)


def test_malformed_signature_entries_are_skipped() -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, secret)
    valid = headers["webhook-signature"]
    assert verify(BODY, headers | {"webhook-signature": f"v1 v1,@@@ v2,abc  {valid} "}, secret) == PAYLOAD
    with pytest.raises(NoMatchingSignatureError):
        verify(BODY, headers | {"webhook-signature": "v1 v1,@@@ v2," + valid[3:]}, secret)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "nope",
        "whsec_!!!!",
        "whsec_" + base64.b64encode(b"x" * 16).decode(),  # too short
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long
        "whpk_" + base64.b64encode(b"x" * 31).decode(),
        "PRIVATE",
        [],
    ],
)
def test_malformed_keys_are_refused_before_the_request_is_looked_at(key: str | list[str]) -> None:
    key = generate_keypair().private_key if key == "PRIVATE" else key
    with pytest.raises(MalformedKeyError) as caught:
        verify(BODY, {}, key)
    assert caught.value.code == "MALFORMED_KEY"
    assert isinstance(caught.value, ValueError)


def test_unpadded_secrets_decode_as_the_reference_library_does() -> None:
    secret = generate_secret(25)  # 25 bytes: base64 with one "=" of padding
    unpadded = secret.rstrip("=")
    assert unpadded != secret
    headers = build_headers(EVENT_ID, now(), BODY, unpadded)
    assert verify(BODY, headers, secret) == PAYLOAD
    assert Webhook(unpadded).verify(BODY, headers) == PAYLOAD


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"'])
def test_the_signed_body_must_be_a_json_object(body: bytes) -> None:
    secret = generate_secret()
    with pytest.raises(InvalidPayloadError):
        verify(body, build_headers(EVENT_ID, now(), body, secret), secret)


def test_build_headers_names_the_product_and_passes_traceparent() -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, 1700000000, BODY, secret)
    assert headers == {
        "webhook-id": EVENT_ID,
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(EVENT_ID, 1700000000, BODY, secret),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert (
        build_headers(EVENT_ID, 1700000000, BODY, secret, traceparent=traceparent)["traceparent"]
        == traceparent
    )


def test_sign_refuses_what_cannot_sign() -> None:
    with pytest.raises(MalformedKeyError, match="cannot sign"):
        sign(EVENT_ID, now(), BODY, generate_keypair().public_key)
    with pytest.raises(ValueError, match="at least one"):
        sign(EVENT_ID, now(), BODY, [])
    with pytest.raises(ValueError, match="whitespace"):
        sign("evt 1", now(), BODY, generate_secret())


@pytest.mark.parametrize("nbytes", [23, 65])
def test_secret_length_is_bounded(nbytes: int) -> None:
    with pytest.raises(ValueError, match="24-64"):
        generate_secret(nbytes)


HOSTILE_TIMESTAMPS = [
    "9" * 5_000,
    "1" * 4_301,
    "0" * 10_000 + "1",
    "\u00b9\u00b2\u00b3",
    "1700000000\x00",
    "+1700000000",
]


@pytest.mark.parametrize("value", HOSTILE_TIMESTAMPS)
def test_a_hostile_timestamp_is_refused_as_invalid(value: str) -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, secret) | {"webhook-timestamp": value}
    with pytest.raises(InvalidTimestampError) as caught:
        verify(BODY, headers, secret)
    assert caught.value.code == "INVALID_TIMESTAMP"


def test_thousands_of_signatures_are_refused_without_checking_each() -> None:
    private, public = generate_keypair()
    headers = build_headers(EVENT_ID, now(), BODY, private)
    junk = "v1a," + base64.b64encode(b"\x01" * 64).decode()
    flood = " ".join([junk] * 20_000 + [headers["webhook-signature"]])
    started = time.perf_counter()
    with pytest.raises(MalformedHeaderError) as caught:
        verify(BODY, headers | {"webhook-signature": flood}, public)
    assert time.perf_counter() - started < 0.1
    assert caught.value.header == "webhook-signature"
    assert caught.value.code == "MALFORMED_HEADER"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("webhook-id", "evt_" + "x" * 5_000),
        ("webhook-id", "evt_\u00e9t\u00e9"),
        ("webhook-id", "evt 1"),
        ("webhook-id", "evt_\ud800"),
        ("webhook-signature", "v1," + "A" * 100_000),
        ("webhook-signature", " ".join(["v1,AAAA"] * (MAX_SIGNATURES + 1))),
    ],
)
def test_an_overlong_or_odd_header_is_refused_as_malformed(header: str, value: str) -> None:
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, secret) | {header: value}
    with pytest.raises(MalformedHeaderError) as caught:
        verify(BODY, headers, secret)
    assert caught.value.header == header
    assert header in str(caught.value)


def test_the_signatures_allowed_cover_a_rotation_of_many_keys() -> None:
    keys = [generate_secret() for _ in range(MAX_SIGNATURES - 1)] + [generate_keypair().private_key]
    headers = build_headers(EVENT_ID, now(), BODY, keys)
    assert len(headers["webhook-signature"]) <= MAX_SIGNATURE_HEADER_LENGTH
    assert verify(BODY, headers, keys[0]) == PAYLOAD


def test_a_deeply_nested_signed_body_is_an_invalid_payload() -> None:
    secret = generate_secret()
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidPayloadError):
        verify(body, build_headers(EVENT_ID, now(), body, secret), secret)


def _repeated(entries: st.SearchStrategy[str], most: int) -> st.SearchStrategy[str]:
    """One entry repeated up to `most` times, joined by a separator: floods without slow generation."""
    return st.builds(
        lambda entry, count, separator: separator.join([entry] * count),
        entries,
        st.integers(0, most),
        st.sampled_from([" ", "  ", "\t", ",", "\u00a0", "\u3000"]),
    )


SIGNATURE_ENTRIES = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{},{}".format,
        st.sampled_from(["v1", "v1a", "v2", "V1", "", "v1,v1a", "\u00e9"]),
        st.one_of(
            st.text(max_size=120),
            st.binary(max_size=96).map(lambda raw: base64.b64encode(raw).decode()),
            st.binary(min_size=64, max_size=64).map(lambda raw: base64.b64encode(raw).decode()),
        ),
    ),
)
HEADER_VALUES = st.one_of(
    st.none(),  # absent
    st.text(max_size=200),
    st.text(alphabet="0123456789", min_size=1, max_size=40),
    _repeated(st.sampled_from(["9", "0", "1", "\u0669", "\u00b2"]), 20_000),
    _repeated(SIGNATURE_ENTRIES, 20_000),
)
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    hostile=st.dictionaries(st.sampled_from(HEADERS), HEADER_VALUES, min_size=1), body=st.binary(max_size=64)
)
def test_hostile_headers_raise_only_verification_errors_and_quickly(
    hostile: dict[str, str | None], body: bytes
) -> None:
    """Some headers hostile (or absent), the others genuine for a body the hostile ones cannot match."""
    private, public = generate_keypair()
    secret = generate_secret()
    headers = build_headers(EVENT_ID, now(), BODY, [secret, private]) | hostile
    present = {name: value for name, value in headers.items() if value is not None}
    started = time.perf_counter()
    with pytest.raises(WebhookVerificationError) as caught:
        verify(body, present, [public, secret])  # body is never BODY (shorter): nothing can verify
    assert time.perf_counter() - started < 0.25
    assert not isinstance(caught.value, MalformedKeyError)
