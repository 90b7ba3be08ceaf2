"""What a campaign must satisfy before it is stored: a safe template and a safe redirect URL.

The tracking redirect sends a user's browser to the campaign's ``url``, so that URL is checked where
campaigns are written (:func:`check_campaign`, called by ``notify_core.recommend.updates``): https only,
a host name, no credentials (``https://user:pass@host``), no ``javascript:``/``data:`` or protocol-relative
(``//evil``) forms, no control characters or spaces, and optionally a host inside an allowlist of domains.
``allow_http=True`` is the explicit, visible switch for a test shop on plain http.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from notify_core.delivery.templates import validate_template
from notify_core.errors import ValidationError

MAX_URL_CHARS = 2_048


def check_redirect_url(url: str, *, allowed_domains: Collection[str] = (), allow_http: bool = False) -> None:
    """Raise :class:`ValidationError` unless ``url`` is an absolute https URL safe to redirect to."""
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(f"url is over {MAX_URL_CHARS} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in url):
        raise ValidationError("url contains spaces, control characters or backslashes")
    if url.startswith("//"):
        raise ValidationError("url must be absolute https://, not protocol-relative")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValidationError(f"url is malformed: {exc}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes:
        raise ValidationError(f"url must be {' or '.join(schemes)}://..., got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname or port == 0 or url[len(parts.scheme) + 1:].startswith("///"):
        raise ValidationError("url has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError("url must not carry credentials")
    domains = [d.strip().lstrip(".").lower() for d in allowed_domains if d.strip()]
    if domains:
        host = parts.hostname.lower().rstrip(".")
        if not any(host == d or host.endswith("." + d) for d in domains):
            raise ValidationError(f"url host {host!r} is not in the allowed domains")


def check_campaign(*, template: str, url: str, allowed_domains: Collection[str] = (), allow_http: bool = False) -> None:
    """The campaign upsert's content checks: the template (see ``templates``) and the redirect URL."""
    if template:
        validate_template(template)
    if url:
        check_redirect_url(url, allowed_domains=allowed_domains, allow_http=allow_http)
