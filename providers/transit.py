"""Free text sealed at rest with Vault's transit engine (OpenBao has it built in).

A sealed value is stored as `sealed:<mount>/keys/<key>:<ciphertext>` (the ciphertext is
Vault's `vault:vN:…`): it names its key, so texts sealed before a policy change still open,
and anything without the prefix (text stored before encryption was turned on) is shown as it
is. Vault's key never leaves Vault; the bot sends plaintext to encrypt and ciphertext to
decrypt, over the same client (and the same token) it issues credentials with.
"""

from __future__ import annotations

import base64
import re

import hvac

from providers.base import VaultRejected
from providers.vault import vault_errors

PREFIX = "sealed:"
KEY_PATH = re.compile(
    r"^(?P<mount>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*)/keys/(?P<key>[A-Za-z0-9_.-]+)$"
)


def parse_key_path(path: str) -> tuple[str, str]:
    """`transit/keys/NAME` → (mount, key); ValueError with the expected shape otherwise."""
    m = KEY_PATH.match(path or "")
    if not m:
        raise ValueError(f"{path!r} is not a transit key path; write it like transit/keys/NAME")
    return m["mount"], m["key"]


def is_sealed(text: object) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


class Sealer:
    """Seals free text with one transit key (`path`, e.g. transit/keys/breakglass), or not
    at all when `path` is None; opens whatever was sealed, with the key it names."""

    def __init__(self, client: hvac.Client | None, path: str | None = None):
        self.client = client
        self.path = path
        self.mount, self.key = parse_key_path(path) if path else ("", "")

    @property
    def sealing(self) -> bool:
        return self.path is not None

    def seal(self, text: str | None) -> str | None:
        """The text encrypted (empty and None stay as they are; without a key, as is)."""
        if not text or self.path is None:
            return text
        assert self.client is not None
        with vault_errors(f"{self.mount}/encrypt/{self.key}"):
            resp = self.client.secrets.transit.encrypt_data(
                name=self.key,
                plaintext=base64.b64encode(text.encode()).decode(),
                mount_point=self.mount,
            )
            ciphertext = resp["data"]["ciphertext"]
        return f"{PREFIX}{self.mount}/keys/{self.key}:{ciphertext}"

    def open_many(self, texts: list[str | None]) -> list[str | None]:
        """The texts decrypted, in one call per key; text that is not sealed passes as is."""
        out = list(texts)
        by_key: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for i, text in enumerate(texts):
            if not is_sealed(text):
                continue
            path, _, ciphertext = text[len(PREFIX) :].partition(":")  # type: ignore[index]
            try:
                mount, key = parse_key_path(path)
            except ValueError:
                continue  # not ours after all (someone typed the prefix): shown as typed
            by_key.setdefault((mount, key), []).append((i, ciphertext))
        for (mount, key), items in by_key.items():
            if self.client is None:
                raise VaultRejected("a stored text is sealed and this process has no Vault")
            with vault_errors(f"{mount}/decrypt/{key}"):
                resp = self.client.secrets.transit.decrypt_data(
                    name=key,
                    ciphertext=items[0][1],
                    batch_input=[{"ciphertext": c} for _, c in items],
                    mount_point=mount,
                )
                results = resp["data"]["batch_results"]
            for (i, _), result in zip(items, results, strict=True):
                if result.get("error"):
                    raise VaultRejected(f"Vault could not decrypt a stored text ({mount}/{key})")
                out[i] = base64.b64decode(result["plaintext"]).decode()
        return out

    def open(self, text: str | None) -> str | None:
        return self.open_many([text])[0]
