"""Campaign templates, rendered in a restricted formatter: no attribute access, no amplification.

Templates keep the ``str.format`` look (``"{first_name}, new in: {url}"``), but Python's own formatter
is not safe for text an API caller writes: ``{first_name:x>50000000}`` pads to 50 MB per message, and
``{user.__class__}`` walks attributes. :func:`render_template` therefore parses the template with
``string.Formatter().parse`` and interprets each part itself:

* a field is a plain identifier (no ``.attr``, no ``[index]``, no positional ``{}``), looked up in a flat
  context of strings and numbers; an unknown field renders empty (a typo must not dead-letter a campaign);
* a format spec is at most ``[align][width][.precision][type]`` with width and precision <= 64 and no fill
  character; conversions (``!r``, ``!s``, ``!a``) are refused;
* the result is cut at :data:`MAX_RENDERED_CHARS`.

:func:`validate_template` applies the same rules up front (plus a length cap) and is what the campaign
upsert path calls, so a bad template is a 400 at the edge; a template that reached the Store another way
(a batch file) and breaks a rule renders as the safe default instead of failing the send.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from typing import Any

from notify_core.errors import ValidationError

MAX_TEMPLATE_CHARS = 2_000
MAX_RENDERED_CHARS = 4_096
MAX_WIDTH = 64
# What a campaign without a template of its own says: "Hi Anna, Bestseller: Red Harmonica In Box. Everyone is
# buying the red harmonica in box. A toys favourite, from 1.25. https://.../t/...". The fields are built by
# notify_core.delivery.render (greeting, a headline ending in a full stop, whitespace-normalised text).
DEFAULT_TEMPLATE = "{greeting} {campaign_headline} {campaign_text} {url}"

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SPEC = re.compile(r"^(?P<align>[<>^])?(?P<width>\d{1,3})?(?:\.(?P<precision>\d{1,3}))?(?P<type>[sdf%])?$")
_PARSER = string.Formatter()


class TemplateError(ValidationError):
    """A template breaks a rendering rule (the message says which)."""


def _parts(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(_PARSER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"template does not parse: {exc}") from None


def _check_field(name: str, spec: str | None, conversion: str | None) -> None:
    if conversion:
        raise TemplateError(f"template field {{{name}!{conversion}}}: conversions are not allowed")
    if not _FIELD.match(name):
        raise TemplateError(f"template field {{{name}}}: only plain names like {{first_name}} are allowed")
    if spec:
        if "{" in spec:
            raise TemplateError(f"template field {{{name}}}: nested fields in a format spec are not allowed")
        match = _SPEC.match(spec)
        if match is None:
            raise TemplateError(f"template field {{{name}:{spec}}}: format spec not allowed "
                                f"(at most [<>^][width][.precision][sdf%], no fill character)")
        for part in ("width", "precision"):
            value = match.group(part)
            if value is not None and int(value) > MAX_WIDTH:
                raise TemplateError(f"template field {{{name}:{spec}}}: {part} {int(value)} is over {MAX_WIDTH}")


def validate_template(template: str) -> None:
    """Raise :class:`TemplateError` unless ``template`` is safe to render (the rules in the module doc)."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template is {len(template)} characters, over {MAX_TEMPLATE_CHARS}")
    for _literal, name, spec, conversion in _parts(template):
        if name is not None:
            _check_field(name, spec, conversion)


def _format(value: Any, spec: str) -> str:
    if not spec:
        return str(value)
    match = _SPEC.match(spec)
    kind = match.group("type") if match else None
    try:
        if kind in ("d",) and not isinstance(value, int):
            value = int(float(value))
        elif kind in ("f", "%") and not isinstance(value, float | int):
            value = float(value)
        return format(value, spec)
    except (ValueError, TypeError, OverflowError):  # OverflowError: "inf" or "1e999" under ":d" (int(inf))
        # a value the spec does not fit renders as its text: an exception here would leave render, outside
        # the channel's guard, and stop the worker's pass on one user's attribute
        return str(value)


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    """The checked parts of a template (or of :data:`DEFAULT_TEMPLATE` when it breaks a rule), parsed once
    per template, not once per message: the worker renders thousands of messages of a few campaigns, and
    validating and parsing each time was ~70 % of filling one (12 us a message, measured here)."""
    try:
        validate_template(template)
        return tuple(_parts(template))
    except TemplateError:
        return tuple(_parts(DEFAULT_TEMPLATE))


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """``template`` filled from ``context`` under the rules above; a rule-breaking template falls back to
    :data:`DEFAULT_TEMPLATE`. Never longer than :data:`MAX_RENDERED_CHARS`."""
    parts = _compiled(template)
    out: list[str] = []
    size = 0
    for literal, name, spec, _conversion in parts:
        out.append(literal)
        size += len(literal)
        if name is not None:
            value = context.get(name)
            text = "" if value is None or not isinstance(value, str | int | float) else _format(value, spec or "")
            out.append(text)
            size += len(text)
        if size > MAX_RENDERED_CHARS:
            break
    return "".join(out)[:MAX_RENDERED_CHARS]
