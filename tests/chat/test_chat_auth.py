"""Optional chat login: PBKDF2 hashes and the CHAT_USERS setting."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest

from app.chat.auth import ChatUsers, hash_password, verify_password
from app.core.errors import ConfigError

FAST = 100_000  # the lowest accepted cost keeps the tests quick


def test_hash_format_is_django_compatible_pbkdf2() -> None:
    encoded = hash_password("s3cret", iterations=FAST, salt="abc")
    digest = hashlib.pbkdf2_hmac("sha256", b"s3cret", b"abc", FAST)
    assert encoded == f"pbkdf2_sha256${FAST}$abc${base64.b64encode(digest).decode()}"
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)


def test_salts_differ_between_hashes() -> None:
    assert hash_password("pw", iterations=FAST) != hash_password("pw", iterations=FAST)


@pytest.mark.parametrize("encoded", ["", "plain", "md5$1$a$b", "pbkdf2_sha256$x$a$b", "pbkdf2_sha256$0$a$b"])
def test_malformed_hashes_never_match(encoded: str) -> None:
    assert not verify_password("anything", encoded)


def test_chat_users_parse_and_authenticate() -> None:
    alice, bob = hash_password("wonder", iterations=FAST), hash_password("builder", iterations=FAST)
    users = ChatUsers.parse(f" alice:{alice} , bob:{bob},")
    assert users.enabled and set(users.hashes) == {"alice", "bob"}
    assert users.authenticate("alice", "wonder")
    assert not users.authenticate("alice", "builder")
    assert not users.authenticate("mallory", "wonder")


def test_empty_setting_means_an_open_chat() -> None:
    assert not ChatUsers.parse("").enabled
    assert not ChatUsers.parse(" , ").enabled


@pytest.mark.parametrize(
    "spec",
    [
        "alice",
        "alice:",
        ":pbkdf2_sha256$600000$a$b",
        "alice:plaintext",
        "alice:pbkdf2_sha256$1000$a$b",
        "a:pbkdf2_sha256$x",
    ],
)
def test_bad_user_entries_are_refused_with_a_hint(spec: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ChatUsers.parse(spec)
    assert "CHAT_USERS" in raised.value.message


def test_hash_password_command_prints_a_chat_users_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.main import main

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["hash-password", "--user", "bob"]) == 0
    entry = capsys.readouterr().out.strip()
    assert ChatUsers.parse(entry).authenticate("bob", "correct horse")

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hash-password"]) == 2
    assert capsys.readouterr().err == "error: Use a password of at least 8 characters.\n"
