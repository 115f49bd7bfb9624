"""SSRF guard for webhook URLs: check the URL, resolve it to public addresses only, connect to that address.

The sender checks when an endpoint is created (so the tenant hears at once) and before every attempt
(DNS may have changed since):

    target = check_url(url, allowed_cidrs, allow_http)          # scheme, credentials, host, literal IPs
    ips = resolve_public(target.host, target.port, allowed_cidrs)  # every address must be public
    url_ip, host_header, sni = pinned_url(url, ips[0])
    httpx.post(url_ip, headers={"host": host_header}, extensions={"sni_hostname": sni} if sni else {},
               follow_redirects=False)

The request goes to the address that was checked, never to a second lookup of the name, so DNS
rebinding between check and connect is impossible; TLS still sends SNI for, and verifies the
certificate against, the original hostname. `getaddrinfo` blocks and cannot be interrupted:
`resolve_within` (threads) and `resolve_within_async` (the event loop) run it on a bounded set of
threads of its own and give up after a timeout.

A refusal never tells which address a name resolved to: that would map internal networks for anyone
who can register a URL.

Literal hosts are read the way browsers and `inet_aton` read them (`2130706433`, `0177.0.0.1`,
`0x7f.1`, `127.1` are all 127.0.0.1), so no spelling of a private address slips through.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

MAX_URL_LENGTH = 2048
MAX_LOOKUPS = 64  # DNS lookups in flight at once in this process
DEFAULT_PORTS = {"https": 443, "http": 80}

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"), 16: frozenset("0123456789abcdef")}
_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_BROADCAST = IPv4Address("255.255.255.255")
_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits are an IPv4 address
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use translation
_lookup_slots = threading.BoundedSemaphore(MAX_LOOKUPS)


class UnsafeURLError(ValueError):
    """A webhook URL is refused; `code` is stable (URL_INVALID, URL_SCHEME, URL_CREDENTIALS, URL_HOST,
    URL_UNRESOLVABLE, URL_PRIVATE_ADDRESS), the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Target:
    """Where a checked URL points: `host` is a lowercase ASCII hostname, or `ip` as text when literal."""

    scheme: str
    host: str
    port: int
    ip: IPAddress | None


class Pinned(NamedTuple):
    """A URL aimed at a checked address, plus what keeps the original host: the Host header and SNI."""

    url: str
    host_header: str
    sni_hostname: str | None  # None when the URL names a literal IP (TLS sends no SNI for addresses)


def check_url(url: str, allowed_cidrs: Iterable[str | Network] = (), allow_http: bool = False) -> Target:
    """Check a webhook URL without DNS: https (or http if allowed), no credentials, a well-formed host,
    and, when the host is a literal IP in any spelling, a public or allowed one."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError("URL_INVALID", f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURLError("URL_INVALID", "the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeURLError("URL_INVALID", f"the URL cannot be parsed: {error}") from None
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        expected = "https or http" if allow_http else "https"
        raise UnsafeURLError("URL_SCHEME", f"the URL scheme must be {expected}, not {parts.scheme!r}")
    if "@" in parts.netloc:
        raise UnsafeURLError("URL_CREDENTIALS", "the URL must not contain a user name or password")
    if port == 0:
        raise UnsafeURLError("URL_INVALID", "the URL port must be 1-65535")
    host = _parse_host(parts.hostname or "")
    port = port or DEFAULT_PORTS[parts.scheme]
    if isinstance(host, str):
        return Target(parts.scheme, host, port, None)
    _check_address(host, _networks(allowed_cidrs))
    return Target(parts.scheme, str(host), port, host)


def resolve_public(host: str, port: int, allowed_cidrs: Iterable[str | Network] = ()) -> list[IPAddress]:
    """Resolve `host` and return its addresses, refusing if ANY is not public (and not in `allowed_cidrs`).

    A literal IP in any spelling is checked without DNS.
    """
    networks = _networks(allowed_cidrs)
    parsed = _parse_host(host)
    addresses = _resolve(parsed, port) if isinstance(parsed, str) else [parsed]
    for address in addresses:
        _check_address(address, networks, host)
    return addresses


def resolve_within(
    host: str, port: int, allowed_cidrs: Iterable[str | Network] = (), *, timeout: float
) -> list[IPAddress]:
    """`resolve_public`, refused (URL_UNRESOLVABLE) when the answer takes longer than `timeout` seconds."""
    lookup = _start_lookup(host, port, allowed_cidrs)
    try:
        return lookup.result(timeout)
    except TimeoutError:
        raise _too_slow(host, timeout) from None


async def resolve_within_async(
    host: str, port: int, allowed_cidrs: Iterable[str | Network] = (), *, timeout: float
) -> list[IPAddress]:
    """`resolve_within` for async code: the event loop never waits on `getaddrinfo`."""
    lookup = asyncio.wrap_future(_start_lookup(host, port, allowed_cidrs))
    try:
        async with asyncio.timeout(timeout):
            return await lookup
    except TimeoutError:
        raise _too_slow(host, timeout) from None


def _start_lookup(host: str, port: int, allowed_cidrs: Iterable[str | Network]) -> Future[list[IPAddress]]:
    """resolve_public on a daemon thread of its own (one that hangs never delays the process's exit),
    at most MAX_LOOKUPS at once."""
    if not _lookup_slots.acquire(blocking=False):
        raise UnsafeURLError("URL_UNRESOLVABLE", f"{host} cannot be resolved now (too many lookups at once)")
    lookup: Future[list[IPAddress]] = Future()
    allowed = list(allowed_cidrs)

    def run() -> None:
        try:
            if not lookup.set_running_or_notify_cancel():  # running, it can no longer be cancelled
                return
            try:
                lookup.set_result(resolve_public(host, port, allowed))
            except BaseException as error:  # handed to whoever waits (or dropped after their timeout)
                lookup.set_exception(error)
        finally:
            _lookup_slots.release()

    threading.Thread(target=run, name="webhook-dns", daemon=True).start()
    return lookup


def _too_slow(host: str, timeout: float) -> UnsafeURLError:
    return UnsafeURLError("URL_UNRESOLVABLE", f"{host} did not resolve within {timeout:g} s")


def pinned_url(url: str, ip: str | IPAddress) -> Pinned:
    """Return `url` aimed at `ip`, with the Host header and SNI hostname that keep the original host."""
    parts = urlsplit(url)
    host = _parse_host(parts.hostname or "")
    port = f":{parts.port}" if parts.port is not None else ""
    pinned = urlunsplit(parts._replace(netloc=_bracketed(ip_address(ip)) + port))
    return Pinned(pinned, _bracketed(host) + port, host if isinstance(host, str) else None)


def _bracketed(host: str | IPAddress) -> str:
    return f"[{host}]" if isinstance(host, IPv6Address) else str(host)


def refusal_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address a webhook may go to, or None if it is one."""
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return refusal_reason(ip.ipv4_mapped)
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"a tunnel to {embedded}, {reason}" if reason else None
    special = _ipv6_refusal(ip) if isinstance(ip, IPv6Address) else _ipv4_refusal(ip)
    if special is not None:
        return special
    for reason, refused in (
        ("an unspecified address", ip.is_unspecified),
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
        ("not a globally routable address", not ip.is_global),
    ):
        if refused:
            return reason
    return None


def _ipv6_refusal(ip: IPv6Address) -> str | None:
    """Refusals particular to IPv6 (tunnels and translations that may lead inside)."""
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if ip.teredo is not None:
        return "a Teredo tunnel address"
    if ip.is_site_local:
        return "a site-local address"
    return None


def _ipv4_refusal(ip: IPv4Address) -> str | None:
    """Refusals particular to IPv4 that the ipaddress properties do not cover."""
    if ip == _BROADCAST:
        return "the broadcast address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    return None


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address leads to."""
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _check_address(ip: IPAddress, networks: Sequence[Network], host: str | None = None) -> None:
    canonical = (ip.ipv4_mapped or ip) if isinstance(ip, IPv6Address) else ip
    if any(canonical in network for network in networks):
        return
    reason = refusal_reason(canonical)
    if reason is None:
        return
    if host is not None and host != str(ip):  # a name: say what it resolves to, never which address
        message = f"{host} resolves to a non-public address; webhooks go to public addresses only"
    else:  # the caller's own literal address
        message = f"{ip}, {reason}; webhooks go to public addresses only"
    raise UnsafeURLError("URL_PRIVATE_ADDRESS", message)


def _networks(cidrs: Iterable[str | Network]) -> list[Network]:
    return [ip_network(cidr) for cidr in cidrs]


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise UnsafeURLError("URL_UNRESOLVABLE", f"{host} does not resolve: {error}") from None
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise UnsafeURLError("URL_UNRESOLVABLE", f"{host} has no IPv4 or IPv6 address")
    return addresses


def _parse_host(host: str) -> str | IPAddress:
    """A literal IP address (any spelling) or a lowercase ASCII hostname; refuses anything else."""
    if not host:
        raise UnsafeURLError("URL_HOST", "the URL has no host")
    if "%" in host:
        raise UnsafeURLError("URL_HOST", f"{host!r}: no percent-encoding or IPv6 zone in the host")
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            raise UnsafeURLError("URL_HOST", f"{host!r} is not a valid IPv6 address") from None
    name = host.removesuffix(".")
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeURLError("URL_HOST", f"{host!r} is not a valid hostname") from None
    labels = name.split(".")
    if _is_number(labels[-1]):
        return _parse_ipv4(labels, host)
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UnsafeURLError("URL_HOST", f"{host!r} is not a valid hostname")
    return name


def _is_number(label: str) -> bool:
    """Whether a label reads as a number, which makes the whole host an IPv4 address (WHATWG URL)."""
    if label[:2] == "0x":
        return set(label[2:]) <= _DIGITS[16]
    return label != "" and set(label) <= _DIGITS[10]


def _parse_ipv4(labels: list[str], host: str) -> IPv4Address:
    """Parse 1-4 decimal, octal (0...) or hex (0x...) parts as inet_aton does; the last fills the rest."""
    numbers = [_ipv4_number(label, host) for label in labels]
    if len(numbers) > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise UnsafeURLError("URL_HOST", f"{host!r} is not a valid IPv4 address")
    return IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1])) + numbers[-1])


def _ipv4_number(part: str, host: str) -> int:
    if part[:2] == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not part or not set(digits) <= _DIGITS[base]:
        raise UnsafeURLError("URL_HOST", f"{host!r} is not a valid IPv4 address")
    return int(digits, base) if digits else 0
