"""Secrets: bcrypt password hashes, API keys and login tokens.

API keys are ``lmsk_`` + 256 random bits; login tokens ``lmst_`` + 256 bits.
Only SHA-256 hex digests of either are stored. bcrypt runs in a thread so a
login never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

import bcrypt

API_KEY_PREFIX = "lmsk_"
LOGIN_TOKEN_PREFIX = "lmst_"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_login_token() -> str:
    return LOGIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def key_hint(key: str) -> str:
    """What a listing shows of a key: its prefix, an ellipsis and the last 4 characters."""
    return f"{API_KEY_PREFIX}...{key[-4:]}"


def new_password() -> str:
    return secrets.token_urlsafe(18)


async def hash_password(password: str, rounds: int) -> str:
    salt = bcrypt.gensalt(rounds)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), salt)
    return hashed.decode()


async def check_password(password: str, hashed: str) -> bool:
    try:
        return await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed.encode())
    except ValueError:  # a malformed stored hash never matches
        return False
