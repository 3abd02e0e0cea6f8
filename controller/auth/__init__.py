"""Authentication and authorisation: one home for who is calling and what they may do.

* ``_secrets``       bcrypt password hashes, API keys, login tokens, their digests
* ``_identity``      ``Identity`` and the admin check
* ``_authenticator`` bearer token to ``Identity`` (cached), login
* ``_last_used``     API key ``last_used`` times, buffered and written in batches
* ``_http``          the bearer token of an aiohttp request, the request's ``Identity``

The ``/api/auth`` endpoints (``controller.api.auth``) only translate HTTP.
"""

from controller.auth._authenticator import Authenticator
from controller.auth._http import IDENTITY, bearer_token, identity_of
from controller.auth._identity import Identity, require_admin
from controller.auth._secrets import (
    API_KEY_PREFIX,
    LOGIN_TOKEN_PREFIX,
    check_password,
    digests_equal,
    hash_password,
    key_hint,
    new_api_key,
    new_login_token,
    new_password,
    token_digest,
)

__all__ = [
    "API_KEY_PREFIX",
    "IDENTITY",
    "LOGIN_TOKEN_PREFIX",
    "Authenticator",
    "Identity",
    "bearer_token",
    "check_password",
    "digests_equal",
    "hash_password",
    "identity_of",
    "key_hint",
    "new_api_key",
    "new_login_token",
    "new_password",
    "require_admin",
    "token_digest",
]
