"""Fetch an image by URL without letting the caller reach internal addresses (SSRF).

Every hop is checked the same way: http/https only, no credentials in the URL, the host resolved
here and EVERY resolved address required to be public (`is_global`, which also rules out CGNAT
and the cloud metadata address) unless an allowlisted network contains it. The connection then
goes to the checked IP itself (the Host header and TLS SNI keep the name), so a second DNS answer
(rebinding) never gets a say. Redirects are followed by hand, re-checked, at most `max_redirects`.
The body is streamed under a byte cap; its declared content type is ignored (the caller decodes
the bytes with an explicit list of image formats).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from app.core.config import Settings
from app.core.errors import AppError, ConfigError, Forbidden, InvalidInput, PayloadTooLarge

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# IPv6 forms that carry an IPv4 address in their last 32 bits (Python calls several of them global):
# IPv4-compatible ::a.b.c.d, SIIT's translated ::ffff:0:a.b.c.d, and the well-known NAT64 prefix.
_LOW32_EMBEDDING = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
)
# Local-use NAT64 (RFC 8215): translated by the operator's own gateway; never public.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_USER_AGENT = "florence-vision-app (image fetch)"


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8, 127.0.0.1` → networks; a bad entry is a `ConfigError` naming it."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"FETCH_ALLOW_NETWORKS: {item[:60]!r} is not an IP address or CIDR network; "
                "list them comma-separated, e.g. 10.20.0.0/16,192.168.1.5."
            ) from None
    return tuple(networks)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address embeds or tunnels to (IPv4-compatible, SIIT, NAT64, 6to4, Teredo
    client): each must pass the check too, so `[::127.0.0.1]` is as loopback as `127.0.0.1`."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = []
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.append(address.teredo[1])
    if any(address in network for network in _LOW32_EMBEDDING):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


def is_address_allowed(address: IPAddress, allow_networks: tuple[IPNetwork, ...] = ()) -> bool:
    """Public addresses pass; anything else only inside an allowlisted network."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 host on the wire
    for candidate in (address, *_embedded_ipv4(address)):
        public = candidate.is_global and not candidate.is_multicast  # Python counts most multicast as global
        if public and not (isinstance(candidate, ipaddress.IPv6Address) and candidate in _LOCAL_NAT64):
            continue
        if not any(candidate.version == net.version and candidate in net for net in allow_networks):
            return False
    return True


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    timeout_s: float = 10.0
    allow_networks: tuple[IPNetwork, ...] = ()
    max_redirects: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            max_bytes=settings.max_image_bytes,
            timeout_s=settings.fetch_timeout_s,
            allow_networks=parse_networks(settings.fetch_allow_networks),
        )


@dataclass(frozen=True)
class _PinnedRequest:
    url: httpx.URL  # host replaced by the checked IP
    headers: dict[str, str]
    extensions: dict[str, str]


class UrlFetcher:
    """`await fetcher.fetch(url)` → the body bytes, or an `AppError` with a code saying why not."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    async def fetch(self, url: str) -> bytes:
        current = self._check_url(url)
        timeout = httpx.Timeout(self.policy.timeout_s)
        try:
            # trust_env=False: an HTTP(S)_PROXY variable would otherwise route around the address pin.
            async with (
                asyncio.timeout(self.policy.timeout_s * 3),
                httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as client,
            ):
                for _ in range(self.policy.max_redirects + 1):
                    pinned = await self._pin(current)
                    async with client.stream(
                        "GET", pinned.url, headers=pinned.headers, extensions=pinned.extensions
                    ) as response:
                        if response.status_code in REDIRECT_STATUSES:
                            current = self._next_hop(current, response)
                            continue
                        if response.status_code != 200:
                            raise InvalidInput(
                                f"The image URL answered HTTP {response.status_code}.", code="url_fetch_failed"
                            )
                        return await self._read_capped(response)
        except AppError:
            raise
        except httpx.InvalidURL:
            raise InvalidInput(
                "The image URL (or one it redirected to) is not a valid URL.", code="invalid_url"
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            raise InvalidInput(
                f"The image URL did not answer within {self.policy.timeout_s:g} s.", code="url_timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise InvalidInput(
                f"The image URL could not be fetched ({type(exc).__name__}).", code="url_fetch_failed"
            ) from None
        raise InvalidInput(
            f"The image URL redirected more than {self.policy.max_redirects} times.", code="url_too_many_redirects"
        )

    # -- checks ------------------------------------------------------------------------------------------
    def _check_url(self, raw: str) -> httpx.URL:
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise InvalidInput("The image URL is not a valid URL.", code="invalid_url") from None
        if url.scheme not in ALLOWED_SCHEMES:
            raise InvalidInput("Only http:// and https:// image URLs can be fetched.", code="url_scheme_not_allowed")
        if not url.host:
            raise InvalidInput("The image URL has no host.", code="invalid_url")
        if url.userinfo:
            raise InvalidInput("Image URLs must not contain credentials.", code="url_credentials_not_allowed")
        return url

    def _next_hop(self, current: httpx.URL, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise InvalidInput("The image URL redirected without a Location.", code="url_fetch_failed")
        try:
            # httpx raises InvalidURL (not an HTTPError) for `http:host/` or `https:evil` from any image host.
            target = str(current.join(location))
        except (httpx.InvalidURL, ValueError, TypeError):
            raise InvalidInput("The image URL redirected to an invalid URL.", code="invalid_url") from None
        return self._check_url(target)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """All addresses `host` resolves to (IP literals in any spelling included)."""
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise InvalidInput("The image URL's host name could not be resolved.", code="url_unresolvable") from None
        # Strip IPv6 zone ids ("fe80::1%eth0"): the address itself decides.
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]

    async def _pin(self, url: httpx.URL) -> _PinnedRequest:
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self.resolve(url.host, port)
        if not addresses or not all(is_address_allowed(a, self.policy.allow_networks) for a in addresses):
            raise Forbidden(
                "The image URL points to a private, loopback or otherwise non-public address; "
                "the server does not fetch from there.",
                code="url_forbidden",
            )
        chosen = addresses[0]
        if isinstance(chosen, ipaddress.IPv6Address) and chosen.ipv4_mapped is not None:
            chosen = chosen.ipv4_mapped
        extensions: dict[str, str] = {}
        if url.scheme == "https" and not _is_ip_literal(url.host):
            extensions["sni_hostname"] = url.host  # certificate checked against the name, not the IP
        host_header = url.netloc.decode("ascii")
        headers = {"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": _USER_AGENT}
        try:
            pinned_url = url.copy_with(host=str(chosen))
        except (httpx.InvalidURL, ValueError):
            raise InvalidInput("The image URL is not a valid URL.", code="invalid_url") from None
        return _PinnedRequest(pinned_url, headers, extensions)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        cap = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_large(cap)
        chunks: list[bytes] = []
        total = 0
        # Raw bytes: no transparent gunzip, so a compression bomb cannot expand past the cap in one chunk.
        async for chunk in response.aiter_raw():
            total += len(chunk)
            if total > cap:
                raise _too_large(cap)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(cap: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The image at the URL is over the {cap:,}-byte limit per image.", code="image_too_large")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
