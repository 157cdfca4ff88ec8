"""Secrets kept out of what colorray records (MLflow params and tags, SOURCE.json, shard
manifests, tune/sweep.json): a location may carry a credential, and those records are shared.

What is redacted, wherever it appears in a string:
- the userinfo of a URL (``https://user:pass@host/`` -> ``https://REDACTED@host/``);
- every value of a URL's query string (a presigned URL's ``X-Amz-Signature=...``, ``sig=``,
  ``token=``): the keys stay, so the record still says which kind of URL it was;
- in a ``pipe:`` command or any other text: the value of an ``Authorization``-like header
  (``-H 'Authorization: Bearer ...'``), of a ``--token``/``--password``-like flag, of curl's
  ``-u user:pass``, and of a ``*TOKEN=``/``*SECRET=``/``*PASSWORD=``-like assignment.

The original value is still what colorray uses; only the records are redacted.
"""
from __future__ import annotations

import re

REDACTED = "REDACTED"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|x-api-key|x-auth-token|[a-z-]*-token)(\s*:\s*)([^'\"\n]+)")
_FLAG = re.compile(r"(?i)(?<!\S)(--?[a-z0-9_-]*(?:token|password|passwd|secret|api[-_]?key|access[-_]?key|credential)"
                   r"[a-z0-9_-]*)(=|\s+)([^\s'\"]+|'[^']*'|\"[^\"]*\")")
_USER = re.compile(r"(\s(?:-u|--user)\s+)([^\s'\"]+|'[^']*'|\"[^\"]*\")")
_ASSIGN = re.compile(r"(?i)\b([a-z0-9_]*(?:token|secret|password|passwd|api_key|access_key|credential)[a-z0-9_]*=)"
                     r"([^\s'\"&]+)")


def redact_url(url: str) -> str:
    """`url` without its userinfo and with every query value replaced; otherwise unchanged
    (character for character: ``sqlite:///x.db`` stays as it is)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rsplit('@', 1)[1]}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        pairs = [pair.partition("=")[0] for pair in query.split("&") if pair]
        query = "&".join(f"{k}={REDACTED}" for k in pairs) + hash_ + fragment
    return f"{scheme}://{authority}{path}{qmark}{query}"


def redact(text):
    """`text` with the secrets above replaced by REDACTED; anything not a string is returned as is."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL.sub(lambda m: redact_url(m[0]), text)
    text = _HEADER.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    text = _USER.sub(lambda m: f"{m[1]}{REDACTED}", text)
    text = _FLAG.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _ASSIGN.sub(lambda m: f"{m[1]}{REDACTED}", text)


def redact_tree(obj):
    """`obj` (dicts, lists, strings, numbers) with every string redacted."""
    if isinstance(obj, dict):
        return {k: redact_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_tree(v) for v in obj]
    return redact(obj)
