"""Field-level rules: hop-by-hop fields, Connection tokens, Host syntax, dates.

Strategy: everything here is a pure function over bytes.  llhttp (inside
httptools) already enforces the character-level grammar of field names and
values (RFC 9110 §5.1, §5.5: token names, no CR/LF/NUL/CTL in values, no
obs-fold, no whitespace before the colon); this module holds the semantic
rules that sit above that grammar.
"""

from __future__ import annotations

from typing import Final
import re
import time
from email.utils import formatdate

from proxy.core.http1.messages import Headers

#: Fields that only describe one hop and are never forwarded (RFC 9110 §7.6.1),
#: plus the framing fields, which the proxy always regenerates itself
#: (RFC 9112 §6.1, §6.2: a proxy re-frames the message it forwards).
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)

# uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name of
# unreserved / pct-encoded / sub-delims characters, or an IP-literal in
# brackets.  "@", "/", "?", "#", whitespace and anything else are refused, so a
# Host value can never smuggle userinfo or a path into the authority.
_HOST_RE: Final = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?\Z"
)


def is_valid_host(value: bytes) -> bool:
    return _HOST_RE.match(value) is not None


def host_without_port(authority: bytes) -> bytes:
    """Lower-cased host part of an authority, without port or brackets kept."""
    authority = authority.lower()
    if authority.startswith(b"["):
        end = authority.find(b"]")
        return authority[: end + 1] if end >= 0 else authority
    colon = authority.rfind(b":")
    return authority[:colon] if colon >= 0 else authority


def connection_tokens(headers: Headers) -> set[bytes]:
    """Lower-cased tokens of every Connection field (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return tokens


def end_to_end(headers: Headers) -> Headers:
    """Headers without hop-by-hop fields and without the fields that
    Connection names (RFC 9110 §7.6.1: a proxy MUST remove them)."""
    named = None
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            named = connection_tokens(headers)
            break
    if named is None:
        return [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
    return [(n, v) for n, v in headers if (low := n.lower()) not in HOP_BY_HOP and low not in named]


_date_cache: Final[list] = [-1, b""]  # -1: no second is cached yet (0 is a valid one)


def http_date(now: float | None = None) -> bytes:
    """IMF-fixdate for the Date field (RFC 9110 §5.6.7), cached per second."""
    second = int(now if now is not None else time.time())
    if _date_cache[0] != second:
        _date_cache[0] = second
        _date_cache[1] = formatdate(second, usegmt=True).encode("ascii")
    return _date_cache[1]


def sf_string(text: str) -> bytes:
    """An RFC 8941 sf-string: printable ASCII with \\ and \" escaped."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return b'"' + cleaned.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def proxy_status(proxy_name: bytes, error: str, details: str = "") -> bytes:
    """The value of a Proxy-Status field for an error we generated (RFC 9209 §2)."""
    value = proxy_name + b"; error=" + error.encode("ascii")
    if details:
        value += b"; details=" + sf_string(details)
    return value
