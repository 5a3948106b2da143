"""Optional password login for the chat: users from `CHAT_USERS`, PBKDF2-SHA256 hashes from the stdlib.

Hashes use Django's documented layout `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>`, so they can
be made and checked with common tools and carry their own cost (iterations can be raised later).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from functools import lru_cache

from app.core.config import Settings
from app.core.errors import ConfigError, InvalidInput

ALGORITHM = "pbkdf2_sha256"
# OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS = 600_000
_MIN_ITERATIONS = 100_000
MIN_LOGIN_SECRET_CHARS = 32


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: str | None = None) -> str:
    if not password:
        raise InvalidInput("The password is empty.", code="empty_password")
    salt = salt or secrets.token_urlsafe(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), iterations)
    return f"{ALGORITHM}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def read_new_password() -> str:
    """Ask twice on a terminal; read one line from a pipe (`echo pw | python -m app hash-password`)."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New chat password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise InvalidInput("The two passwords differ.", code="password_mismatch")
    if len(password) < 8:
        raise InvalidInput("Use a password of at least 8 characters.", code="weak_password")
    return password


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of `password` against an encoded hash; malformed hashes never match."""
    try:
        algorithm, iterations_text, salt, expected = encoded.split("$", 3)
        iterations = int(iterations_text)
    except ValueError:
        return False
    if algorithm != ALGORITHM or iterations < 1:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii", "replace"), iterations)
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), expected)


@dataclass(frozen=True)
class ChatUsers:
    """The users allowed into the chat; empty means the chat is open."""

    hashes: dict[str, str]

    @classmethod
    def parse(cls, spec: str) -> ChatUsers:
        """`alice:pbkdf2_sha256$...,bob:pbkdf2_sha256$...` (the setting `CHAT_USERS`)."""
        hashes: dict[str, str] = {}
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            name, sep, encoded = entry.partition(":")
            name, encoded = name.strip(), encoded.strip()
            if not sep or not name or not encoded.startswith(f"{ALGORITHM}$"):
                shown = name or entry[:20]
                raise ConfigError(
                    f"CHAT_USERS entry for {shown!r} is not `name:{ALGORITHM}$...`; "
                    "make a hash with `python -m app hash-password`."
                )
            parts = encoded.split("$")
            if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) < _MIN_ITERATIONS:
                raise ConfigError(
                    f"CHAT_USERS hash for {name!r} is malformed or uses fewer than {_MIN_ITERATIONS:,} iterations; "
                    "make a new one with `python -m app hash-password`."
                )
            hashes[name] = encoded
        return cls(hashes)

    @property
    def enabled(self) -> bool:
        return bool(self.hashes)

    def authenticate(self, name: str, password: str) -> bool:
        encoded = self.hashes.get(name)
        if encoded is None:
            # Same work for unknown names, so response time does not reveal which names exist.
            verify_password(password, _dummy_hash())
            return False
        return verify_password(password, encoded)


def chat_login(settings: Settings) -> tuple[ChatUsers, str]:
    """The chat's users (`CHAT_USERS`) and the secret that signs their logins, or `ConfigError`.

    With users, the secret is required: from `CHAINLIT_AUTH_SECRET` (setting or environment)."""
    users = ChatUsers.parse(settings.chat_users)
    if not users.enabled:
        return users, ""
    secret = settings.chainlit_auth_secret.get_secret_value() if settings.chainlit_auth_secret else ""
    secret = secret or os.environ.get("CHAINLIT_AUTH_SECRET", "")
    if len(secret) < MIN_LOGIN_SECRET_CHARS:
        raise ConfigError(
            f"CHAT_USERS is set, so the chat needs CHAINLIT_AUTH_SECRET ({MIN_LOGIN_SECRET_CHARS}+ characters) "
            'to sign logins. Generate one with `python -c "import secrets; print(secrets.token_urlsafe(48))"` '
            "and put it in .env."
        )
    return users, secret


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password("not-a-user", salt="dummy-salt-000000")
