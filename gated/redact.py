"""Secrets kept out of log lines and messages, and outside text that cannot forge a log line.

``redact_url`` shows one URL without its password (or a token in its query string); ``redact`` does
the same to every URL inside a longer text, such as an SQLAlchemy or OpenCV error, and can also
hide secrets gated knows (a password read from a file). ``shown`` is how a string that came from
outside (an MQTT payload field, a topic, device data, OCR text, a file name, a camera's error) goes
into a log line: escaped (no newline can start a fake line) and bounded (no flood); ``printable``
does the same without the quotes, for outside text inside a message of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

HIDDEN: Final = "***"
SHOWN_LIMIT: Final = 200
"""Characters of an outside string a log line shows at most."""
PRINTABLE_LIMIT: Final = 500

_HIDDEN_PARAMETERS: Final = (
    "password|passwd|pwd|pass|passphrase|secret|token|access_token|auth|authorization|"
    "api_key|apikey|key|sig|signature|credential|credentials"
)
# A scheme and what follows it up to the path: user:password@host. One slash is enough to match, so
# a mistyped "rtsp:/user:password@cam" is hidden as well.
_URL: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*:/+)(?P<authority>[^\s/?#]*)")
_QUERY_SECRET: Final = re.compile(rf"(?P<name>[?&;](?:{_HIDDEN_PARAMETERS})=)[^&#\s'\"<>]*", re.IGNORECASE)
# libpq's connection strings: password=secret or password='a secret'.
_CONNINFO_SECRET: Final = re.compile(
    r"(?P<name>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'\"&]+)", re.IGNORECASE
)


def redact_url(url: str | URL) -> str:
    """``url`` with its password and query-string tokens replaced by ``***``; the user, host,
    port, path and other parameters stay, so the message still says where."""
    if not isinstance(url, str):
        return _hide_parameters(url.render_as_string(hide_password=True))
    text = str(url)
    scheme, separator, rest = text.partition("://")
    if separator and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        # One URL: its authority runs to the path whatever it contains (a space, a quote).
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        text = f"{scheme}://{_hide_userinfo(rest[:end])}{rest[end:]}"
    return redact(text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the password of every URL in it hidden, tokens in query strings and
    ``password=`` in connection strings too, and each of ``secrets`` (as written or URL-encoded)."""
    hidden = _URL.sub(lambda m: m["scheme"] + _hide_userinfo(m["authority"]), text)
    hidden = _hide_parameters(hidden)
    forms = {
        form for secret in secrets if secret for form in (secret, quote(secret, safe=""), quote_plus(secret))
    }
    for form in sorted(forms, key=len, reverse=True):
        hidden = hidden.replace(form, HIDDEN)
    return hidden


def error_text(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """A library's error for a message of ours: passwords hidden, on one line, bounded (an
    SQLAlchemy error carries its statement and parameters over several lines)."""
    return printable(redact(str(error), secrets))


def url_secrets(url: URL) -> tuple[str, ...]:
    """The secrets of a database URL that ``redact`` should hide in its driver's errors."""
    return (url.password,) if isinstance(url.password, str) and url.password else ()


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """``value`` for a log line: its repr (quoted, every control character escaped), cut to
    ``limit`` characters with a note of how many more there were."""
    if isinstance(value, str | bytes):
        text, more = repr(value[:limit]), len(value) - limit
    else:
        full = printable(repr(value), None)
        text, more = full[:limit], len(full) - limit
    return text + (f"...(+{more})" if more > 0 else "")


def printable(text: str, limit: int | None = PRINTABLE_LIMIT) -> str:
    """``text`` with every character that is not printable escaped as in a repr (a newline as
    ``\\n``), cut to ``limit`` characters: outside text inside a message of ours."""
    cut = text if limit is None else text[:limit]
    escaped = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in cut)
    return escaped + (f"...(+{len(text) - limit})" if limit is not None and len(text) > limit else "")


def _hide_userinfo(authority: str) -> str:
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return authority
    return f"{userinfo.partition(':')[0]}:{HIDDEN}@{host}"


def _hide_parameters(text: str) -> str:
    text = _QUERY_SECRET.sub(lambda m: m["name"] + HIDDEN, text)
    return _CONNINFO_SECRET.sub(lambda m: m["name"] + HIDDEN, text)
