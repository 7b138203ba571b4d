"""Anchors: the audit chain's head (sequence and hash, at a time) written down outside the
database, signed with Ed25519 when a key is given, so that a truncated or fully rewritten
chain is told apart from an intact one.

An anchor is one line of text, found wherever it was kept (a Slack channel export, a copy
into a ticket, a SIEM search, a file that `breakglass audit anchor` appends to):

    breakglass-anchor v1 seq=1234 hash=<64 hex> at=2026-11-22T00:00:00Z sig=<base64>

The signature covers the line up to (not including) ` sig=`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

K = TypeVar("K", Ed25519PrivateKey, Ed25519PublicKey)

PREFIX = "breakglass-anchor v1"
_LINE = re.compile(
    r"breakglass-anchor v1 seq=(?P<seq>\d{1,18}) hash=(?P<hash>[0-9a-f]{64}) "
    r"at=(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)(?: sig=(?P<sig>[A-Za-z0-9+/=]{40,120}))?"
)


class KeyProblem(ValueError):
    """A signing or public key that cannot be used; the message says why (never the key)."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    at: datetime
    signature: str | None = None
    where: str = ""  # where it was read (file:line), for messages

    @property
    def payload(self) -> str:
        at = self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{PREFIX} seq={self.seq} hash={self.hash} at={at}"

    def line(self) -> str:
        return self.payload + (f" sig={self.signature}" if self.signature else "")

    def signed(self, key: Ed25519PrivateKey | None) -> Anchor:
        if key is None:
            return self
        sig = base64.b64encode(key.sign(self.payload.encode())).decode()
        return replace(self, signature=sig)

    def signature_ok(self, public: Ed25519PublicKey) -> bool:
        if not self.signature:
            return False
        try:
            public.verify(base64.b64decode(self.signature), self.payload.encode())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def anchor_of(seq: int, hash_: str, at: datetime) -> Anchor:
    """An anchor of the head (whole seconds: what the line can carry)."""
    return Anchor(seq, hash_, at.astimezone(UTC).replace(microsecond=0))


def parse(text: str, source: str = "") -> list[Anchor]:
    """Every anchor line in `text`, wherever it sits in a line (a Slack export's JSON, a
    log, a copy-paste), in order."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        # JSON (a Slack export) may escape the newline before the line and every slash of
        # its base64 signature (`\/`): read the line as it was posted.
        for m in _LINE.finditer(line.replace("\\n", " ").replace("\\/", "/")):
            try:
                at = datetime.strptime(m["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError:  # no such time (month 13): not a line the bot wrote
                continue
            found.append(
                Anchor(int(m["seq"]), m["hash"], at, m["sig"], f"{source}:{number}".lstrip(":"))
            )
    return found


_KEY_FILE_LIMIT = 64 * 1024  # a key file is a few hundred bytes; never read a huge one whole


def _material(value: str) -> bytes:
    """A key given as PEM text, a file holding it, or base64 of the raw 32 bytes."""
    value = value.strip()
    if not value.startswith("-----BEGIN") and "\n" not in value and len(value) < 4096:
        path = Path(value)
        try:
            if path.is_file():
                with path.open("rb") as f:
                    return f.read(_KEY_FILE_LIMIT).strip()
        except OSError as exc:  # it names a file the process may not read: say so
            raise KeyProblem(f"cannot read the key file ({exc.strerror})") from None
    return value.encode()


def load_private(value: str) -> Ed25519PrivateKey:
    """AUDIT_SIGNING_KEY: an Ed25519 private key (PKCS#8 PEM, a file holding it, or base64 of
    the 32-byte seed)."""
    return _load(
        value,
        lambda data: serialization.load_pem_private_key(data, password=None),
        Ed25519PrivateKey,
        Ed25519PrivateKey.from_private_bytes,
        "private key",
        "seed",
    )


def load_public(value: str) -> Ed25519PublicKey:
    """A public key to check anchors with: PEM, a file holding it, or base64 of 32 bytes."""
    return _load(
        value,
        serialization.load_pem_public_key,
        Ed25519PublicKey,
        Ed25519PublicKey.from_public_bytes,
        "public key",
        "public key",
    )


def _load(
    value: str,
    from_pem: Callable[[bytes], object],
    kind: type[K],
    from_raw: Callable[[bytes], K],
    pem_what: str,
    raw_what: str,
) -> K:
    """An Ed25519 key of `kind` from PEM, a file holding it, or base64 of its 32 raw bytes."""
    data = _material(value)
    if data.startswith(b"-----BEGIN"):
        try:
            key = from_pem(data)
        except (ValueError, TypeError) as exc:
            raise KeyProblem(f"not a usable PEM {pem_what} ({type(exc).__name__})") from None
        if not isinstance(key, kind):
            raise KeyProblem("the PEM key is not an Ed25519 key") from None
        return key
    raw = _b64(data)
    if len(raw) != 32:
        raise KeyProblem(
            f"an Ed25519 {raw_what} is 32 bytes (base64); this is not one, nor an existing file"
        )
    return from_raw(raw)


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem("neither PEM nor base64, nor the path of an existing file") from None


def public_text(key: Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 bytes: what operators hand to `--public-key`."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def new_private_pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
