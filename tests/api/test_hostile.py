"""The hostile-case catalogue (issue 13): what an outsider sends, and the exact status and code it gets.

Every case runs against the real server app (API, jobs, the mounted chat) with the tiny checkpoint and
asserts the status, the `{"error": {"code", "message"}}` body and that nothing was logged as an error
with a traceback. Groups: auth, intake, jobs, SSRF, redirects, HTTP layer, rate limit.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.serving.server import create_app
from tests.api_support import (
    AUDIENCE,
    ISSUER,
    JWT_SECRET,
    ImageServer,
    api_settings,
    auth_header,
    make_token,
    png_bytes,
    png_header_only,
)

PNG = png_bytes((40, 30))
PNG_B64 = base64.b64encode(PNG).decode()
ONE_IMAGE = [{"base64": PNG_B64}]
MAX_IMAGES = 4
MAX_BODY = 2_000_000


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    auth: bool = True  # send a valid token unless the case sets its own Authorization


def _analyze(text: str | None = None, task: str = "CAPTION", images: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": task, "images": ONE_IMAGE if images is None else images, **extra}
    if text is not None:
        body["text"] = text
    return body


def _nested(depth: int) -> bytes:
    return b'{"task": "CAPTION", "deep": ' + b"[" * depth + b"]" * depth + b"}"


# -- auth: every token attack on every kind of protected route --------------------------------------------
def _token_attacks() -> list[tuple[str, dict[str, str], str]]:
    now = int(time.time())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"sub": "alice", "iat": now, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER}

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def without(name: str) -> str:
        return jwt.encode({k: v for k, v in claims.items() if k != name}, JWT_SECRET, algorithm="HS256")

    return [
        ("no-header", {}, "missing_token"),
        ("basic-scheme", {"Authorization": "Basic YWxpY2U6cHc="}, "missing_token"),
        ("empty-bearer", {"Authorization": "Bearer "}, "missing_token"),
        ("garbage", bearer("not-a-jwt"), "invalid_token"),
        ("expired", bearer(make_token(ttl_s=-3600)), "token_expired"),
        ("wrong-audience", bearer(make_token(aud="someone-else")), "invalid_token"),
        ("wrong-issuer", bearer(make_token(iss="https://evil.test")), "invalid_token"),
        ("no-exp", bearer(without("exp")), "invalid_token"),
        ("no-sub", bearer(without("sub")), "invalid_token"),
        ("empty-sub", bearer(make_token(sub="")), "invalid_token"),
        ("alg-none", bearer(jwt.encode(claims, None, algorithm="none")), "invalid_token"),
        ("wrong-secret", bearer(make_token(key="another-secret-" + "x" * 40)), "invalid_token"),
        ("rs256-unknown-key", bearer(jwt.encode(claims, rsa_key, algorithm="RS256")), "invalid_token"),
        ("not-before-future", bearer(make_token(nbf=now + 3600)), "invalid_token"),
        ("too-long", bearer("a" * 9000), "invalid_token"),
    ]


_PROTECTED = [
    ("GET", "/api/v1/jobs", None),
    ("POST", "/api/v1/analyze", _analyze()),
    ("GET", "/api/v1/jobs/some-id", None),
    ("POST", "/api/v1/jobs", {"kind": "analyze", **_analyze()}),
]


def auth_cases() -> list[Case]:
    return [
        Case(f"auth-{name}-{method}-{path}", method, path, 401, code, json=body, headers=headers, auth=False)
        for name, headers, code in _token_attacks()
        for method, path, body in _PROTECTED
    ]


# -- intake: the synchronous analyze route -------------------------------------------------------------------
def intake_cases() -> list[Case]:
    analyze = "/api/v1/analyze"
    json_type = {"Content-Type": "application/json"}
    cases = [
        Case("invalid-json", "POST", analyze, 400, "invalid_json", content=b"{", headers=json_type),
        Case("nested-1000", "POST", analyze, 400, "invalid_json", content=_nested(1000), headers=json_type),
        Case("nested-100000", "POST", analyze, 400, "invalid_json", content=_nested(100_000), headers=json_type),
        Case("not-utf8", "POST", analyze, 400, "invalid_json", content=b'{"task": "\xff"}', headers=json_type),
        Case("array-body", "POST", analyze, 422, "validation_error", json=[]),
        Case("text-plain", "POST", analyze, 415, "unsupported_content_type", content=b"{}",
             headers={"Content-Type": "text/plain"}),
        Case("no-content-type", "POST", analyze, 415, "unsupported_content_type", content=b"{}"),
        Case("xml", "POST", analyze, 415, "unsupported_content_type", content=b"<a/>",
             headers={"Content-Type": "application/xml"}),
        Case("missing-task", "POST", analyze, 422, "validation_error", json={"images": ONE_IMAGE}),
        Case("missing-images", "POST", analyze, 422, "validation_error", json={"task": "CAPTION"}),
        Case("empty-images", "POST", analyze, 422, "validation_error", json=_analyze(images=[])),
        Case("unknown-task", "POST", analyze, 400, "unknown_task", json=_analyze(task="HACK")),
        Case("task-1mb", "POST", analyze, 422, "validation_error", json=_analyze(task="X" * 1_000_000)),
        Case("task-number", "POST", analyze, 422, "validation_error", json=_analyze(task=5)),
        Case("too-many-images", "POST", analyze, 413, "too_many_images", json=_analyze(images=ONE_IMAGE * 5)),
        Case("image-not-object", "POST", analyze, 422, "validation_error", json=_analyze(images=[5])),
        Case("image-both-keys", "POST", analyze, 422, "validation_error",
             json=_analyze(images=[{"url": "https://x.test/a.png", "base64": PNG_B64}])),
        Case("bad-base64", "POST", analyze, 400, "invalid_base64", json=_analyze(images=[{"base64": "!!!"}])),
        Case("data-url-not-base64", "POST", analyze, 400, "invalid_data_url",
             json=_analyze(images=["data:image/png,rawbytes"])),
        Case("not-an-image", "POST", analyze, 415, "unsupported_image_format",
             json=_analyze(images=[{"base64": base64.b64encode(b"hello world" * 10).decode()}])),
        Case("empty-image", "POST", analyze, 422, "validation_error", json=_analyze(images=[{"base64": ""}])),
        Case("pixel-bomb", "POST", analyze, 413, "too_many_pixels",
             json=_analyze(images=[{"base64": base64.b64encode(png_header_only(100_000, 100_000)).decode()}])),
        Case("truncated-png", "POST", analyze, 400, "corrupt_image",
             json=_analyze(images=[{"base64": base64.b64encode(PNG[: len(PNG) // 2]).decode()}])),
        Case("text-1001-chars", "POST", analyze, 422, "validation_error",
             json=_analyze("a" * 1001, task="CAPTION_TO_PHRASE_GROUNDING")),
        Case("text-with-tags", "POST", analyze, 400, "invalid_text",
             json=_analyze("a <loc_5> b", task="CAPTION_TO_PHRASE_GROUNDING")),
        Case("text-with-eos", "POST", analyze, 400, "invalid_text",
             json=_analyze("a </s> b", task="CAPTION_TO_PHRASE_GROUNDING")),
        Case("text-on-caption", "POST", analyze, 400, "unexpected_text", json=_analyze("hello")),
        Case("grounding-no-text", "POST", analyze, 400, "missing_text",
             json=_analyze(task="CAPTION_TO_PHRASE_GROUNDING")),
        Case("region-3-numbers", "POST", analyze, 422, "validation_error",
             json=_analyze(task="REGION_TO_CATEGORY", region=[1, 2, 3])),
        Case("region-strings", "POST", analyze, 422, "validation_error",
             json=_analyze(task="REGION_TO_CATEGORY", region=["a", "b", "c", "d"])),
        Case("region-nan", "POST", analyze, 422, "validation_error",
             content=b'{"task": "REGION_TO_CATEGORY", "region": [NaN, 1, 2, 3], "images": []}', headers=json_type),
        Case("region-infinity", "POST", analyze, 422, "validation_error",
             content=b'{"task": "REGION_TO_CATEGORY", "region": [1e999, 1, 2, 3], "images": []}', headers=json_type),
        Case("body-over-limit-declared", "POST", analyze, 413, "request_too_large", content=b"{}",
             headers={**json_type, "Content-Length": str(MAX_BODY + 1)}),
        Case("body-over-limit-sent", "POST", analyze, 413, "request_too_large",
             content=b'{"task": "' + b"x" * (MAX_BODY + 10) + b'"}', headers=json_type),
        Case("multipart-no-files", "POST", analyze, 422, "validation_error", data={"task": "CAPTION"},
             files=[("other", ("a.txt", b"x", "text/plain"))]),
        Case("multipart-not-an-image", "POST", analyze, 400, "corrupt_image", data={"task": "CAPTION"},
             files=[("files", ("a.png", b"GIF89a-not-really", "image/png"))]),
        Case("multipart-bad-region", "POST", analyze, 400, "invalid_region",
             data={"task": "REGION_TO_CATEGORY", "region": "1,2,x,4"}, files=[("files", ("a.png", PNG, "image/png"))]),
        Case("multipart-too-many", "POST", analyze, 413, "too_many_images", data={"task": "CAPTION"},
             files=[("files", (f"{i}.png", PNG, "image/png")) for i in range(5)]),
        Case("multipart-broken", "POST", analyze, 422, "validation_error", content=b"--x\r\nbroken",
             headers={"Content-Type": "multipart/form-data; boundary=x"}),
        Case("multipart-no-boundary", "POST", analyze, 400, "bad_request", content=b"--x\r\n",
             headers={"Content-Type": "multipart/form-data"}),
    ]  # fmt: skip
    for route in ("/api/v1/classify", "/api/zero-shot"):
        cases += [
            Case(f"nested-{route}", "POST", route, 400, "invalid_json", content=_nested(1000), headers=json_type),
            Case(f"invalid-json-{route}", "POST", route, 400, "invalid_json", content=b"{", headers=json_type),
            Case(f"text-plain-{route}", "POST", route, 415, "unsupported_content_type", content=b"{}",
                 headers={"Content-Type": "text/plain"}),
        ]  # fmt: skip
    return cases


# -- jobs: the queue's own routes and the seed-compatible ones -----------------------------------------------
def job_cases() -> list[Case]:
    jobs = "/api/v1/jobs"
    seed = "/api/tasks/image-captioning/florence/jobs"
    json_type = {"Content-Type": "application/json"}
    job = {"kind": "analyze", **_analyze()}
    seed_image = f"data:image/png;base64,{PNG_B64}"
    cases = [
        Case("jobs-nested-1000", "POST", jobs, 400, "invalid_json", content=_nested(1000), headers=json_type),
        Case("jobs-nested-990", "POST", jobs, 400, "invalid_json", content=_nested(990), headers=json_type),
        Case("jobs-nested-40", "POST", jobs, 400, "invalid_json", content=_nested(40), headers=json_type),
        Case("jobs-invalid-json", "POST", jobs, 400, "invalid_json", content=b"{", headers=json_type),
        Case("jobs-array", "POST", jobs, 400, "invalid_json", json=[job]),
        Case("jobs-string", "POST", jobs, 400, "invalid_json", json="job"),
        Case("jobs-text-plain", "POST", jobs, 415, "unsupported_content_type", content=b"{}",
             headers={"Content-Type": "text/plain"}),
        Case("jobs-unknown-kind", "POST", jobs, 400, "unknown_job_kind", json={**job, "kind": "mine-bitcoin"}),
        Case("jobs-kind-list", "POST", jobs, 400, "unknown_job_kind", json={**job, "kind": []}),
        Case("callback-too-long", "POST", jobs, 400, "invalid_url",
             json={**job, "callback_url": "https://example.com/" + "a" * 2100}),
        Case("callback-loopback", "POST", jobs, 403, "url_forbidden", json={**job, "callback_url": "http://127.0.0.1/"}),
        Case("callback-metadata", "POST", jobs, 403, "url_forbidden",
             json={**job, "callback_url": "http://169.254.169.254/latest"}),
        Case("callback-ipv4-compatible", "POST", jobs, 403, "url_forbidden",
             json={**job, "callback_url": "http://[::127.0.0.1]/"}),
        Case("callback-file", "POST", jobs, 400, "url_scheme_not_allowed", json={**job, "callback_url": "file:///etc"}),
        Case("callback-number", "POST", jobs, 400, "invalid_url", json={**job, "callback_url": 5}),
        Case("callback-credentials", "POST", jobs, 400, "url_credentials_not_allowed",
             json={**job, "callback_url": "https://u:p@example.com/"}),
        Case("idempotency-key-too-long", "POST", jobs, 400, "invalid_idempotency_key", json=job,
             headers={"Idempotency-Key": "k" * 300}),
        Case("idempotency-key-control", "POST", jobs, 400, "invalid_idempotency_key", json=job,
             headers={"Idempotency-Key": "a\tb"}),
        Case("job-id-60k", "GET", f"{jobs}/{'x' * 60_000}", 404, "job_not_found"),
        Case("job-id-unknown", "GET", f"{jobs}/00000000000000000000000000000000", 404, "job_not_found"),
        Case("job-cancel-unknown", "DELETE", f"{jobs}/nope", 404, "job_not_found"),
        Case("jobs-limit-0", "GET", f"{jobs}?limit=0", 422, "validation_error"),
        Case("jobs-limit-text", "GET", f"{jobs}?limit=abc", 422, "validation_error"),
        Case("jobs-limit-huge", "GET", f"{jobs}?limit=99999999999999999999", 422, "validation_error"),
        Case("seed-nested-1000", "POST", seed, 400, "invalid_json", content=_nested(1000), headers=json_type),
        Case("seed-detail-list", "POST", seed, 400, "invalid_config",
             json={"image": seed_image, "config": {"detail": []}}),
        Case("seed-detail-object", "POST", seed, 400, "invalid_config",
             json={"image": seed_image, "config": {"detail": {}}}),
        Case("seed-detail-number", "POST", seed, 400, "invalid_config",
             json={"image": seed_image, "config": {"detail": 5}}),
        Case("seed-detail-unknown", "POST", seed, 400, "invalid_config",
             json={"image": seed_image, "config": {"detail": "x"}}),
        # Unknown config keys are passed over as the vitrivr server does (tests/seed/test_vitrivr.py).
        Case("seed-config-not-object", "POST", seed, 422, "validation_error",
             json={"image": seed_image, "config": ["evil"]}),
        Case("seed-unknown-task", "POST", "/api/tasks/mine-bitcoin/florence/jobs", 404, "not_found",
             json={"image": seed_image}),
        Case("seed-job-id-60k", "GET", f"/api/tasks/image-captioning/jobs/{'y' * 60_000}", 404, "job_not_found"),
    ]  # fmt: skip
    return cases


# -- SSRF: image URLs that reach internal addresses, in every spelling -----------------------------------------
SSRF_URLS = [
    "http://127.0.0.1/a.png",
    "http://localhost/a.png",
    "http://2130706433/a.png",
    "http://0x7f.1/a.png",
    "http://127.1/a.png",
    "http://0.0.0.0/a.png",
    "http://10.0.0.1/a.png",
    "http://172.16.0.1/a.png",
    "http://192.168.0.1/a.png",
    "http://100.64.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://224.0.0.1/a.png",
    "http://[::1]/a.png",
    "http://[::]/a.png",
    "http://[fe80::1]/a.png",
    "http://[fd00::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",  # IPv4-mapped
    "http://[::ffff:169.254.169.254]/a.png",
    "http://[::127.0.0.1]/a.png",  # IPv4-compatible (Python calls it global)
    "http://[::10.0.0.1]/a.png",
    "http://[::ffff:0:127.0.0.1]/a.png",  # SIIT-translated (Python calls it global)
    "http://[::ffff:0:a9fe:a9fe]/a.png",
    "http://[64:ff9b::127.0.0.1]/a.png",  # NAT64 well-known prefix
    "http://[64:ff9b::a9fe:a9fe]/a.png",
    "http://[64:ff9b:1::808:808]/a.png",  # local-use NAT64
    "http://[2002:7f00:1::]/a.png",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::]/a.png",
]


def ssrf_cases() -> list[Case]:
    analyze = "/api/v1/analyze"
    cases = [Case(f"ssrf-{url}", "POST", analyze, 403, "url_forbidden", json=_analyze(images=[{"url": url}]))
             for url in SSRF_URLS]  # fmt: skip
    for url, code in [
        ("file:///etc/passwd", "url_scheme_not_allowed"),
        ("ftp://example.com/a.png", "url_scheme_not_allowed"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "url_scheme_not_allowed"),
        ("http://user:pw@example.com/a.png", "url_credentials_not_allowed"),
        ("http:///a.png", "invalid_url"),
        ("http://[::1/a.png", "invalid_url"),
    ]:
        cases.append(Case(f"url-{url}", "POST", analyze, 400, code, json=_analyze(images=[{"url": url}])))
    return cases


# -- the HTTP layer: paths, methods, CORS, Chainlit's own routes ---------------------------------------------
def http_cases() -> list[Case]:
    fake_session = {"sessionId": "no-such-session"}
    cases = [
        Case("public-nul", "GET", "/public/%00", 400, "invalid_path", auth=False),
        Case("public-nul-suffix", "GET", "/public/favicon.svg%00.png", 400, "invalid_path", auth=False),
        Case("assets-nul", "GET", "/assets/%00", 400, "invalid_path", auth=False),
        Case("project-action", "POST", "/project/action", 404, "session_not_found",
             json={**fake_session, "action": {"name": "x", "payload": {}}}, auth=False),
        Case("project-action-empty-action", "POST", "/project/action", 404, "session_not_found",
             json={**fake_session, "action": {}}, auth=False),
        Case("project-element-put", "PUT", "/project/element", 404, "session_not_found",
             json={**fake_session, "element": {}}, auth=False),
        Case("project-element-delete", "DELETE", "/project/element", 404, "session_not_found",
             json={**fake_session, "element": {}}, auth=False),
        Case("feedback", "PUT", "/feedback", 404, "session_not_found",
             json={**fake_session, "feedback": {"forId": "x", "value": 1}}, auth=False),
        Case("mcp-post", "POST", "/mcp", 404, "not_found",
             json={**fake_session, "name": "x", "clientType": "sse", "url": "http://127.0.0.1/"}, auth=False),
        Case("mcp-delete", "DELETE", "/mcp", 404, "not_found", json={**fake_session, "name": "x"}, auth=False),
        Case("auth-jwt-bearer", "POST", "/auth/jwt", 404, "not_found", headers={"Authorization": "Bearer a.b.c"},
             auth=False),
        Case("auth-jwt-none", "POST", "/auth/jwt", 404, "not_found", auth=False),
        Case("api-unknown", "GET", "/api/v2/anything", 404, "not_found"),
        Case("api-unknown-long", "GET", "/api/" + "z" * 10_000, 404, "not_found"),
    ]  # fmt: skip
    for method, path in [
        ("PUT", "/api/v1/analyze"),
        ("DELETE", "/api/v1/analyze"),
        ("PATCH", "/api/v1/jobs"),
        ("PUT", "/api/v1/jobs/abc"),
        ("POST", "/api/v1/tasks"),
        ("POST", "/api/v1/models"),
        ("GET", "/api/v1/classify"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
        ("PUT", "/metrics"),
        ("GET", "/api/tasks/image-captioning/florence/jobs"),
    ]:
        cases.append(Case(f"405-{method}-{path}", method, path, 405, "method_not_allowed"))
    for name, headers in [
        ("cors-evil-origin", {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}),
        ("cors-evil-header", {"Origin": "https://good.example", "Access-Control-Request-Method": "POST",
                              "Access-Control-Request-Headers": "X-Evil"}),
        ("cors-evil-method", {"Origin": "https://good.example", "Access-Control-Request-Method": "DELETE"}),
    ]:  # fmt: skip
        cases.append(Case(name, "OPTIONS", "/api/v1/analyze", 400, "cors_refused", headers=headers, auth=False))
    return cases


CATALOGUE = auth_cases() + intake_cases() + job_cases() + ssrf_cases() + http_cases()


@pytest.fixture(scope="module")
def client(tiny_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = api_settings(
        tiny_settings,
        data_dir=tmp_path_factory.mktemp("hostile-data"),
        max_images_per_request=MAX_IMAGES,
        max_request_bytes=MAX_BODY,
        cors_origins="https://good.example",
        fetch_timeout_s=2,
        preload=False,
        embedded_worker=False,  # the queue takes jobs; nothing here needs them run
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def send(client: TestClient, case: Case) -> Any:
    headers = {**(auth_header() if case.auth else {}), **case.headers}
    return client.request(
        case.method, case.path, json=case.json, content=case.content, headers=headers, data=case.data, files=case.files
    )


def assert_refused(response: Any, status: int, code: str, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body["error"]) >= {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert len(response.content) < 2000  # nothing the client sent is echoed back at length
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def test_the_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 150
    assert len({case.id for case in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.id[:80] for case in CATALOGUE])
def test_hostile_request_is_refused_exactly(client: TestClient, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert_refused(send(client, case), case.status, case.code, caplog)


# -- redirects: an image host may answer anything (allowlisted loopback stands in for a public host) ---------
@pytest.fixture(scope="module")
def redirect_client(tiny_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = api_settings(
        tiny_settings,
        data_dir=tmp_path_factory.mktemp("hostile-redirect"),
        fetch_allow_networks="127.0.0.1/32",
        fetch_timeout_s=2,
        preload=False,
        embedded_worker=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageServer]:
    with ImageServer(PNG) as server:
        yield server


@pytest.mark.parametrize(
    ("location", "status", "code"),
    [
        ("http:169.254.169.254/", 400, "invalid_url"),
        ("https:evil", 400, "invalid_url"),
        ("https:evil/x.png", 400, "invalid_url"),
        ("http://169.254.169.254/latest", 403, "url_forbidden"),
        ("http://[::1]/", 403, "url_forbidden"),
        ("http://[::127.0.0.2]/", 403, "url_forbidden"),
        ("http://[::ffff:0:127.0.0.2]/", 403, "url_forbidden"),
        ("http://127.0.0.2/", 403, "url_forbidden"),
        ("file:///etc/passwd", 400, "url_scheme_not_allowed"),
        ("http://u:p@127.0.0.1/", 400, "url_credentials_not_allowed"),
    ],
)
def test_a_redirect_anywhere_odd_is_refused_not_crashed(
    redirect_client: TestClient,
    image_server: ImageServer,
    location: str,
    status: int,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from urllib.parse import quote

    url = image_server.url("/redirect?to=" + quote(location, safe=""))
    response = redirect_client.post("/api/v1/analyze", json=_analyze(images=[{"url": url}]), headers=auth_header())
    assert_refused(response, status, code, caplog)


# -- rate limit: requests that can never pass, and a limit a client cannot dodge -----------------------------
@pytest.fixture(scope="module")
def open_client(tiny_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = api_settings(
        tiny_settings,
        data_dir=tmp_path_factory.mktemp("hostile-open"),
        auth_disabled=True,
        rate_limit="3/minute",
        preload=False,
        embedded_worker=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _unit_request() -> dict[str, Any]:
    # One image that fails to decode: it costs one unit of the limit and no model work.
    return _analyze(images=[{"base64": base64.b64encode(b"not an image").decode()}])


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/api/v1/analyze", _analyze(images=ONE_IMAGE * 4)),
        ("/api/v1/jobs", {"kind": "analyze", **_analyze(images=ONE_IMAGE * 4)}),
    ],
)
def test_a_request_larger_than_the_whole_limit_is_413_not_retry_later(
    open_client: TestClient, route: str, body: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    response = open_client.post(route, json=body)
    assert_refused(response, 413, "over_rate_limit", caplog)
    assert "Retry-After" not in response.headers
    assert "3/minute" in response.json()["error"]["message"]


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(
    open_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    open_client.app.state.services.limiter.reset()  # type: ignore[attr-defined]
    statuses = [
        open_client.post(
            "/api/v1/analyze", json=_unit_request(), headers={"X-Forwarded-For": f"203.0.113.{i}"}
        ).status_code
        for i in range(5)
    ]
    assert statuses[:3] == [415, 415, 415]  # the undecodable image, after the limit counted it
    assert statuses[3:] == [429, 429]


def test_a_trusted_proxy_forwards_the_client_address(tiny_settings: Settings, tmp_path: Path) -> None:
    settings = api_settings(
        tiny_settings,
        data_dir=tmp_path,
        auth_disabled=True,
        rate_limit="1/minute",
        preload=False,
        embedded_worker=False,
        forwarded_allow_ips="10.9.8.7",
    )
    app = create_app(settings)
    with TestClient(app, client=("10.9.8.7", 40000)) as proxy, TestClient(app, client=("10.1.1.1", 40000)) as other:
        first = proxy.post("/api/v1/analyze", json=_unit_request(), headers={"X-Forwarded-For": "203.0.113.1"})
        second = proxy.post("/api/v1/analyze", json=_unit_request(), headers={"X-Forwarded-For": "203.0.113.2"})
        again = proxy.post("/api/v1/analyze", json=_unit_request(), headers={"X-Forwarded-For": "203.0.113.1"})
        # Not a trusted proxy: its header is ignored, its own address is the key.
        spoofed = [
            other.post("/api/v1/analyze", json=_unit_request(), headers={"X-Forwarded-For": f"198.51.100.{i}"})
            for i in range(2)
        ]
    assert (first.status_code, second.status_code, again.status_code) == (415, 415, 429)
    assert [r.status_code for r in spoofed] == [415, 429]


def test_chat_login_attempts_are_keyed_by_address_and_name_in_their_own_bucket(
    tiny_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.chat.auth import hash_password
    from app.models.manager import ModelManager
    from tests.chat_support import make_services

    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    users = f"alice:{hash_password('wonderland', iterations=100_000)}"
    common = {"rate_limit": "2/minute", "preload": False, "embedded_worker": False, "data_dir": tmp_path}
    settings = api_settings(tiny_settings, chat_users=users, chainlit_auth_secret="s" * 40, **common)
    app = create_app(settings, make_services(settings, ModelManager(settings)))
    wrong = {"username": "alice", "password": "guess"}
    right = {"username": "alice", "password": "wonderland"}
    try:
        with TestClient(app, client=("203.0.113.5", 4000)) as attacker:
            alice = TestClient(app, client=("198.51.100.7", 4000))  # the same running app, another address
            # An API token whose `sub` looks like the old login key spends model work, not alice's logins.
            token = auth_header(make_token(sub="chat-login:alice"))
            api = [attacker.post("/api/v1/analyze", json=_unit_request(), headers=token).status_code for _ in range(3)]
            guesses = [attacker.post("/login", data=wrong).status_code for _ in range(2)]
            locked = attacker.post("/login", data=right)  # the attacker's own bucket is spent, even for the right one
            own = alice.post("/login", data=right)  # alice, from her own address, is not locked out
        assert api == [415, 415, 429]
        assert guesses == [401, 401] and locked.status_code == 401
        assert own.status_code == 200 and own.json() == {"success": True}
    finally:
        open_settings = tiny_settings.model_copy(update=common)
        create_app(open_settings, make_services(open_settings, ModelManager(open_settings)))  # the chat is open again


def test_json_nesting_is_limited_not_recursed() -> None:
    from app.api.intake import MAX_JSON_DEPTH, json_depth, parse_json_object
    from app.core.errors import InvalidInput

    def nested(depth: int) -> bytes:  # an object holding lists: `depth` levels in all
        return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    assert json_depth(parse_json_object(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
    for depth in (MAX_JSON_DEPTH + 1, 990, 5000):
        with pytest.raises(InvalidInput) as refused:
            parse_json_object(nested(depth))
        assert refused.value.code == "invalid_json"


# -- long text: refused up front from the tokenizer's count against the model's positions ----------------------
@pytest.fixture(scope="module")
def short_model_client(tiny_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A checkpoint whose text encoder has 64 positions (BART's 1024 stand for the same limit)."""
    from tests.tiny_models import build_tiny_florence

    checkpoint = build_tiny_florence(tmp_path_factory.mktemp("tiny-florence-64"), max_position_embeddings=64)
    settings = api_settings(
        tiny_settings.model_copy(update={"model_id": str(checkpoint)}),
        data_dir=tmp_path_factory.mktemp("hostile-short"),
        preload=True,
        embedded_worker=False,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        app.state.api.preload_thread.join(timeout=120)
        yield test_client


@pytest.mark.parametrize(
    ("task", "words", "status"),
    [
        # 17 image tokens + <s> + the expanded prompt + </s> must fit 64 positions: the grounding prompt
        # fits 37 words and not 38, open-vocabulary detection 40 and not 41 (found by running the model).
        ("CAPTION_TO_PHRASE_GROUNDING", 37, 200),
        ("CAPTION_TO_PHRASE_GROUNDING", 38, 400),
        ("OPEN_VOCABULARY_DETECTION", 40, 200),
        ("OPEN_VOCABULARY_DETECTION", 41, 400),
        ("CAPTION_TO_PHRASE_GROUNDING", 500, 400),
    ],
)
def test_text_longer_than_the_model_positions_is_400_text_too_long(
    short_model_client: TestClient, task: str, words: int, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    response = short_model_client.post("/api/v1/analyze", json=_analyze("a " * words, task=task), headers=auth_header())
    if status == 200:
        assert response.status_code == 200, response.text[:300]
        return
    assert_refused(response, 400, "text_too_long", caplog)
    assert "64 positions" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("address", "public", "with_loopback_allowed"),
    [
        ("::127.0.0.1", False, True),  # IPv4-compatible
        ("::8.8.8.8", True, True),
        ("::ffff:0:127.0.0.1", False, True),  # SIIT-translated
        ("::ffff:0:8.8.8.8", True, True),
        ("::ffff:127.0.0.1", False, True),  # IPv4-mapped
        ("::ffff:8.8.8.8", True, True),
        ("64:ff9b::7f00:1", False, True),  # NAT64 well-known prefix
        ("64:ff9b::808:808", True, True),
        ("64:ff9b:1::808:808", False, False),  # local-use NAT64: the operator's own gateway
        ("2002:7f00:1::", False, True),  # 6to4
        ("2002:808:808::", True, True),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False, False),  # Teredo (the prefix itself is not public)
        ("::ffff:0:a9fe:a9fe", False, False),  # SIIT of the metadata address
    ],
)
def test_ipv6_forms_embedding_ipv4_pass_only_when_the_ipv4_would(
    address: str, public: bool, with_loopback_allowed: bool
) -> None:
    import ipaddress

    from app.services.fetch import is_address_allowed, parse_networks

    assert is_address_allowed(ipaddress.ip_address(address)) is public
    # Allowlisting the embedded network opens the forms that embed an address in it, and only those.
    assert is_address_allowed(ipaddress.ip_address(address), parse_networks("127.0.0.0/8")) is with_loopback_allowed


@pytest.mark.parametrize(
    ("route", "content"),
    [
        ("/api/v1/analyze", b"{not even json"),
        ("/api/v1/classify", b"{}"),
        ("/api/zero-shot", b"{}"),
        ("/api/classify/resnet", b"{}"),
    ],
)
def test_a_full_queue_refuses_before_reading_the_body_or_the_token(
    client: TestClient, route: str, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    manager = client.app.state.services.manager  # type: ignore[attr-defined]
    capacity = manager.settings.max_queue_size
    manager._pending += capacity  # as if `capacity` requests were waiting for the model
    try:
        # No token and a body that is not even JSON: the refusal comes first, at the cost of one counter read.
        response = client.post(route, content=content, headers={"Content-Type": "application/json"})
    finally:
        manager._pending -= capacity
    assert_refused(response, 503, "busy", caplog)
    assert response.headers["retry-after"] == "5"
    assert client.post(route, content=content, headers={"Content-Type": "application/json"}).status_code in (400, 401)
