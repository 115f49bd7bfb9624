"""Hostile requests, checked in: bodies, headers, paths and WebSocket messages for the public routes.

tests/test_malformed_requests.py sends every case to the real API process and requires an answer
below 500 (the exact status and error code where the contract names one) and no ERROR line or
traceback in the API's log. Add a case here for each malformed request found in review or in the
wild. Placeholders: ``{key}`` becomes a valid API key, ``{token}`` a valid download token,
``{session}`` a signed-in portal session's cookie value and ``{csrf}`` that session's CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass

VIEWER = b'{"query":"{ viewer { name } }"}'
AUTH = (b"authorization", b"Bearer {key}")
JSON = (b"content-type", b"application/json")
MAX_REQUEST_BYTES = 1_000_000  # the default the API runs with in the tests
MAX_QUERY_BYTES = 100_000


@dataclass(frozen=True)
class RawRequest:
    """One HTTP/1.1 request, sent byte for byte (Content-Length added unless a framing header is given)."""

    name: str
    body: bytes = b""
    method: bytes = b"POST"
    target: bytes = b"/graphql"
    headers: tuple[tuple[bytes, bytes], ...] = (AUTH, JSON)
    status: int | None = None
    """The status the contract promises, when it names one (else: anything below 500)."""
    code: str | None = None
    """The `extensions.code` of the first error the contract promises."""


def _with_variables(variables: bytes) -> bytes:
    return b'{"query":"{ viewer { name } }","variables":{"v":' + variables + b"}}"


def _get(name: str, query: bytes, status: int | None = None, code: str | None = None) -> RawRequest:
    return RawRequest(
        name, method=b"GET", target=b"/graphql?" + query, headers=(AUTH,), status=status, code=code
    )


def _viewer_with(name: str, *headers: tuple[bytes, bytes], status: int | None = None) -> RawRequest:
    return RawRequest(name, body=VIEWER, headers=headers, status=status)


DEEP = b"[" * 5000 + b"]" * 5000
DEEP_SELECTIONS = (
    b"{ a " * 600 + b"}" * 600
)  # 1,800 tokens: under MAX_TOKENS, too deep for the parser's stack

GRAPHQL_BODIES = [
    # the four that answered 500 with a traceback (issue: malformed bodies)
    RawRequest("a null body", b"null", status=400, code="NOT_AN_OBJECT"),
    RawRequest("a JSON string body", b'"hi"', status=400, code="NOT_AN_OBJECT"),
    RawRequest("5,000 nested arrays in variables", _with_variables(DEEP), status=400, code="JSON_TOO_DEEP"),
    RawRequest("bytes that are not UTF-8", b'{"query": "\xff"}', status=400, code="INVALID_ENCODING"),
    # not an object
    RawRequest("a number body", b"5", status=400, code="NOT_AN_OBJECT"),
    RawRequest("a boolean body", b"true", status=400, code="NOT_AN_OBJECT"),
    RawRequest("an empty array", b"[]", status=400, code="NOT_AN_OBJECT"),
    RawRequest("a batch", b"[" + VIEWER + b"," + VIEWER + b"]", status=400, code="NOT_AN_OBJECT"),
    # nesting
    RawRequest(
        "5,000 nested objects", b'{"a":' * 5000 + b"1" + b"}" * 5000, status=400, code="JSON_TOO_DEEP"
    ),
    RawRequest("5,000 unclosed arrays", b"[" * 5000, status=400, code="JSON_TOO_DEEP"),
    RawRequest("alternating arrays and objects", b'[{"a":' * 3000, status=400, code="JSON_TOO_DEEP"),
    RawRequest("deep but inside a string", b'{"query":"' + b"[" * 5000 + b'"}', status=200),
    RawRequest("escaped quotes before brackets", b'{"query":"\\"' + b"[" * 100 + b'"}', status=200),
    RawRequest("a wide flat array", _with_variables(b"[" + b"1," * 100_000 + b"1]"), status=200),
    # not JSON
    RawRequest("an empty body", b"", status=400, code="INVALID_JSON"),
    RawRequest("only whitespace", b" \n\t ", status=400, code="INVALID_JSON"),
    RawRequest("a truncated object", b'{"query":', status=400, code="INVALID_JSON"),
    RawRequest("trailing garbage", VIEWER + b" x", status=400, code="INVALID_JSON"),
    RawRequest("NaN", _with_variables(b"NaN"), status=400, code="INVALID_JSON"),
    RawRequest("Infinity", _with_variables(b"-Infinity"), status=400, code="INVALID_JSON"),
    RawRequest(
        "a raw control character in a string", b'{"query":"{ viewer\x01 }"}', status=400, code="INVALID_JSON"
    ),
    RawRequest("single quotes", b"{'query':'{ viewer { name } }'}", status=400, code="INVALID_JSON"),
    # numbers
    RawRequest("a 5,000-digit integer", _with_variables(b"1" * 5000), status=400, code="NUMBER_TOO_LARGE"),
    RawRequest(
        "a negative 5,000-digit integer",
        _with_variables(b"-" + b"9" * 5000),
        status=400,
        code="NUMBER_TOO_LARGE",
    ),
    RawRequest("a float past double range", _with_variables(b"1e999999"), status=200),
    RawRequest("a 5,000-digit fraction", _with_variables(b"0." + b"1" * 5000), status=200),
    RawRequest(
        "a huge Int argument", b'{"query":"{ jobs(first: ' + b"9" * 5000 + b') { edges { cursor } } }"}'
    ),
    # encodings
    RawRequest(
        "a lone high surrogate escape", _with_variables(b'"\\ud800"'), status=400, code="INVALID_ENCODING"
    ),
    RawRequest(
        "a lone low surrogate escape", _with_variables(b'"a\\udfffb"'), status=400, code="INVALID_ENCODING"
    ),
    RawRequest(
        "a lone surrogate in a key",
        b'{"query":"{ viewer { name } }","\\udc00":1}',
        status=400,
        code="INVALID_ENCODING",
    ),
    RawRequest("a surrogate pair escape", _with_variables(b'"\\ud83d\\ude00"'), status=200),
    RawRequest("an escaped backslash before u-d800", _with_variables(b'"\\\\ud800"'), status=200),
    RawRequest("a UTF-8 byte order mark", b"\xef\xbb\xbf" + VIEWER, status=200),
    RawRequest(
        "UTF-16 with a byte order mark", VIEWER.decode().encode("utf-16"), status=400, code="INVALID_ENCODING"
    ),
    RawRequest("UTF-32", VIEWER.decode().encode("utf-32"), status=400, code="INVALID_ENCODING"),
    RawRequest("an overlong UTF-8 slash", b'{"query":"\xc0\xaf"}', status=400, code="INVALID_ENCODING"),
    RawRequest(
        "a surrogate encoded in UTF-8", b'{"query":"\xed\xa0\x80"}', status=400, code="INVALID_ENCODING"
    ),
    RawRequest("a NUL escape in the query", b'{"query":"{ viewer\\u0000 { name } }"}', status=200),
    RawRequest(
        "Latin-1 bytes",
        '{"query":"{ viewer { näme } }"}'.encode("latin-1"),
        status=400,
        code="INVALID_ENCODING",
    ),
    # the GraphQL request's fields
    RawRequest("a number as query", b'{"query": 5}', status=400, code="BAD_REQUEST"),
    RawRequest("a null query", b'{"query": null}', status=400, code="BAD_REQUEST"),
    RawRequest("no query", b"{}", status=400, code="BAD_REQUEST"),
    RawRequest("an empty query", b'{"query": ""}', status=400, code="BAD_REQUEST"),
    RawRequest(
        "variables as a string",
        b'{"query":"{ viewer { name } }","variables":"x"}',
        status=400,
        code="BAD_REQUEST",
    ),
    RawRequest(
        "extensions as an array",
        b'{"query":"{ viewer { name } }","extensions":[]}',
        status=400,
        code="BAD_REQUEST",
    ),
    RawRequest(
        "operationName as an object",
        b'{"query":"{ viewer { name } }","operationName":{}}',
        status=400,
        code="BAD_REQUEST",
    ),
    RawRequest(
        "an unknown operation name",
        b'{"query":"{ viewer { name } }","operationName":"Nope"}',
        status=400,
        code="BAD_REQUEST",
    ),
    RawRequest(
        "two operations, none named", b'{"query":"query A { viewer { name } } query B { viewer { id } }"}'
    ),
    RawRequest(
        "duplicate keys", b'{"query":"{ viewer { nope } }","query":"{ viewer { name } }"}', status=200
    ),
    RawRequest("a 100 kB key", b'{"' + b"k" * 100_000 + b'":1,"query":"{ viewer { name } }"}', status=200),
    RawRequest("a syntax error", b'{"query":"{ viewer { "}', status=200),
    RawRequest(
        "a subscription over POST",
        b'{"query":"subscription { jobUpdates(id: \\"x\\") { id } }"}',
        status=400,
        code="BAD_REQUEST",
    ),
    RawRequest("3,000 tokens", b'{"query":"{ ' + b"__typename " * 3000 + b'}"}', status=200),
    RawRequest("selections nested 600 deep", b'{"query":"' + DEEP_SELECTIONS + b'"}', status=200),
    RawRequest(
        "a query over MAX_QUERY_BYTES",
        b'{"query":"{ viewer { name } }' + b" " * MAX_QUERY_BYTES + b'"}',
        status=413,
        code="QUERY_TOO_LARGE",
    ),
    RawRequest(
        "a query of multi-byte characters over MAX_QUERY_BYTES",
        b'{"query":"#' + "é".encode() * (MAX_QUERY_BYTES // 2) + b'\\n{ viewer { name } }"}',
        status=413,
        code="QUERY_TOO_LARGE",
    ),
    RawRequest(
        "a body over MAX_REQUEST_BYTES",
        b'{"query":"' + b" " * MAX_REQUEST_BYTES + b'"}',
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
]

GRAPHQL_HEADERS = [
    _viewer_with("no API key", JSON, status=401),
    _viewer_with("a bare Bearer", (b"authorization", b"Bearer"), JSON, status=401),
    _viewer_with("a 10 kB key", (b"authorization", b"Bearer ck_" + b"a" * 10_000), JSON, status=401),
    _viewer_with("a key of non-ASCII bytes", (b"authorization", b"Bearer \xff\xfe\xfd"), JSON, status=401),
    _viewer_with(
        "a well-formed unknown key", (b"authorization", b"Bearer ck_00000000_" + b"x" * 40), JSON, status=401
    ),
    _viewer_with("Basic credentials", (b"authorization", b"Basic dXNlcjpwYXNz"), JSON, status=401),
    _viewer_with("two authorization headers", AUTH, (b"authorization", b"Bearer junk"), JSON),
    _viewer_with("no content type", AUTH, status=400),
    _viewer_with("text/plain", AUTH, (b"content-type", b"text/plain"), status=400),
    _viewer_with(
        "a form content type", AUTH, (b"content-type", b"application/x-www-form-urlencoded"), status=400
    ),
    _viewer_with("multipart", AUTH, (b"content-type", b"multipart/form-data; boundary=x"), status=400),
    _viewer_with("application/graphql", AUTH, (b"content-type", b"application/graphql"), status=400),
    _viewer_with("a UTF-16 charset", AUTH, (b"content-type", b"application/json; charset=utf-16")),
    _viewer_with("a 10 kB content type", AUTH, (b"content-type", b"application/json;" + b"x" * 10_000)),
    _viewer_with("event-stream accepted", AUTH, JSON, (b"accept", b"text/event-stream")),
    _viewer_with("multipart/mixed accepted", AUTH, JSON, (b"accept", b"multipart/mixed")),
    _viewer_with("Expect: 100-continue", AUTH, JSON, (b"expect", b"100-continue")),
    _viewer_with("a gzip content encoding that is not gzip", AUTH, JSON, (b"content-encoding", b"gzip")),
    _viewer_with("a non-numeric Content-Length", AUTH, JSON, (b"content-length", b"abc")),
    _viewer_with("a negative Content-Length", AUTH, JSON, (b"content-length", b"-1")),
    _viewer_with("a short Content-Length", AUTH, JSON, (b"content-length", b"5")),
    _viewer_with("a huge Content-Length", AUTH, JSON, (b"content-length", b"9" * 30)),
    RawRequest(
        "chunked with a bad chunk size",
        b"zz\r\n" + VIEWER + b"\r\n0\r\n\r\n",
        headers=(AUTH, JSON, (b"transfer-encoding", b"chunked")),
    ),
    RawRequest(
        "chunked and Content-Length",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(VIEWER), VIEWER),
        headers=(AUTH, JSON, (b"transfer-encoding", b"chunked"), (b"content-length", b"3")),
    ),
    _viewer_with("an unknown transfer encoding", AUTH, JSON, (b"transfer-encoding", b"gzip")),
    _viewer_with("a 64 kB header", AUTH, JSON, (b"x-junk", b"j" * 65_536)),
    _viewer_with("a header name with a space", AUTH, JSON, (b"bad header", b"x")),
    _viewer_with("a NUL in a header value", AUTH, JSON, (b"x-junk", b"a\x00b")),
]

GRAPHQL_GETS = [
    _get("a query", b"query=%7B%20viewer%20%7B%20name%20%7D%20%7D", status=200),
    _get(
        "a mutation over GET",
        b"query=mutation%7BrecoverWebhooks%7Bcount%7D%7D",
        status=400,
        code="BAD_REQUEST",
    ),
    _get("null variables", b"query=%7Bviewer%7Bname%7D%7D&variables=null", status=400, code="NOT_AN_OBJECT"),
    _get(
        "a JSON string as variables",
        b"query=%7Bviewer%7Bname%7D%7D&variables=%22hi%22",
        status=400,
        code="NOT_AN_OBJECT",
    ),
    _get(
        "5,000 nested arrays as variables",
        b"query=%7Bviewer%7Bname%7D%7D&variables=" + b"%5B" * 5000,
        status=400,
        code="JSON_TOO_DEEP",
    ),
    _get(
        "a 5,000-digit number in variables",
        b"query=%7Bviewer%7Bname%7D%7D&variables=%7B%22v%22:" + b"1" * 5000 + b"%7D",
        status=400,
        code="NUMBER_TOO_LARGE",
    ),
    _get(
        "variables that are not JSON",
        b"query=%7Bviewer%7Bname%7D%7D&variables=%7B",
        status=400,
        code="INVALID_JSON",
    ),
    _get(
        "percent-encoded bytes that are not UTF-8",
        b"query=%7Bviewer%7Bname%7D%7D&variables=%ff%fe",
        status=400,
        code="INVALID_JSON",
    ),
    _get(
        "a batch as extensions",
        b"query=%7Bviewer%7Bname%7D%7D&extensions=%5B%5D",
        status=400,
        code="NOT_AN_OBJECT",
    ),
    _get("a query that is not UTF-8", b"query=%ff%fe", status=200),
    _get(
        "a subscription over GET",
        b"query=subscription%7BjobUpdates(id:%22x%22)%7Bid%7D%7D",
        status=400,
        code="BAD_REQUEST",
    ),
    _get("an empty query", b"query=", status=400),
    _get("a bare query key", b"query"),
    _get("a query twice", b"query=%7Bviewer%7Bname%7D%7D&query=%7Bviewer%7Bid%7D%7D", status=200),
    _get("a broken percent escape", b"query=%7Bviewer%7Bname%7D%7D&variables=%"),
    _get("a 100 kB query string", b"query=%7Bviewer%7Bname%7D%7D" + b"%20" * MAX_QUERY_BYTES),
]

PATHS = [
    RawRequest("PUT", VIEWER, method=b"PUT", status=405),
    RawRequest("DELETE", method=b"DELETE", headers=(AUTH,), status=405),
    RawRequest("PATCH", VIEWER, method=b"PATCH", status=405),
    RawRequest("OPTIONS", method=b"OPTIONS", headers=(AUTH,)),
    RawRequest("HEAD", method=b"HEAD", headers=(AUTH,)),
    RawRequest("an unknown method", method=b"BREW", headers=(AUTH,)),
    RawRequest("a trailing slash", VIEWER, target=b"/graphql/"),
    RawRequest("a NUL in the path", VIEWER, target=b"/graphql%00", status=404),
    RawRequest("a double slash", VIEWER, target=b"//graphql"),
    RawRequest("dot segments", VIEWER, target=b"/graphql/../healthz"),
    RawRequest("encoded dot segments", VIEWER, target=b"/%2e%2e/%2e%2e/etc/passwd", status=404),
    RawRequest("raw bytes in the path", VIEWER, target=b"/graphql\xff\xfe"),
    RawRequest("an absolute-form target", VIEWER, target=b"http://127.0.0.1/graphql"),
    RawRequest("an asterisk target", method=b"OPTIONS", target=b"*", headers=()),
    RawRequest("a 10 kB path", target=b"/" + b"a" * 10_000, method=b"GET", headers=(), status=404),
]

DOWNLOADS = [
    RawRequest("no token", method=b"GET", target=b"/downloads/", headers=(), status=404),
    RawRequest("a junk token", method=b"GET", target=b"/downloads/x", headers=(), status=403),
    RawRequest("a 5 kB token", method=b"GET", target=b"/downloads/" + b"a" * 5000, headers=(), status=403),
    RawRequest("a token of dots", method=b"GET", target=b"/downloads/a.b.c", headers=(), status=403),
    RawRequest("an escaping token", method=b"GET", target=b"/downloads/..%2F..%2Fetc%2Fpasswd", headers=()),
    RawRequest(
        "a token that is not UTF-8", method=b"GET", target=b"/downloads/%ff%fe", headers=(), status=403
    ),
    RawRequest("a token and more path", method=b"GET", target=b"/downloads/x/y", headers=(), status=404),
    RawRequest("POST to a download", VIEWER, target=b"/downloads/x", status=405),
    RawRequest("a tampered token", method=b"GET", target=b"/downloads/{token}x", headers=(), status=403),
    RawRequest("a valid token", method=b"GET", target=b"/downloads/{token}", headers=(), status=200),
    *(
        RawRequest(
            f"Range: {name}", method=b"GET", target=b"/downloads/{token}", headers=((b"range", value),)
        )
        for name, value in [
            ("2,000 ranges", b"bytes=" + b"0-0," * 2000 + b"0-0"),
            ("reversed", b"bytes=5-1"),
            ("empty suffix", b"bytes=-0"),
            ("past the end", b"bytes=99999999-"),
            ("not a number", b"bytes=abc"),
            ("another unit", b"items=0-1"),
            ("overlapping", b"bytes=0-1,0-1"),
            ("a 10,000-digit offset", b"bytes=" + b"9" * 10_000 + b"-"),
            ("non-ASCII", b"bytes=\xff-\xfe"),
        ]
    ),
    RawRequest(
        "a junk If-Range",
        method=b"GET",
        target=b"/downloads/{token}",
        headers=((b"range", b"bytes=0-1"), (b"if-range", b"\xff" * 100)),
    ),
]


@dataclass(frozen=True)
class WsCase:
    """Messages sent on a graphql-transport-ws socket (after an acknowledged connection_init unless
    `init` is False), and how the server must answer: close with `close`, or send a message of
    `reply` type (with `code` in its first error)."""

    name: str
    messages: tuple[str | bytes, ...]
    init: bool = True
    close: int | None = 4400
    reply: str | None = None
    code: str | None = None
    subprotocol: str = "graphql-transport-ws"


def _subscribe(payload: str, id: str = '"1"') -> str:
    return '{"type":"subscribe","id":' + id + ',"payload":' + payload + "}"


_VIEWER_OPERATION = '{"query":"{ viewer { name } }"}'
_TYPENAME = '{"query":"{ __typename }"}'  # answered without waiting for anything

WS_MESSAGES = [
    WsCase("null", ("null",)),
    WsCase("a JSON string", ('"hi"',)),
    WsCase("an array", ("[]",)),
    WsCase("a number", ("5",)),
    WsCase("not JSON", ("{",)),
    WsCase("NaN", ('{"type":"ping","payload":NaN}',)),
    WsCase("a binary frame", (b'{"type":"ping"}',)),
    WsCase("5,000 nested arrays", ('{"type":"ping","payload":{"a":' + "[" * 5000 + "]" * 5000 + "}}",)),
    WsCase("a 5,000-digit number", ('{"type":"ping","payload":{"a":' + "1" * 5000 + "}}",)),
    WsCase("a lone surrogate escape", ('{"type":"ping","payload":{"a":"\\ud800"}}',)),
    WsCase("a null type", ('{"type":null}',)),
    WsCase("an array type", ('{"type":[]}',)),
    WsCase("an unknown type", ('{"type":"hello"}',)),
    WsCase("subscribe without an id", ('{"type":"subscribe","payload":' + _VIEWER_OPERATION + "}",)),
    WsCase("an array id", (_subscribe(_VIEWER_OPERATION, id="[1]"),)),
    WsCase("a number id", (_subscribe(_VIEWER_OPERATION, id="5"),)),
    WsCase("a string payload", (_subscribe('"x"'),)),
    WsCase("no payload", ('{"type":"subscribe","id":"1"}',)),
    WsCase("a number query", (_subscribe('{"query":5}'),)),
    WsCase("no query", (_subscribe("{}"),)),
    WsCase("string variables", (_subscribe('{"query":"{ viewer { name } }","variables":"x"}'),)),
    WsCase("an object operationName", (_subscribe('{"query":"{ viewer { name } }","operationName":{}}'),)),
    WsCase("a syntax error", (_subscribe('{"query":"{ viewer { "}'),)),
    WsCase("selections nested 600 deep", (_subscribe('{"query":"' + DEEP_SELECTIONS.decode() + '"}'),)),
    WsCase("complete with an array id", ('{"type":"complete","id":[1]}',)),
    WsCase("a string init payload", ('{"type":"connection_init","payload":"x"}',), init=False),
    WsCase("a null init payload", ('{"type":"connection_init","payload":null}',), init=False),
    WsCase("a second connection_init", ('{"type":"connection_init","payload":{}}',), close=4429),
    WsCase(  # closed while the first runs: its answer must find the socket closed, quietly
        "a second subscribe with an id in use",
        (_subscribe(_TYPENAME), _subscribe(_TYPENAME)),
        close=4409,
    ),
    WsCase("subscribe before connection_init", (_subscribe(_VIEWER_OPERATION),), init=False, close=4401),
    WsCase(
        "a bad key",
        ('{"type":"connection_init","payload":{"authorization":"Bearer x"}}',),
        init=False,
        close=4403,
    ),
    WsCase(
        "a message over MAX_REQUEST_BYTES",
        ('{"type":"ping","payload":"' + "x" * MAX_REQUEST_BYTES + '"}',),
        close=1009,
    ),
    WsCase(
        "a query over MAX_QUERY_BYTES",
        (_subscribe('{"query":"{ viewer { name } }' + " " * MAX_QUERY_BYTES + '"}'),),
        close=None,
        reply="error",
        code="QUERY_TOO_LARGE",
    ),
    WsCase("a ping with a number payload", ('{"type":"ping","payload":5}',), close=None, reply="pong"),
    WsCase("a valid operation", (_subscribe(_VIEWER_OPERATION),), close=None, reply="next"),
    WsCase(
        "the legacy subprotocol",
        ('{"type":"connection_init"}',),
        init=False,
        subprotocol="graphql-ws",
        close=4406,
    ),
]

SESSION = (b"cookie", b"claimcheck_portal={session}")
FORM = (b"content-type", b"application/x-www-form-urlencoded")


def _form(
    name: str, target: bytes, body: bytes, status: int | None, *headers: tuple[bytes, bytes]
) -> RawRequest:
    return RawRequest(name, body=body, target=target, headers=headers or (SESSION, FORM), status=status)


def _page(name: str, target: bytes, status: int | None, *headers: tuple[bytes, bytes]) -> RawRequest:
    return RawRequest(name, method=b"GET", target=target, headers=headers or (SESSION,), status=status)


PORTAL_FORMS: list[RawRequest] = [
    # who may post: a session, with its own CSRF token, in a form
    _form("a portal form without a session", b"/portal/keys", b"scopes=jobs:read", 401, FORM),
    _form("a portal form without its CSRF token", b"/portal/keys", b"scopes=jobs:read", 403),
    _form("a forged CSRF token", b"/portal/keys", b"csrf_token=" + b"0" * 64 + b"&scopes=jobs:read", 403),
    _form("a CSRF token of 100 KB", b"/portal/keys", b"csrf_token=" + b"a" * 100_000, 403),
    _form("repeated CSRF fields, the first forged", b"/portal/keys", b"csrf_token=x&csrf_token={csrf}", 403),
    _form("a CSRF token that is not UTF-8", b"/portal/keys", b"csrf_token=\xff\xfe&scopes=portal", 403),
    _form("a portal form as JSON", b"/portal/keys", b'{"csrf_token":"{csrf}"}', 400, SESSION, JSON),
    _form(
        "a multipart portal form",
        b"/portal/keys",
        b'--b\r\ncontent-disposition: form-data; name="csrf_token"\r\n\r\n{csrf}\r\n--b--\r\n',
        400,
        SESSION,
        (b"content-type", b"multipart/form-data; boundary=b"),
    ),
    _form("a portal form of 10,000 fields", b"/portal/keys", b"csrf_token={csrf}" + b"&a=1" * 10_000, 400),
    # what is posted
    _form("an unknown scope", b"/portal/keys", b"csrf_token={csrf}&scopes=admin", 400),
    _form("no scope at all", b"/portal/keys", b"csrf_token={csrf}", 400),
    _form(
        "an endpoint URL that is not UTF-8",
        b"/portal/webhooks",
        b"csrf_token={csrf}&url=http%3A%2F%2F\xff",
        400,
    ),
    _form(
        "an endpoint URL of 900 KB",
        b"/portal/webhooks",
        b"csrf_token={csrf}&url=http://" + b"a" * 900_000,
        400,
    ),
    _form(
        "an unknown signing scheme",
        b"/portal/webhooks",
        b"csrf_token={csrf}&url=http%3A%2F%2F127.0.0.1%3A9%2Fx&signing=V9",
        400,
    ),
    _form(
        "an unknown event type",
        b"/portal/webhooks",
        b"csrf_token={csrf}&url=http://127.0.0.1:9/x&event_types=x",
        400,
    ),
    _form(
        "a recovery with no time", b"/portal/deliveries/recover", b"csrf_token={csrf}&endpoint_id=whe_x", 400
    ),
    _form(
        "a recovery since tomorrow-ish", b"/portal/deliveries/recover", b"csrf_token={csrf}&since=soon", 400
    ),
    _form("a redelivery of nothing", b"/portal/deliveries/redeliver", b"csrf_token={csrf}", 404),
    _form("a rotation without an overlap", b"/portal/webhooks/whe_x/rotate", b"csrf_token={csrf}", 404),
    _form(
        "a cancel of a path-traversing id", b"/portal/jobs/..%2F..%2Fetc/cancel", b"csrf_token={csrf}", 404
    ),
    # pages and links
    _page("a sign-in token that is not one", b"/portal/login/%00%FF", 410, (b"x-probe", b"1")),
    _page("a sign-in token of 8 KB", b"/portal/login/" + b"t" * 8_000, 410, (b"x-probe", b"1")),
    _page(
        "a session cookie that is not UTF-8", b"/portal/jobs", 401, (b"cookie", b"claimcheck_portal=\xff\xfe")
    ),
    _page(
        "a session cookie of 8 KB", b"/portal/jobs", 401, (b"cookie", b"claimcheck_portal=" + b"s" * 8_000)
    ),
    _page("a jobs filter with an unknown status", b"/portal/jobs?status=DONE", 400),
    _page("a jobs cursor that is not a job", b"/portal/jobs?after=%27%3B--", 400),
    _page("a delivery filter with a bad time", b"/portal/deliveries?since=yesterday", 400),
    _page("a delivery filter with a bad endpoint", b"/portal/deliveries?endpoint=%00", 400),
    _page("live updates for ids that are not jobs", b"/portal/jobs/live?" + b"id=x&" * 500 + b"id=y", 200),
    _page("a job id that is not one", b"/portal/jobs/%FF%FE", 404),
]
"""The portal's pages and forms: who may post, what is posted, and the pages' query strings."""

HTTP_CASES = GRAPHQL_BODIES + GRAPHQL_HEADERS + GRAPHQL_GETS + PATHS + DOWNLOADS + PORTAL_FORMS
