"""Templates are checked and parsed once per template string (templates._compiled), not once per message:
the same output as before for good and rule-breaking templates, whichever is rendered first."""

from __future__ import annotations

from notify_core.delivery.templates import DEFAULT_TEMPLATE, _compiled, render_template

CTX = {"first_name": "Anna", "greeting": "Hi Anna,", "campaign_headline": "Sale.", "campaign_text": "All half price",
       "url": "https://n.example/t/abc", "n": 3}


def test_a_cached_template_renders_as_a_fresh_one_and_a_bad_one_falls_back_every_time() -> None:
    _compiled.cache_clear()
    good = "{first_name:>6}, {n:d} new: {url}"
    bad = "{first_name:x>50000000} {user.__class__}"
    first = [render_template(t, CTX) for t in (good, bad, good, bad)]
    assert first[0] == first[2] == "  Anna, 3 new: https://n.example/t/abc"
    assert first[1] == first[3] == render_template(DEFAULT_TEMPLATE, CTX) == (
        "Hi Anna, Sale. All half price https://n.example/t/abc")
    info = _compiled.cache_info()
    assert info.misses == 3 and info.hits == 2  # good, bad, DEFAULT_TEMPLATE parsed once each
    assert render_template(good, {**CTX, "first_name": "Bo"}).startswith("    Bo,")  # the context is not cached
