"""Templates render in a restricted formatter: no amplification, no attribute walks, a size cap; the campaign
upsert path refuses them up front."""

from __future__ import annotations

import pytest

from notify_core.delivery.campaign_checks import check_campaign, check_redirect_url
from notify_core.delivery.templates import (
    DEFAULT_TEMPLATE,
    MAX_RENDERED_CHARS,
    TemplateError,
    render_template,
    validate_template,
)
from notify_core.errors import ValidationError
from notify_core.recommend.updates import parse_campaign

CTX = {"first_name": "Ada", "url": "https://n/t/x", "campaign_name": "Spring", "price": 3.14159, "count": 7}


@pytest.mark.parametrize("template", [
    "{first_name:x>50000000}", "{first_name:>999999999}", "{first_name:>65}", "{price:.200f}", "{first_name:*^64}",
    "{first_name.__class__}", "{first_name[0]}", "{0}", "{}", "{first_name!r}", "{first_name:{count}}",
    "{first_name", "x" * 2_001,
])
def test_dangerous_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        validate_template(template)
    rendered = render_template(template, CTX)  # at send time: the safe default, never the amplified text
    assert rendered == render_template(DEFAULT_TEMPLATE, CTX) and len(rendered) < 100


@pytest.mark.parametrize(("template", "expected"), [
    ("{first_name}, new in: {url}", "Ada, new in: https://n/t/x"),
    ("{first_name:>6}|{price:.2f}|{count:d}", "   Ada|3.14|7"),
    ("{unknown_field}{first_name}", "Ada"),
    ("{{literal}} {first_name}", "{literal} Ada"),
])
def test_ordinary_templates_render(template: str, expected: str) -> None:
    validate_template(template)
    assert render_template(template, CTX) == expected


def test_rendered_size_is_capped() -> None:
    template = "{first_name:>64}" * 100
    validate_template(template)
    assert len(render_template(template, CTX)) == MAX_RENDERED_CHARS
    assert len(render_template("{first_name}", {"first_name": "y" * 100_000})) == MAX_RENDERED_CHARS


def test_campaign_upsert_validation_refuses_bad_templates_and_urls() -> None:
    base = {"campaign_id": "c1", "name": "n", "text": "t", "start_date": "2030-01-01", "end_date": "2030-02-01"}
    parse_campaign({**base, "template": "{first_name}: {url}", "url": "https://shop.example.com/c/1"})
    with pytest.raises(ValidationError, match="width"):
        parse_campaign({**base, "template": "{first_name:>99}"})
    with pytest.raises(ValidationError, match="format spec"):
        parse_campaign({**base, "template": "{first_name:x>50000000}"})
    for url in ("javascript:alert(1)", "data:text/html,x", "//evil.example/p", "http://shop.example.com/",
                "https://user:pw@shop.example.com/", "https:///nohost", "https://a b.example/", "ftp://x/"):
        with pytest.raises(ValidationError):
            parse_campaign({**base, "url": url})


def test_domain_allowlist() -> None:
    check_redirect_url("https://www.shop.example.com/x", allowed_domains=["shop.example.com"])
    with pytest.raises(ValidationError, match="allowed domains"):
        check_redirect_url("https://shop.example.com.evil.example/x", allowed_domains=["shop.example.com"])
    check_campaign(template="", url="")  # both optional
