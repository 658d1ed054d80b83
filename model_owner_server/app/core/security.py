"""API keys: high-entropy random tokens, stored only as sha256 digests, compared in constant time.

A key looks like `sot_<key_id>_<secret>`; the id (not secret) finds the row, then the digest of the
whole key is compared with `hmac.compare_digest`. sha256 (not a slow password hash) is enough here
because the secret carries 256 bits of randomness: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

PREFIX = "sot"


def new_api_key() -> tuple[str, str, str]:
    """(key_id, full key shown once, sha256 digest to store)."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isalnum() or len(parts[1]) > 40:
        return None
    return parts[1]


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time comparison of two strings (digests or keys)."""
    return hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True)
class Principal:
    """Who is calling: the model owner (admin key) or one data owner."""

    role: Literal["admin", "owner"]
    owner_id: str | None = None  # None for the admin

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
