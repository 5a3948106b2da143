"""Settings mistakes: every one is a `ConfigError` naming the setting, and `serve`/`worker` report it at
start in one line with a non-zero exit, before anything listens (no traceback from the server's start-up)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.chat.auth import hash_password
from app.core.config import Settings
from app.core.errors import AppError, ConfigError
from app.serving.startup_checks import check_settings

ROOT = Path(__file__).resolve().parents[2]
LONG_SECRET = "s" * 48
CHAT_USER = f"alice:{hash_password('wonderland', iterations=100_000)}"


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"rate_limit": "5/fortnight"}, "RATE_LIMIT"),
        ({"rate_limit": "many"}, "RATE_LIMIT"),
        ({"rate_limit_storage": "bogus://user:pw@host"}, "RATE_LIMIT_STORAGE"),
        ({"fetch_allow_networks": "10.0.0.0/8, not-a-net"}, "FETCH_ALLOW_NETWORKS"),
        ({"queue_url": "foo://user:pw@host"}, "QUEUE_URL"),
        ({"queue_url": "redis://:pw@host:port"}, "QUEUE_URL"),
        ({"jwt_secret": "too-short"}, "JWT_SECRET"),
        ({"jwt_secret": LONG_SECRET, "jwt_algorithms": "HS256,RS256"}, "JWT_ALGORITHMS"),
        ({"jwt_secret": None, "jwt_public_key": "/nonexistent/key.pem"}, "JWT_PUBLIC_KEY"),
        ({"cors_origins": "*", "cors_allow_credentials": True}, "CORS_ORIGINS"),
        ({"chat_users": "alice:plaintext"}, "CHAT_USERS"),
        ({"chat_users": CHAT_USER, "chainlit_auth_secret": None}, "CHAINLIT_AUTH_SECRET"),
        ({"chat_users": CHAT_USER, "chainlit_auth_secret": "short"}, "CHAINLIT_AUTH_SECRET"),
    ],
)  # fmt: skip
def test_each_settings_mistake_is_a_config_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object], setting: str
) -> None:
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)  # the chat's own variable is a fall-back
    with pytest.raises(ConfigError) as raised:
        check_settings(settings(**overrides))
    assert setting in raised.value.message
    assert (raised.value.code, raised.value.http_status) == ("invalid_setting", 500)
    assert "pw" not in raised.value.message  # a storage URL's password is never echoed


def test_valid_settings_pass_and_a_missing_jwt_key_is_left_to_the_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    check_settings(settings())  # defaults: no JWT key at all → `auth_not_configured` on requests, not a start error
    check_settings(settings(rate_limit="", fetch_allow_networks="10.0.0.0/8,192.168.1.5"))
    check_settings(settings(queue_url="redis://:pw@10.0.0.1:6379/0"))  # parsed only, never connected
    check_settings(settings(jwt_secret=LONG_SECRET, chat_users=CHAT_USER, chainlit_auth_secret=LONG_SECRET))
    check_settings(settings(jwt_secret="too-short", auth_disabled=True))  # the key is not used at all


def test_the_worker_checks_only_what_it_uses() -> None:
    check_settings(settings(jwt_secret="too-short", cors_origins="*", cors_allow_credentials=True), serving=False)
    with pytest.raises(ConfigError, match="RATE_LIMIT"):
        check_settings(settings(rate_limit="5/fortnight"), serving=False)
    with pytest.raises(ConfigError, match="QUEUE_URL"):
        check_settings(settings(queue_url="http://queue.example"), serving=False)


def test_config_error_is_an_app_error_but_not_a_client_mistake() -> None:
    error = ConfigError("RATE_LIMIT is wrong")
    assert isinstance(error, AppError)
    assert error.to_dict() == {"code": "invalid_setting", "message": "RATE_LIMIT is wrong"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("command", [["serve", "--port", "PORT"], ["worker"]])
def test_a_bad_rate_limit_stops_the_process_with_one_line(tmp_path: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_ID", "QUEUE_URL")}
    env.update(PYTHONPATH=str(ROOT), RATE_LIMIT="5/fortnight", DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1")
    argv = [str(free_port()) if arg == "PORT" else arg for arg in command]
    # cwd is an empty folder so a developer's .env cannot change the settings under test.
    proc = subprocess.run(
        [sys.executable, "-m", "app", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: RATE_LIMIT '5/fortnight' is not valid")
    assert "30/minute" in lines[0]  # the fix: what a valid value looks like
