"""SSRF-safe URL fetching against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import pytest

from app.core.errors import AppError, ConfigError, InvalidInput, PayloadTooLarge
from app.services.fetch import FetchPolicy, UrlFetcher, is_address_allowed, parse_networks
from tests.api_support import ImageServer, png_bytes

IMAGE = png_bytes((40, 30), "blue")
LOOPBACK = parse_networks("127.0.0.0/8")


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with ImageServer(IMAGE) as running:
        yield running


def fetch(url: str, allow: str = "", max_bytes: int = 1_000_000) -> bytes:
    policy = FetchPolicy(max_bytes=max_bytes, timeout_s=5, allow_networks=parse_networks(allow))
    return asyncio.run(UrlFetcher(policy).fetch(url))


def fetch_error(url: str, allow: str = "", max_bytes: int = 1_000_000) -> AppError:
    with pytest.raises(AppError) as caught:
        fetch(url, allow, max_bytes)
    return caught.value


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # CGNAT: not `is_private`, still not public
        ("169.254.169.254", False),  # cloud metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1 (Python calls it global)
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ],
)
def test_only_public_addresses_are_allowed_by_default(address: str, allowed: bool) -> None:
    assert is_address_allowed(ipaddress.ip_address(address)) is allowed


def test_allowlist_opens_only_the_listed_networks() -> None:
    assert is_address_allowed(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    assert is_address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    assert not is_address_allowed(ipaddress.ip_address("169.254.169.254"), LOOPBACK)
    assert not is_address_allowed(ipaddress.ip_address("::1"), LOOPBACK)
    with pytest.raises(ConfigError, match="FETCH_ALLOW_NETWORKS: 'not-a-net'"):
        parse_networks("10.0.0.0/8, not-a-net")


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("127.0.0.1", "url_forbidden"),
        ("localhost", "url_forbidden"),
        ("2130706433", "url_forbidden"),
        ("0x7f.1", "url_forbidden"),
        ("[::ffff:127.0.0.1]", "url_forbidden"),
        ("127.1", "url_forbidden"),
        ("0177.0.0.1", "invalid_url"),  # octal: httpx refuses to parse it at all
    ],
)
def test_every_spelling_of_loopback_is_refused(server: ImageServer, host: str, code: str) -> None:
    requests_before = len(server.hosts_seen)
    error = fetch_error(server.url("/image.png", host=host))
    assert error.code == code
    assert error.http_status == (403 if code == "url_forbidden" else 400)
    assert len(server.hosts_seen) == requests_before  # refused before connecting


@pytest.mark.parametrize(
    "url", ["http://100.64.0.1/x.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]/"]
)
def test_internal_addresses_are_refused_before_connecting(url: str) -> None:
    error = fetch_error(url, allow="127.0.0.0/8")
    assert (error.code, error.http_status) == ("url_forbidden", 403)


def test_allowlisted_loopback_is_fetched_and_the_declared_type_is_ignored(server: ImageServer) -> None:
    assert fetch(server.url("/image.png"), allow="127.0.0.0/8") == IMAGE


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://[::1]/x", "http://10.0.0.1/", "http://2130706434/"]
)
def test_a_redirect_to_an_internal_address_is_refused(server: ImageServer, target: str) -> None:
    # The first hop is allowlisted (127.0.0.1); where it redirects to is not (2130706434 is 127.0.0.2).
    error = fetch_error(server.url(f"/redirect?to={target}"), allow="127.0.0.1/32")
    assert error.code == "url_forbidden"


def test_a_redirect_from_a_public_looking_name_to_loopback_is_refused(server: ImageServer) -> None:
    error = fetch_error(server.url("/redirect?to=" + server.url("/image.png")))
    assert error.code == "url_forbidden"  # default policy: the very first hop is refused


def test_redirects_are_followed_within_the_allowlist_up_to_three(server: ImageServer) -> None:
    hop = server.url("/image.png")
    for _ in range(3):
        hop = server.url(f"/redirect?to={hop}")
    assert fetch(hop, allow="127.0.0.1/32") == IMAGE
    error = fetch_error(server.url("/loop/0"), allow="127.0.0.1/32")
    assert error.code == "url_too_many_redirects"


@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/x.png"])
def test_only_http_and_https_schemes(server: ImageServer, target: str) -> None:
    assert fetch_error(target).code == "url_scheme_not_allowed"
    assert fetch_error(server.url(f"/redirect?to={target}"), allow="127.0.0.1/32").code == "url_scheme_not_allowed"


def test_urls_with_credentials_or_no_host_are_refused() -> None:
    assert fetch_error("http://user:pw@example.com/x.png").code == "url_credentials_not_allowed"
    assert fetch_error("http:///x.png").code == "invalid_url"
    assert fetch_error("https://[::1").code == "invalid_url"
    assert fetch_error("http://no-such-host.invalid/x.png").code == "url_unresolvable"


def test_body_is_capped_with_and_without_content_length(server: ImageServer) -> None:
    declared = fetch_error(server.url("/big?n=5000"), allow="127.0.0.1/32", max_bytes=4096)
    streamed = fetch_error(server.url("/big-unsized?n=5000"), allow="127.0.0.1/32", max_bytes=4096)
    for error in (declared, streamed):
        assert isinstance(error, PayloadTooLarge)
        assert error.code == "image_too_large"
    assert fetch(server.url("/big-unsized?n=4096"), allow="127.0.0.1/32", max_bytes=4096) == b"\0" * 4096


def test_http_errors_are_reported(server: ImageServer) -> None:
    error = fetch_error(server.url("/missing"), allow="127.0.0.1/32")
    assert isinstance(error, InvalidInput)
    assert (error.code, error.message) == ("url_fetch_failed", "The image URL answered HTTP 404.")


def test_connection_goes_to_the_checked_address_not_a_second_lookup(
    server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once, checked, and the socket connects to that IP.

    `images.test` does not exist here; only the fetcher's own (checked) answer can make it reach the
    loopback server, and the server still sees the name in the Host header.
    """
    answers: list[str] = []

    async def resolve(self: UrlFetcher, host: str, port: int) -> list[ipaddress.IPv4Address]:
        answers.append(host)
        return [ipaddress.IPv4Address("127.0.0.1")]

    monkeypatch.setattr(UrlFetcher, "resolve", resolve)
    assert fetch(server.url("/image.png", host="images.test"), allow="127.0.0.1/32") == IMAGE
    assert answers == ["images.test"]
    assert server.hosts_seen[-1] == f"images.test:{server.port}"
