"""Keyset cursors: they round-trip, bind their filters, and refuse anything else."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.errors import InvalidRequestError
from keyfab.registry import cursors

SCOPE = {"batch": "b1", "state": None, "product": None}
scopes = st.dictionaries(
    st.sampled_from(["batch", "state", "product"]), st.none() | st.text(max_size=20)
)


@settings(deadline=None)
@given(st.integers(0, cursors.MAX_ID), scopes)
def test_a_cursor_round_trips_under_its_filters(after: int, scope: dict[str, str | None]) -> None:
    text = cursors.encode(after, scope)
    assert len(text) == 18
    assert cursors.decode(text, dict(scope)) == after


@settings(deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_cursor_or_one_refusal(text: str) -> None:
    """The decoder of untrusted input: never another exception, never a huge id."""
    slug = ""
    try:
        after = cursors.decode(text, SCOPE)
    except InvalidRequestError as refused:
        slug = refused.slug
    else:
        assert 0 <= after <= cursors.MAX_ID
        assert cursors.encode(after, SCOPE) == text
    assert slug in ("", "invalid-cursor", "cursor-mismatch")


@settings(deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_spelled_as_base64url_are_checked(raw: bytes) -> None:
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    try:
        after = cursors.decode(text, SCOPE)
    except InvalidRequestError:
        return
    assert cursors.encode(after, SCOPE) == text


def test_a_cursor_from_other_filters_is_refused_by_name() -> None:
    text = cursors.encode(42, {"state": "failed"})
    assert cursors.decode(text, {"state": "failed", "batch": None}) == 42
    with pytest.raises(InvalidRequestError) as refused:
        cursors.decode(text, {"batch": "b7"})
    assert refused.value.slug == "cursor-mismatch"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x" * 65,
        "AQAAAAAAAAAqAAAAAA==",  # padded
        "not a cursor!",
        base64.urlsafe_b64encode(bytes([2]) + bytes(12)).rstrip(b"=").decode(),  # version 2
        base64.urlsafe_b64encode(bytes([1]) + b"\xff" * 8 + bytes(4)).rstrip(b"=").decode(),
    ],
)
def test_malformed_cursors_are_invalid(text: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        cursors.decode(text, SCOPE)
    assert refused.value.slug == "invalid-cursor"


def test_non_canonical_spelling_is_refused() -> None:
    text = cursors.encode(7, SCOPE)
    last = text[-1]
    sibling = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = text[:-1] + sibling[sibling.index(last) ^ 1]  # same data bits, other stray bits
    with pytest.raises(InvalidRequestError):
        cursors.decode(twin, SCOPE)
