"""The one way a webhook leaves the platform: an HTTP(S) POST that cannot be aimed inward.

Server-side request forgery is refused twice, at creation and at every delivery: only
`http` and `https` URLs; the host is resolved here and every address it resolves to must
be public (not private, loopback, link-local, multicast, reserved, unspecified, shared, nor
one of those mapped into IPv6); and the connection goes to the address that was checked,
the name travelling only in the Host header and in TLS (SNI and the certificate check), so
DNS cannot answer one thing to the check and another to the connect. Redirects are never
followed: a 3xx is a failed attempt. `WEBHOOK_ALLOW_PRIVATE` lifts the address rule, for
development. Standard library only: http.client does no redirects, proxies or pooling
behind our back.

URLs are normalised to ASCII when an endpoint is created (`url_normalise`: IDNA for the host,
percent-encoding for the path and query), and again before every POST for endpoints stored
before that: http.client cannot send anything else, and once raised a UnicodeEncodeError
out of here on every attempt, for ever. `post` never raises.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

from escrow.errors import DomainError

MAX_URL_LENGTH = 2000
USER_AGENT = "AgentExchange-Webhooks/1"
# Characters a path or a query may carry as they are (RFC 3986's unreserved and
# sub-delimiters, ":" and "@", and "%" so that escapes already made stay as they are).
PATH_SAFE = "/:@!$&'()*+,;=-._~%"
QUERY_SAFE = PATH_SAFE + "?"


class UrlRefused(DomainError):
    code = "webhook_url_refused"
    default_message = "This URL cannot receive webhooks."


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class Outcome:
    """What one POST came to: a status code, or the error that stopped it."""

    status_code: int | None
    error: str
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def url_parse(url: str) -> Target:
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("Only http:// and https:// URLs can receive webhooks.")
    if not parts.hostname:
        raise UrlRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Credentials in the URL are not supported; check the signature instead.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, path)


def url_normalise(url: str) -> str:
    """`url` in ASCII: the host in IDNA and lower case, the path and query percent-encoded
    (UTF-8), the fragment (never sent) dropped. Already-ASCII URLs keep their escapes."""
    target = url_parse(url.strip())
    parts = urlsplit(url.strip())
    try:
        host = target.host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlRefused(f"{target.host[:100]} is not a valid host name.") from None
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    default = 443 if target.scheme == "https" else 80
    netloc = host if target.port == default and parts.port is None else f"{host}:{target.port}"
    path = quote(parts.path or "/", safe=PATH_SAFE)
    query = f"?{quote(parts.query, safe=QUERY_SAFE)}" if parts.query else ""
    normalised = f"{target.scheme}://{netloc}{path}{query}"
    if len(normalised) > MAX_URL_LENGTH:
        raise UrlRefused(f"The URL is longer than {MAX_URL_LENGTH} characters once encoded.")
    return normalised


def address_refusal(address: str) -> str | None:
    """Why a webhook may not go to this IP address, or None when it is a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return address_refusal(str(embedded))
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def resolve(target: Target) -> list[str]:
    """The addresses to connect to; every one must be allowed, or the URL is refused."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"{target.host} does not resolve: {exc}.") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UrlRefused(f"{target.host} does not resolve.")
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            refusal = address_refusal(address)
            if refusal is not None:
                raise UrlRefused(f"{target.host} resolves to {refusal}.")
    return addresses


def url_check(url: str) -> Target:
    """Refuse a URL no delivery could reach (at creation, given `url_normalise`'s;
    deliveries check again)."""
    target = url_parse(url)
    resolve(target)
    return target


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; the host name is only sent as the Host header."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the checked address; TLS still checks the certificate for the name."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def _abort(connection: http.client.HTTPConnection) -> None:
    # Past the deadline: a receiver trickling its answer byte by byte does not hold us.
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _send(target: Target, address: str, body: bytes, headers: dict[str, str]) -> Outcome:
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = kind(target.host, target.port, address=address, timeout=timeout)
    started = time.monotonic()
    deadline = threading.Timer(timeout, _abort, args=(connection,))
    deadline.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        if 300 <= status < 400:
            error = f"redirect to {response.getheader('Location', '?')[:200]} not followed"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
        else:
            error = ""
    except (OSError, http.client.HTTPException) as exc:
        elapsed = time.monotonic() - started
        reason = "timed out" if elapsed >= timeout else f"{type(exc).__name__}: {exc}"
        return Outcome(None, reason[:500], int(elapsed * 1000))
    finally:
        deadline.cancel()
        connection.close()
    return Outcome(status, error, int((time.monotonic() - started) * 1000))


def post(url: str, *, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST `body` to `url`; never raises. Must not run inside a database transaction."""
    started = time.monotonic()
    try:
        return _post(url, body=body, headers=headers, started=started)
    except Exception as exc:  # whatever it is, it is a failed attempt, never a lost one
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], _ms_since(started))


def _post(url: str, *, body: bytes, headers: dict[str, str], started: float) -> Outcome:
    try:
        target = url_parse(url_normalise(url))
        addresses = resolve(target)
    except UrlRefused as exc:
        return Outcome(None, f"refused: {exc.message}"[:500], _ms_since(started))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Connection": "close",
        **headers,
    }
    outcome = Outcome(None, "no address to connect to", 0)
    for address in addresses:
        outcome = _send(target, address, body, headers)
        # Only a refused or unreachable address is worth trying the next one for.
        if outcome.status_code is not None or "timed out" in outcome.error:
            break
    return Outcome(outcome.status_code, outcome.error, _ms_since(started))


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
