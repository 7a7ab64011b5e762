"""Version signatures: Ed25519, made only by the registry, checked by every loader.

The registry holds the private key and signs each version it registers; serving and the
trainer hold only the public key. A signature covers a canonical encoding of what decides how
a model is used — its name, its version number, its artifact's digest and the SHA-256 of its
input schema (category order decides the encoding) — so a row edited in the registry's
database, two versions' digests swapped, or an artifact copied in by hand is refused by every
loader, and no service but the registry can sign.

>>> private, public = generate_keypair()
>>> schema, digest = {"name": "demo", "features": []}, "sha256:" + "0" * 64
>>> signature = Signer(private).sign("demo", 3, digest, schema)
>>> Verifier(public).check("demo", 3, digest, schema, signature)  # nothing: the registry's
>>> try:
...     Verifier(public).check("demo", 4, digest, schema, signature)
... except SignatureRefused as exc:
...     print(exc)
demo v4: the signature does not match this version (name, number, digest and input schema)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

PREFIX = "ed25519:"
LEGACY_PREFIX = "hmac-sha256:"

# NOTE: the development key pair is derived from a public seed: anyone can sign with it, so
# it is accepted only with CTLOOP_DEV_MODE=true (shared.settings refuses it otherwise).
DEV_SEED = hashlib.sha256(b"ctloop development signing key: never use outside dev mode").digest()


class SignatureRefused(ValueError):
    """A version's signature is missing, malformed, of the retired scheme, or not the
    registry's over this version."""


class BadKey(ValueError):
    """A configured key is not a base64 Ed25519 key."""


def _b64decode(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey(f"{what} is not base64: {exc}") from None
    if len(raw) != size:
        raise BadKey(f"{what} must be {size} bytes of base64, got {len(raw)}")
    return raw


def legacy_hmac_valid(key: str, digest: str, signature: str) -> bool:
    """Whether `signature` is the retired scheme's HMAC-SHA256 of `digest` under `key` (what a
    registry re-signs once, at start-up, with CTLOOP_LEGACY_SIGNING_KEY)."""
    expected = LEGACY_PREFIX + hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()
    return bool(key) and hmac.compare_digest(expected, signature)


def generate_keypair() -> tuple[str, str]:
    """A new key pair as (private, public), each the base64 of its 32 raw bytes."""
    return _encode(Ed25519PrivateKey.generate())


def dev_keypair() -> tuple[str, str]:
    """The development key pair (public: see DEV_SEED)."""
    return _encode(Ed25519PrivateKey.from_private_bytes(DEV_SEED))


def _encode(key: Ed25519PrivateKey) -> tuple[str, str]:
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def public_of(private: str) -> str:
    """The public key (base64) that belongs to a private key (base64)."""
    return _encode(Ed25519PrivateKey.from_private_bytes(_b64decode(private, 32, "the private key")))[1]


def schema_hash(input_schema: Mapping[str, object]) -> str:
    """SHA-256 of the schema as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(input_schema, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(name: str, version: int, digest: str, input_schema: Mapping[str, object]) -> bytes:
    """The bytes a signature covers."""
    return json.dumps(
        {"digest": digest, "model": name, "schema_sha256": schema_hash(input_schema), "version": version},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


class Signer:
    """Signs versions; only the registry has one."""

    def __init__(self, private_key: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(_b64decode(private_key, 32, "the private key"))
        self.public_key = public_of(private_key)

    def sign(self, name: str, version: int, digest: str, input_schema: Mapping[str, object]) -> str:
        signature = self._key.sign(claim(name, version, digest, input_schema))
        return PREFIX + base64.urlsafe_b64encode(signature).decode().rstrip("=")


class Verifier:
    """Checks versions' signatures with the registry's public key."""

    def __init__(self, public_key: str) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(_b64decode(public_key, 32, "the public key"))

    def check(
        self,
        name: str,
        version: int,
        digest: str,
        input_schema: Mapping[str, object],
        signature: str | None,
    ) -> None:
        """Nothing when the signature is the registry's over exactly this version; otherwise
        SignatureRefused saying why."""
        where = f"{name} v{version}"
        if not signature:
            raise SignatureRefused(f"{where} is unsigned")
        if signature.startswith(LEGACY_PREFIX):
            raise SignatureRefused(
                f"{where} carries a retired HMAC signature; restart the registry once with "
                "CTLOOP_LEGACY_SIGNING_KEY set to the old CTLOOP_SIGNING_KEY to re-sign it "
                "(docs/security.md)"
            )
        if not signature.startswith(PREFIX):
            raise SignatureRefused(f"{where}: unknown signature scheme")
        encoded = signature[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            self._key.verify(raw, claim(name, version, digest, input_schema))
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureRefused(
                f"{where}: the signature does not match this version (name, number, digest and input schema)"
            ) from None
