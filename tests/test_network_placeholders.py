"""The contract's placeholder URLs: a connector's content refers to files the core uploads."""

from __future__ import annotations

import pytest

from bridge.network.placeholders import (
    PLACEHOLDER_PREFIX,
    UnknownPlaceholder,
    placeholder,
    referenced_keys,
    substitute_placeholders,
)

URLS = {f"att{n}": f"mxc://example.org/file{n}" for n in range(12)}


def test_a_key_is_a_whole_token_not_a_prefix() -> None:
    html = "".join(f'<img src="{placeholder(f"att{n}")}">' for n in (1, 10, 11))
    assert substitute_placeholders({"formatted_body": html}, URLS) == {
        "formatted_body": '<img src="mxc://example.org/file1"><img src="mxc://example.org/file10">'
        '<img src="mxc://example.org/file11">'
    }
    assert substitute_placeholders({"url": placeholder("att10")}, URLS) == {
        "url": "mxc://example.org/file10"
    }


def test_a_placeholder_without_a_file_is_refused() -> None:
    content = {"url": placeholder("att0"), "info": {"thumbnail_url": placeholder("att12")}}
    with pytest.raises(UnknownPlaceholder) as refused:
        substitute_placeholders(content, URLS)
    assert refused.value.key == "att12"


def test_substitution_leaves_the_input_alone() -> None:
    content = {"url": placeholder("att0"), "parts": [placeholder("att1")]}
    assert substitute_placeholders(content, URLS) == {
        "url": "mxc://example.org/file0", "parts": ["mxc://example.org/file1"]
    }
    assert content == {"url": PLACEHOLDER_PREFIX + "att0", "parts": [PLACEHOLDER_PREFIX + "att1"]}


def test_referenced_keys_in_order_of_appearance() -> None:
    content = {"formatted_body": f'<img src="{placeholder("att10")}"><img src="{placeholder("att1")}">',
               "url": placeholder("att10")}
    assert referenced_keys(content) == ["att10", "att1"]


def test_a_key_outside_the_token_alphabet_is_refused() -> None:
    with pytest.raises(ValueError):
        placeholder('att1" onerror="x')
