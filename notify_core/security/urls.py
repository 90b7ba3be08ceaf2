"""Campaign URLs: the only places a tracking redirect may send a user, so checked where they enter.

A click on ``/t/<id>`` answers 302 to its campaign's URL: an unchecked URL turns every link of the
campaign into an open redirect (a phishing page, ``javascript:``). So a campaign URL must be absolute
``https`` with a host, no user/password part, no control characters or backslashes (browsers read
``https:\\\\evil`` as a host), and, when an allowlist is configured, a host equal to or under one of its
domains. The empty URL stays allowed: the click then goes to the service's own base URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from notify_core.errors import ValidationError

MAX_URL = 2048


def validate_campaign_url(url: str, *, allowed_domains: Iterable[str] = ()) -> str:
    """``url`` unchanged if it is a safe redirect target, else ValidationError naming the reason."""
    if url == "":
        return url
    if len(url) > MAX_URL:
        raise ValidationError(f"url is longer than {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise ValidationError("url must not contain spaces, control characters or backslashes")
    if url.startswith("//"):
        raise ValidationError("url must be absolute https://, not protocol-relative")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValidationError(f"url is malformed: {exc}") from None
    if parts.scheme.lower() != "https":
        raise ValidationError(f"url must use https, not {parts.scheme or 'no scheme'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError("url must not carry credentials (user:password@)")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host or port == 0:
        raise ValidationError("url must name a host")
    domains = [d.strip().lstrip(".").lower() for d in allowed_domains if d.strip()]
    if domains and not any(host == d or host.endswith("." + d) for d in domains):
        raise ValidationError(f"url host {host!r} is not in the allowed domains {domains}")
    return url
