"""The one guarded URL fetcher: every URL a request names is fetched through here.

A server that fetches URLs on behalf of its clients can be turned against its own network (SSRF):
`http://127.0.0.1:2375/`, `http://169.254.169.254/` (cloud metadata), `http://10.0.0.5/admin`.
So only http(s) is allowed, every address the host name resolves to must be public unless the
operator allows private ones, each redirect is checked again, and size and time are bounded.
The connection goes to the address that was checked (no second DNS lookup to race).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from localimg.errors import InvalidRequest, PayloadTooLarge

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for fetched URLs."""

    allow_private: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 15.0


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url(url: str, policy: FetchPolicy, param: str = "file") -> tuple[str, int, str]:
    """Validate a URL; return (host, port, checked IP address) or raise InvalidRequest."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"{param}: only http and https URLs can be fetched (got {parts.scheme or 'none'!r})",
            param=param,
        )
    host = parts.hostname
    if not host:
        raise InvalidRequest(f"{param}: the URL has no host", param=param)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest(f"{param}: the URL has an invalid port", param=param) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InvalidRequest(f"{param}: cannot resolve host {host!r}", param=param) from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not policy.allow_private:
        blocked = [str(a) for a in addresses if not _is_public(a)]
        if blocked:
            raise InvalidRequest(
                f"{param}: {host!r} resolves to a private, loopback or link-local address "
                f"({blocked[0]}); the server refuses to fetch it (start it with "
                "--allow-private-urls to allow this)",
                param=param,
                code="url_not_allowed",
            )
    return host, port, str(addresses[0])


def fetch(url: str, policy: FetchPolicy, param: str = "file") -> bytes:
    """GET a URL under the policy: http(s) only, public addresses, redirects re-checked.

    Blocking: call it from a worker thread in async code.
    """
    import httpx

    deadline = time.monotonic() + policy.timeout
    for _ in range(MAX_REDIRECTS + 1):
        host, port, address = check_url(url, policy, param)
        parts = urlsplit(url)
        # Connect to the checked address; keep the name for the Host header and TLS (SNI).
        netloc_ip = f"[{address}]" if ":" in address else address
        target = parts._replace(netloc=f"{netloc_ip}:{port}").geturl()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InvalidRequest(f"{param}: fetching {url} took too long", param=param)
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            with (
                httpx.Client(timeout=remaining, follow_redirects=False) as client,
                client.stream(
                    "GET", target, headers={"Host": parts.netloc}, extensions=extensions
                ) as response,
            ):
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise InvalidRequest(
                        f"{param}: {url} answered HTTP {response.status_code}", param=param
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                    raise PayloadTooLarge(
                        f"{param}: {url} is {int(declared)} bytes; the limit is {policy.max_bytes}",
                        param=param,
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise PayloadTooLarge(
                            f"{param}: {url} is larger than the limit of {policy.max_bytes} bytes",
                            param=param,
                        )
                    if time.monotonic() > deadline:
                        raise InvalidRequest(f"{param}: fetching {url} took too long", param=param)
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise InvalidRequest(f"{param}: fetching {url} timed out", param=param) from None
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"{param}: cannot fetch {url}: {exc}", param=param) from None
    raise InvalidRequest(f"{param}: {url} redirects more than {MAX_REDIRECTS} times", param=param)
