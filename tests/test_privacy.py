"""Pseudonyms and scrubbing: what may reach a prompt."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.stages.privacy import prompt_text, pseudonymize, scrub


def test_pseudonyms_are_stable_salted_and_do_not_contain_the_id() -> None:
    a = pseudonymize("alice@example.com", "s1")
    assert a == pseudonymize("alice@example.com", "s1")
    assert a != pseudonymize("alice@example.com", "s2")
    assert a != pseudonymize("bob@example.com", "s1")
    assert re.fullmatch(r"u_[0-9a-f]{16}", a) and "alice" not in a


def test_pseudonymize_refuses_an_empty_salt() -> None:
    with pytest.raises(ValueError, match="salt"):
        pseudonymize("42", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+x@mail.example.org today", "write to [email] today"),
        ("call +1 (555) 123-4567 now", "call [phone] now"),
        ("call 555-1234", "call [phone]"),
        ("+44 20 7946 0958", "[phone]"),
        ("see https://evil.example/x?a=1 or www.x.org", "see [url] or [url]"),
        ("card 4111111111111111", "card [number]"),
    ],
)
def test_scrub_replaces_contact_details(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "title",
    [
        "Toy Story (1995)",
        "2001: A Space Odyssey (1968)",
        "12 Monkeys (1995)",
        "Star Wars 1977 1980 1983",
        "Three Colors: Red (1994)",
        "Se7en (1995)",
        "Top 10 20 30 40 hits",
    ],
)
def test_scrub_keeps_titles_years_and_short_numbers(title: str) -> None:
    assert scrub(title) == title


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.from_regex(r"[a-z]{1,8}\.[a-z]{1,8}@[a-z]{2,8}\.(com|org|de)", fullmatch=True),
)
def test_no_email_survives_scrubbing(noise: str, email: str) -> None:
    assert email not in scrub(f"{noise} {email} {noise}")


def test_prompt_text_collapses_whitespace_drops_control_characters_and_caps_length() -> None:
    assert prompt_text("a\x00b\n\n  c\td") == "a b c d"
    assert prompt_text(None) == ""
    long = prompt_text("word " * 100, max_chars=20)
    assert len(long) == 20 and long.endswith("…")
