"""Secrets pasted into free text, masked: one function for everything the bot stores, posts or
logs as text a person or a library wrote (justification, ticket, reasons, notes, log lines).

A secret is replaced by a marker that says what was there (`[redacted vault-token]`), so a
reader knows something was removed and what to rotate. The rules follow the formats the
issuers document (and that GitHub secret scanning, gitleaks and detect-secrets look for);
look-alikes that are not secrets (a git SHA, a UUID, a Slack user id, "password policy")
stay as typed. `mask` is idempotent, and no marker can be taken for a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

MARKER = "[redacted {kind}]"
_MARKED = "[redacted "

# What each kind is called when the person who pasted it is told.
KIND_NAMES = {
    "vault-token": "a Vault token",
    "aws-access-key-id": "an AWS access key id",
    "aws-secret-key": "an AWS secret access key",
    "private-key": "a private key",
    "jwt": "a JSON Web Token",
    "slack-token": "a Slack token",
    "slack-webhook": "a Slack webhook URL",
    "github-token": "a GitHub token",
    "password": "a password",
    "token": "a token",
    "secret": "a secret",
}


class Redacted(NamedTuple):
    """Text with its secrets masked, and the kinds masked (distinct)."""

    text: str
    kinds: tuple[str, ...]


def _marker(kind: str) -> str:
    return MARKER.format(kind=kind)


# ---- the rules, applied in this order ---------------------------------------------------

# PEM and OpenSSH private keys, PGP private key blocks; a block cut short (no END line) is
# masked up to the end of its base64.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]{0,20000}?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=:,\s-]*)"
)
# Incoming webhooks and workflow triggers: the path is the secret.
_SLACK_WEBHOOK = re.compile(
    r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_+-]+"
)
# scheme://user:password@host: the password only; user and host stay readable.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@?#]*:)(?P<secret>[^\s@/?#]+)(?=@)"
)
# header.payload.signature, base64url; the header of every JWT starts with '{"' = eyJ.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*")
# Vault 1.10+ (hvs. service, hvb. batch, hvr. recovery), any length; the legacy forms that
# OpenBao still issues: s. and r. plus 24 base62 characters, b. batch tokens (base64url of a
# protobuf, always starting AAAAAQ). A namespace suffix (.AbCd1) comes along. Letters-only
# s.xxx is a method call in code (`s.getConfigurationValues`), as gitleaks allows too.
_VAULT_TOKEN = re.compile(
    r"(?<![\w.])(?:hv[sbr]\.[A-Za-z0-9_-]{20,}|[sr]\.(?![A-Za-z]{24}\b)[A-Za-z0-9]{24}"
    r"|b\.AAAAAQ[A-Za-z0-9_-]{20,})(?:\.[A-Za-z0-9]{4,8})?(?![A-Za-z0-9_])"
)
# Access key ids: long-term (AKIA), temporary (ASIA), and the two rarer key kinds.
_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])")
# Bot, user, workspace, legacy and refresh tokens; configuration tokens (xoxe.xoxp-...);
# app-level tokens (xapp-1-...).
_SLACK_TOKEN = re.compile(
    r"(?<![\w-])(?:xoxe\.)?xox[abposre]-[A-Za-z0-9-]{10,}|(?<![\w-])xapp-\d-[A-Za-z0-9-]{10,}"
)
# Classic tokens (ghp_ personal, gho_ OAuth, ghu_ user-to-server, ghs_ server-to-server,
# ghr_ refresh: 36 base62 characters) and fine-grained personal access tokens.
_GITHUB_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})"
    r"(?![A-Za-z0-9_])"
)
# `Authorization: Bearer xyz` (as pasted from a curl command): the credential, not the word.
_AUTHORIZATION = re.compile(
    r"(?i)(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)"
    r"(?P<secret>[A-Za-z0-9._~+/=-]{8,})"
)
# name=value and name: value pairs whose name says the value is secret (quoted or not,
# JSON and YAML included): password=, passwd:, pwd=, secret=, X-Vault-Token:, api_key=, ...
# The name starts a word and its parts are bounded: a long run of word characters is tried
# once, not once per position (mask runs on every log line; it must stay linear).
_PAIR = re.compile(
    r"(?i)(?<![\w.-])(?P<key>[\w.-]{0,40}?(?:passw(?:or)?d|passphrase|pwd|secret|token"
    r"|api[_-]?key|access[_-]?key|private[_-]?key)[\w.-]{0,40}+)"
    r"(?P<sep>[\"']?\s*(?:=>|[:=])\s*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"']+)"
)
# Names of non-secrets about a token or key ("token_accessor: abc", "token_ttl=1h").
_SAFE_NAME = re.compile(
    r"(?i)(?:accessor|[_.-](?:ids?|ttl|type|at|count|policy|policies|length|len|url|uri|path|"
    r"file|name|expiry|expires|lifetime|max|min|hash|bucket|role))$"
)
_SECRET_ID = re.compile(r"(?i)secret[_-]?id$")  # AppRole's secret_id is one
_AWS_SECRET_NAME = re.compile(r"(?i)secret[_-]?access[_-]?key|aws[_-]?secret")
# An AWS secret access key alone is 40 characters of base64: only in the company of an
# access key id is such a string taken for one (a git SHA is hex, and never).
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_HEX = re.compile(r"[0-9a-f]{40}|[0-9A-F]{40}")
_TRAILING = ".,;:)]}>!?"


def scan(text: str) -> Redacted:
    """`text` with every secret it holds replaced by a marker naming its kind."""
    if not text:
        return Redacted(text, ())
    found: list[str] = []
    # Judged on the text as given: a key id masked by an earlier rule still gives context.
    aws_context = _AWS_KEY_ID.search(text) is not None or _marker("aws-access-key-id") in text

    def whole(kind: str) -> Callable[[re.Match[str]], str]:
        def replace(m: re.Match[str]) -> str:
            found.append(kind)
            return _marker(kind)

        return replace

    def part(kind: str) -> Callable[[re.Match[str]], str]:
        def replace(m: re.Match[str]) -> str:
            found.append(kind)
            return m.group("head") + _marker(kind)

        return replace

    text = _PRIVATE_KEY.sub(whole("private-key"), text)
    text = _SLACK_WEBHOOK.sub(whole("slack-webhook"), text)
    text = _URL_PASSWORD.sub(part("password"), text)
    text = _JWT.sub(whole("jwt"), text)
    text = _VAULT_TOKEN.sub(whole("vault-token"), text)
    text = _SLACK_TOKEN.sub(whole("slack-token"), text)
    text = _GITHUB_TOKEN.sub(whole("github-token"), text)
    text = _AUTHORIZATION.sub(part("token"), text)
    text = _PAIR.sub(lambda m: _pair(m, found), text)
    if aws_context or _AWS_KEY_ID.search(text):
        text = _AWS_SECRET.sub(
            lambda m: m.group(0) if _HEX.fullmatch(m.group(0)) else whole("aws-secret-key")(m),
            text,
        )
    text = _AWS_KEY_ID.sub(whole("aws-access-key-id"), text)
    return Redacted(text, tuple(dict.fromkeys(found)))


def _pair(m: re.Match[str], found: list[str]) -> str:
    key, sep, value = m.group("key"), m.group("sep"), m.group("value")
    if _SAFE_NAME.search(key) and not _SECRET_ID.search(key):
        return m.group(0)
    quote = value[0] if value[:1] in ("'", '"') else ""
    inner = value[1:-1] if quote else value
    tail = ""
    if not quote:  # a sentence's punctuation after the value is not part of it
        stripped = inner.rstrip(_TRAILING)
        if stripped:
            inner, tail = stripped, inner[len(stripped) :]
    if not inner or inner.startswith(_MARKED[:-1]):
        return m.group(0)
    if not quote and "=" not in sep and not _secret_like(inner):
        return m.group(0)  # "the token: renewed" is prose; "password: hunter2" is not
    if _AWS_SECRET_NAME.search(key):
        kind = "aws-secret-key"
    elif re.search(r"(?i)passw|passphrase|pwd", key):
        kind = "password"
    elif re.search(r"(?i)token", key):
        kind = "token"
    else:
        kind = "secret"
    found.append(kind)
    return f"{key}{sep}{quote}{_marker(kind)}{quote}{tail}"


def _secret_like(word: str) -> bool:
    """A bare word after `name:` that is more likely a secret than prose: it has digits or
    symbols, mixed case inside it, or it is longer than words are."""
    return (
        not word.isalpha()
        or len(word) >= 16
        or (any(c.isupper() for c in word[1:]) and any(c.islower() for c in word))
    )


def mask(text: str) -> str:
    """`text` with every secret it holds replaced by a marker naming its kind."""
    return scan(text).text


def mask_optional(text: str | None) -> str | None:
    return None if text is None else mask(text)


def describe(kinds: tuple[str, ...] | list[str]) -> str:
    """The kinds masked, for the person who pasted them: "a Vault token and a password"."""
    names = [KIND_NAMES.get(k, k) for k in dict.fromkeys(kinds)]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
