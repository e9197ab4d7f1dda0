"""How an answer is read from a reply (moa._answers): what the selection steps group replies
by and the scorers compare with the reference."""

from __future__ import annotations

import pytest

from moa._answers import answer_key, first_clause, is_number, normalise, option_letter

CAPITAL = "What is the capital of Italy?"
CHOICE = "Which is a fruit? (A) carrot (B) apple (C) potato"


@pytest.mark.parametrize(
    ("reply", "key"),
    [
        ("The capital of Italy is Rome.", "rome"),
        ("Rome, of course", "rome"),
        ("It is in the United Kingdom.", "united kingdom"),
        ("United States", "united states"),
        ("New York is big", "new york"),
        ("It is either China or the US", "china"),
        ("Lyon, not Paris.", "lyon"),
        ("It has 1,500 people", "1500"),
    ],
)
def test_the_answer_key_is_the_first_content_word_or_name(reply, key):
    assert answer_key(reply, CAPITAL) == key


def test_different_names_with_the_same_first_word_are_different_answers():
    assert answer_key("United States", CAPITAL) != answer_key("United Kingdom", CAPITAL)
    assert answer_key("New York", CAPITAL) != answer_key("New Delhi", CAPITAL)


@pytest.mark.parametrize(
    ("reply", "letter"),
    [("B", "b"), ("(B) apple", "b"), ("The answer is B.", "b"), ("A", "a"), ("I think (C).", "c")],
)
def test_an_option_letter_is_the_answer_where_the_question_lists_options(reply, letter):
    assert option_letter(reply, CHOICE) == letter
    assert answer_key(reply, CHOICE) == letter


def test_a_letter_is_no_option_where_the_question_lists_none():
    assert option_letter("A", CAPITAL) is None
    assert answer_key("A dog", CAPITAL) == "dog"


def test_normalise_keeps_an_article_that_is_the_whole_text():
    assert normalise("A") == "a" and normalise("(A)") == "a"
    assert normalise("A dog, the cat") == "dog cat"
    assert normalise("...") == ""


def test_the_first_clause_that_says_something():
    assert first_clause("Lyon, not Paris.", CAPITAL) == "Lyon"
    assert first_clause("Yes, it is Rome", CAPITAL) == " it is Rome"
    assert first_clause("It is.", CAPITAL) is None


@pytest.mark.parametrize("text", ["-3", "\u22123", "1,500", ".5", "$1,500", "40%", " 7 "])
def test_a_number_alone_or_with_symbols_is_a_number(text):
    assert is_number(text)


@pytest.mark.parametrize("text", ["4 apples", "1 or 2", "Paris", "", "v2"])
def test_anything_else_is_not(text):
    assert not is_number(text)
