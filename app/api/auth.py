"""JWT bearer auth for `/api/*` (PyJWT) and the `token` command that mints tokens for local use.

Algorithms come from configuration only, never from the token: HS* with `JWT_SECRET`, or
RS*/PS*/ES*/EdDSA with `JWT_PUBLIC_KEY`; the two families cannot be mixed (that is how
algorithm-confusion attacks start). `exp` and `sub` are required; `sub` is the rate-limit identity.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import get_api_state
from app.core.config import Settings
from app.core.errors import ConfigError, InvalidInput, Unauthorized, Unavailable

log = logging.getLogger(__name__)

SYMMETRIC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
MAX_TOKEN_CHARS = 8192
MAX_TTL_S = 366 * 24 * 3600
_TTL_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

bearer_scheme = HTTPBearer(auto_error=False, description="JWT from `python -m app token --sub NAME`")


class AuthNotConfigured(Unavailable):
    code = "auth_not_configured"


@dataclass(frozen=True)
class Principal:
    sub: str
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenVerifier:
    key: Any  # the HMAC secret or a loaded public key object
    algorithms: tuple[str, ...]
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("The bearer token is too long.", code="invalid_token")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired; mint a new one.", code="token_expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"The token lacks the required {exc.claim!r} claim.", code="invalid_token") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("The token is for another audience.", code="invalid_token") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("The token is from another issuer.", code="invalid_token") from None
        except jwt.InvalidTokenError:
            raise Unauthorized(
                "The token is not valid (signature, algorithm or format).", code="invalid_token"
            ) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise Unauthorized("The token's 'sub' claim is empty.", code="invalid_token")
        return Principal(sub=sub, claims=claims)


@dataclass(frozen=True)
class AuthPolicy:
    """What `/api/*` requires: nothing (explicitly disabled), a valid token, or it cannot serve (no key)."""

    verifier: TokenVerifier | None
    disabled: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthPolicy:
        if settings.auth_disabled:
            log.warning("AUTH_DISABLED=true: /api/* accepts requests WITHOUT a token; use this only locally")
            return cls(verifier=None, disabled=True)
        verifier = build_verifier(settings)
        if verifier is None:
            log.warning(
                "no JWT_SECRET or JWT_PUBLIC_KEY: /api/* answers 503 auth_not_configured "
                "(set one, or AUTH_DISABLED=true for local use)"
            )
        return cls(verifier=verifier)


def build_verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier the settings describe, None when no key is configured, or `ConfigError`."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    public_pem = _read_public_key(settings.jwt_public_key or "")
    if not secret and not public_pem:
        return None
    algorithms = _parse_algorithms(settings.jwt_algorithms)
    if not algorithms:
        if secret and public_pem:
            raise ConfigError("Both JWT_SECRET and JWT_PUBLIC_KEY are set: choose with JWT_ALGORITHMS.")
        algorithms = ("HS256",) if secret else (_algorithm_for_key(_load_public_key(public_pem)),)
    if algorithms[0] in SYMMETRIC:
        if not secret:
            raise ConfigError(f"JWT_ALGORITHMS={','.join(algorithms)} needs JWT_SECRET.")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes; generate one with "
                '`python -c "import secrets; print(secrets.token_urlsafe(48))"`.'
            )
        key: Any = secret
    else:
        if not public_pem:
            raise ConfigError(f"JWT_ALGORITHMS={','.join(algorithms)} needs JWT_PUBLIC_KEY.")
        key = _load_public_key(public_pem)
    return TokenVerifier(
        key=key,
        algorithms=algorithms,
        audience=settings.jwt_audience or None,
        issuer=settings.jwt_issuer or None,
        leeway_s=settings.jwt_leeway_s,
    )


def _parse_algorithms(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in SYMMETRIC + ASYMMETRIC:
            raise ConfigError(
                f"JWT_ALGORITHMS: {name!r} is not accepted; use some of {', '.join(SYMMETRIC + ASYMMETRIC)}."
            )
    if any(n in SYMMETRIC for n in names) and any(n in ASYMMETRIC for n in names):
        raise ConfigError("JWT_ALGORITHMS cannot mix HS* with public-key algorithms (algorithm confusion).")
    return names


def _read_public_key(value: str) -> str:
    value = value.strip()
    if not value or value.startswith("-----BEGIN"):
        return value
    path = Path(value).expanduser()
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"JWT_PUBLIC_KEY: cannot read {value!r} ({type(exc).__name__}).") from None


def _load_public_key(pem: str) -> Any:
    try:
        return serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeError):
        raise ConfigError("JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----).") from None


def _algorithm_for_key(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    eddsa = (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey, ed448.Ed448PublicKey, ed448.Ed448PrivateKey)
    if isinstance(key, eddsa):
        return "EdDSA"
    raise ConfigError(
        "Unsupported key type (JWT_PUBLIC_KEY or --private-key): use RSA, EC P-256/P-384/P-521 or Ed25519."
    )


# -- FastAPI dependency --------------------------------------------------------------------------------
async def require_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> Principal:
    """Who is calling: the token's `sub`, or the client address when auth is explicitly disabled."""
    policy = (await get_api_state(request)).auth
    if policy.disabled:
        client = request.client.host if request.client else "unknown"
        return Principal(sub=f"ip:{client}")
    if policy.verifier is None:
        raise AuthNotConfigured(
            "The API has no token key configured: set JWT_SECRET (or JWT_PUBLIC_KEY), "
            "or AUTH_DISABLED=true for local use.",
        )
    if credentials is None:
        raise Unauthorized(
            "Send 'Authorization: Bearer <token>'; mint one with `python -m app token --sub NAME`.",
            code="missing_token",
        )
    return policy.verifier.verify(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(require_principal)]


# -- minting (the `token` command) ---------------------------------------------------------------------
def parse_ttl(text: str) -> int:
    """`90`, `30s`, `15m`, `1h`, `7d` → seconds."""
    match = _TTL_RE.match(text)
    if not match:
        raise InvalidInput(f"TTL {text!r} is not like 30m, 1h or 7d.", code="invalid_ttl")
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2).lower()]
    if not 0 < seconds <= MAX_TTL_S:
        raise InvalidInput("TTL must be between 1 second and 366 days.", code="invalid_ttl")
    return seconds


def mint_token(
    settings: Settings, sub: str, ttl_s: int, private_key_pem: str | None = None, now: float | None = None
) -> str:
    """A token the running server accepts: HS* with JWT_SECRET, or signed with a private key."""
    if not sub.strip():
        raise InvalidInput("--sub must not be empty.", code="invalid_sub")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + ttl_s}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    configured = _parse_algorithms(settings.jwt_algorithms)
    if private_key_pem is not None:
        try:
            key: Any = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeError):
            raise InvalidInput(
                "The private key is not an unencrypted PEM private key.", code="invalid_private_key"
            ) from None
        algorithm = next((a for a in configured if a in ASYMMETRIC), None) or _algorithm_for_key(key)
    else:
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"Set JWT_SECRET (at least {MIN_SECRET_BYTES} bytes) to mint HS256 tokens, "
                "or pass --private-key for RS256/ES256."
            )
        key = secret
        algorithm = next((a for a in configured if a in SYMMETRIC), "HS256")
    return jwt.encode(claims, key, algorithm=algorithm)


def token_for_cli(settings: Settings, sub: str, ttl: str, private_key_path: str | None = None) -> str:
    """`python -m app token`: an unreadable key file is a one-line `AppError` like every other mistake."""
    try:
        pem = Path(private_key_path).expanduser().read_text(encoding="ascii") if private_key_path else None
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(f"cannot read the key: {exc}", code="invalid_private_key") from None
    return mint_token(settings, sub, parse_ttl(ttl), private_key_pem=pem)
