import pytest

from shiftlab.extractors import check_extractor, extract


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("exact", "  The  Sky is Blue ", "the sky is blue"),
        ("first_word", "Blue sky", "blue"),
        ("first_word", '"Yes," she said', "yes"),
        ("first_word", "don't", "don't"),
        ("last_number", "Step 1: 56 = 21 x 2 + 14 ... so GCD = 7", "7"),
        ("last_number", "no digits", None),
        ("choice_letter", "I pick (B) because", "B"),
        ("json:answer", 'Here: {"answer": "Paris"}', "paris"),
        ("json:answer", "{not json}", None),
        ("regex:is (\\w+)", "the sky is blue .", "blue"),
        ("regex:\\b(red|blue)\\b", "blue and red", "blue"),
    ],
)
def test_extract(name, text, expected):
    assert extract(name, text) == expected


@pytest.mark.parametrize("name", ["vibes", "json:", "regex:(unclosed"])
def test_bad_extractors_are_refused(name):
    with pytest.raises(ValueError):
        check_extractor(name)
