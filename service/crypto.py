"""Secrets at rest (webhook signing keys): Fernet, with rotation through a list of keys."""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.settings import get_settings


def derived_key(secret_key: str) -> bytes:
    """A Fernet key derived from SECRET_KEY, used when ENCRYPTION_KEYS is not set."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"claimcheck secrets at rest")
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    settings = get_settings()
    keys = [key.strip().encode() for key in settings.encryption_keys.split(",") if key.strip()]
    return MultiFernet([Fernet(key) for key in keys or [derived_key(settings.secret_key)]])


def encrypt(plaintext: str) -> str:
    """Encrypt with the newest key."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt with whichever configured key encrypted it."""
    return _fernet().decrypt(token.encode()).decode()


def reencrypt(token: str) -> str:
    """The same secret under the newest key (for rotating ENCRYPTION_KEYS)."""
    return _fernet().rotate(token.encode()).decode()
