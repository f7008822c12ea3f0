"""The shared test helpers catch what they claim to catch (a checker that never fails checks nothing)."""

from __future__ import annotations

import pytest

from tests.helpers import parse_html, text_of, words


def test_balanced_page_gives_tags_attributes_and_text():
    page = parse_html(
        '<div class="jm a"><style>.a{color:red}</style><p data-kind="x">one<br>two</p>'
        '<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg></div>'
    )
    assert page.tags == ["div", "style", "p", "br", "svg", "rect"]
    assert page.classes == {"jm", "a"} and page.attr("data-kind") == ["x"] and page.count("p") == 1
    assert page.text == "onetwo" and page.styles == [".a{color:red}"]


@pytest.mark.parametrize("html", ["<div><p></div>", "<div>", "</p>", "<table><tr></table>"])
def test_unbalanced_tags_fail(html):
    with pytest.raises(AssertionError, match="unbalanced"):
        parse_html(html)


@pytest.mark.parametrize(
    "html",
    [
        '<script src="https://cdn.example.com/x.js"></script>',
        '<img src="//cdn.example.com/x.png">',
        '<a href="http://example.com">x</a>',
        '<link rel="stylesheet" href="x.css">',
        "<style>@import 'https://fonts.example.com/a.css';</style>",
        '<div style="background: url(https://example.com/a.png)"></div>',
    ],
)
def test_network_fetches_fail(html):
    with pytest.raises(AssertionError):
        parse_html(html)
    parse_html(html, self_contained=False)  # balanced all the same


def test_stream_chunks_are_joined_as_the_front_end_shows_them():
    chunked = [
        {"output_type": "stream", "name": "stdout", "text": "disable_jit:"},
        {"output_type": "stream", "name": "stdout", "text": " 3.0 0.0\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}},
    ]
    whole = [
        {"output_type": "stream", "name": "stdout", "text": "disable_jit: 3.0 0.0\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}},
    ]
    assert text_of(chunked) == text_of(whole) == "disable_jit: 3.0 0.0\n\n42"
    assert words(" a\n\n b  c ") == "a b c"
