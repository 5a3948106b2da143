"""JWT bearer auth, the token command, rate limiting and CORS on /api/* (no model work needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from app.api.auth import build_verifier, parse_ttl, token_for_cli
from app.core.config import Settings
from app.core.errors import ConfigError, InvalidInput
from app.core.tasks import all_tasks
from app.serving.server import create_app
from tests.api_support import (
    AUDIENCE,
    ISSUER,
    JWT_SECRET,
    api_settings,
    auth_header,
    make_token,
    png_bytes,
    running_app,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(tiny_settings: Settings) -> Iterator[TestClient]:
    with running_app(api_settings(tiny_settings, preload=False)) as (_, test_client):
        yield test_client


def get_tasks(client: TestClient, token: str | None = None, headers: dict[str, str] | None = None) -> dict:
    response = client.get("/api/v1/tasks", headers=headers if headers is not None else auth_header(token))
    return {"status": response.status_code, "body": response.json(), "headers": response.headers}


def test_a_valid_token_gets_the_task_catalogue(client: TestClient) -> None:
    answer = get_tasks(client)
    assert answer["status"] == 200
    tasks = answer["body"]["tasks"]
    assert [t["token"] for t in tasks] == [spec.token for spec in all_tasks()]
    assert tasks[0] == {
        "token": "<CAPTION>",
        "short_name": "CAPTION",
        "name": "Caption",
        "description": "One sentence about the image.",
        "input": "none",
        "output": "text",
        "aliases": ["caption"],
        "backend": "florence2",
    }


@pytest.mark.parametrize(
    ("token", "code", "message_part"),
    [
        (jwt.encode({"sub": "eve", "exp": int(time.time()) + 600, "aud": AUDIENCE, "iss": ISSUER}, None, "none"),
         "invalid_token", "signature, algorithm"),
        (make_token(ttl_s=-120), "token_expired", "expired"),
        (make_token(exp=None), "invalid_token", "'exp'"),
        (make_token(sub=None), "invalid_token", "'sub'"),
        (make_token(key="another-secret-that-is-long-enough-0123456789"), "invalid_token", "signature"),
        (make_token(aud="someone-else"), "invalid_token", "audience"),
        (make_token(aud=None), "invalid_token", "'aud'"),
        (make_token(iss="https://evil.test"), "invalid_token", "issuer"),
        (make_token(key=JWT_SECRET, algorithm="HS512"), "invalid_token", "algorithm"),
        ("not.a.jwt", "invalid_token", "format"),
        ("x" * 9000, "invalid_token", "too long"),
    ],
    ids=["alg-none", "expired", "no-exp", "no-sub", "wrong-key", "wrong-aud", "no-aud", "wrong-iss", "other-alg",
         "garbage", "huge"],
)  # fmt: skip
def test_bad_tokens_get_401(client: TestClient, token: str, code: str, message_part: str) -> None:
    answer = get_tasks(client, token)
    assert answer["status"] == 401
    assert answer["body"]["error"]["code"] == code
    assert message_part in answer["body"]["error"]["message"]
    assert answer["headers"]["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YWxpY2U6cHc="}, {"Authorization": "Bearer"}])
def test_missing_bearer_token_gets_401(client: TestClient, headers: dict[str, str]) -> None:
    answer = get_tasks(client, headers=headers)
    assert (answer["status"], answer["body"]["error"]["code"]) == (401, "missing_token")


def test_expiry_within_the_leeway_is_accepted(client: TestClient) -> None:
    assert get_tasks(client, make_token(ttl_s=-5))["status"] == 200


def test_probes_and_metrics_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/metrics").status_code == 200


# -- public-key tokens --------------------------------------------------------------------------------
def _pem_public(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_rs256_and_es256_public_keys(tiny_settings: Settings, tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "ec.pem"
    key_file.write_text(_pem_public(ec_key))
    for private, public, algorithm in ((rsa_key, _pem_public(rsa_key), "RS256"), (ec_key, str(key_file), "ES256")):
        settings = api_settings(tiny_settings, preload=False, jwt_secret=None, jwt_public_key=public)
        verifier = build_verifier(settings)
        assert verifier is not None and verifier.algorithms == (algorithm,)
        with running_app(settings) as (_, client):
            assert get_tasks(client, make_token(key=private, algorithm=algorithm))["status"] == 200
            # Algorithm confusion: an HS256 token whose HMAC key is the (public) key text must not pass.
            pem = Path(public).read_text() if not public.startswith("-----") else public
            assert get_tasks(client, _hs256_forged_with(pem.encode()))["status"] == 401


def _hs256_forged_with(secret: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": "eve", "exp": int(time.time()) + 60, "aud": AUDIENCE, "iss": ISSUER}
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.mark.parametrize(
    ("overrides", "message_part"),
    [
        ({"jwt_secret": "too-short"}, "at least 32 bytes"),
        ({"jwt_algorithms": "HS256,RS256"}, "cannot mix"),
        ({"jwt_algorithms": "none"}, "'none' is not accepted"),
        ({"jwt_algorithms": "RS256"}, "needs JWT_PUBLIC_KEY"),
        ({"jwt_secret": None, "jwt_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"},
         "not a PEM public key"),
        ({"jwt_secret": None, "jwt_public_key": "/nonexistent/key.pem"}, "cannot read"),
    ],
)  # fmt: skip
def test_inconsistent_auth_settings_stop_the_server(
    tiny_settings: Settings, overrides: dict[str, object], message_part: str
) -> None:
    with pytest.raises(ConfigError, match=message_part):
        create_app(api_settings(tiny_settings, preload=False, **overrides))


def test_without_a_key_the_api_answers_503_with_the_fix(tiny_settings: Settings) -> None:
    with running_app(api_settings(tiny_settings, preload=False, jwt_secret=None)) as (_, client):
        response = client.get("/api/v1/tasks", headers=auth_header())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_not_configured"
    assert "JWT_SECRET" in response.json()["error"]["message"]


def test_auth_disabled_needs_no_token_and_warns(tiny_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.api.auth"):
        app_settings = api_settings(tiny_settings, preload=False, jwt_secret=None, auth_disabled=True)
        with running_app(app_settings) as (_, client):
            assert client.get("/api/v1/tasks").status_code == 200
    assert any("AUTH_DISABLED=true" in record.message for record in caplog.records)


# -- rate limit: the token's sub is the identity ----------------------------------------------------
def test_rate_limit_per_subject_with_retry_after(tiny_settings: Settings) -> None:
    settings = api_settings(tiny_settings, preload=False, rate_limit="2/minute")
    body = {"task": "OD", "images": [{"base64": "%%% not base64 %%%"}]}  # fails before any model work

    def post(sub: str) -> httpx.Response:
        return client.post("/api/v1/analyze", headers=auth_header(make_token(sub)), json=body)

    with running_app(settings) as (_, client):
        carol = [post("carol") for _ in range(3)]
        dave = post("dave")
    assert [r.status_code for r in carol] == [400, 400, 429]
    assert carol[0].json()["error"]["code"] == "invalid_base64"
    limited = carol[2]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert dave.status_code == 400


# -- CORS ---------------------------------------------------------------------------------------------
def test_cors_allows_only_listed_origins_on_the_api(tiny_settings: Settings) -> None:
    settings = api_settings(tiny_settings, preload=False, cors_origins="https://app.example, https://b.example/")
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with running_app(settings) as (_, client):
        good = client.options("/api/v1/analyze", headers={"Origin": "https://b.example", **preflight})
        evil = client.options("/api/v1/analyze", headers={"Origin": "https://evil.example", **preflight})
        simple = client.get("/api/v1/tasks", headers={"Origin": "https://app.example", **auth_header()})
        probe = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://b.example"
    assert "access-control-allow-credentials" not in good.headers
    assert evil.status_code == 400
    assert "access-control-allow-origin" not in evil.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in probe.headers


def test_cors_wildcard_with_credentials_is_refused(tiny_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        create_app(api_settings(tiny_settings, preload=False, cors_origins="*", cors_allow_credentials=True))


# -- the token command --------------------------------------------------------------------------------
def test_token_command_mints_a_token_the_server_accepts(tiny_settings: Settings) -> None:
    env = {
        **os.environ,
        "JWT_SECRET": JWT_SECRET,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "token", "--sub", "erin", "--ttl", "2h"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == "erin"
    assert claims["exp"] - claims["iat"] == 7200
    with running_app(api_settings(tiny_settings, preload=False)) as (_, client):
        assert get_tasks(client, token)["status"] == 200


def test_token_command_errors_are_one_line(tiny_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        token_for_cli(api_settings(tiny_settings, jwt_secret=None), "x", "1h")
    with pytest.raises(InvalidInput, match="not like"):
        token_for_cli(api_settings(tiny_settings), "x", "1 fortnight")


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("1h", 3600), ("7D", 604800)])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


def test_input_errors_are_checked_before_the_model_is_needed(client: TestClient) -> None:
    # PRELOAD=false and no analysis yet: a request-level 400 must not wait for (or trigger) a model load.
    response = client.post(
        "/api/v1/analyze",
        headers=auth_header(),
        data={"task": "OD", "text": "cats"},
        files={"files": ("a.png", png_bytes(), "image/png")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unexpected_text"
    assert client.get("/readyz").json()["error"]["code"] == "model_not_loaded"
