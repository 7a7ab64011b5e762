"""Artifact signatures: HMAC-SHA256 over an artifact's digest with the registry's signing key.

The registry signs every version it registers; every loader (serving, the trainer comparing
with its champion) checks the signature before trusting the digest, and the digest before
loading the bytes. An artifact copied into the store by hand, or a row edited in the
database, therefore cannot be served.

>>> signature = sign("k", "sha256:" + "0" * 64)
>>> verify("k", "sha256:" + "0" * 64, signature), verify("other", "sha256:" + "0" * 64, signature)
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "hmac-sha256:"


def sign(key: str, digest: str) -> str:
    return PREFIX + hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


def verify(key: str, digest: str, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(sign(key, digest), signature or "")
