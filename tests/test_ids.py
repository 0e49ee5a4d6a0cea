from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.ids import content_hash, normalize_text, record_id


def test_normalize_nfc_and_whitespace() -> None:
    decomposed = "Cafe\u0301  au\tlait \r\n\r\n\r\n  next   line  "
    assert normalize_text(decomposed) == "Caf\u00e9 au lait\n\nnext line"


def test_equivalent_texts_share_a_content_hash() -> None:
    assert content_hash(normalize_text("Cafe\u0301 ok")) == content_hash(normalize_text("  Caf\u00e9   ok "))
    assert content_hash("a") != content_hash("b")


def test_record_id_is_stable_and_source_scoped() -> None:
    assert record_id("s", "1") == record_id("s", "1")
    assert record_id("s", "1") != record_id("t", "1")
    assert record_id("s", "1") != record_id("s", "2")
    assert record_id("s", "1").startswith("r") and len(record_id("s", "1")) == 25


def _normalize_by_the_general_path(text: str) -> str:
    """``normalize_text`` without its printable-ASCII shortcut."""
    import unicodedata

    from tasks.ids import _NEWLINES, _SPACES

    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _NEWLINES.sub("\n\n", _SPACES.sub(" ", text))
    return "\n".join(line.strip() for line in text.split("\n")).strip()


@given(st.lists(st.sampled_from([*" \t\r\n\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000", "a", "B", ".", "é", "e\u0301"]),
                max_size=40).map("".join) | st.text(max_size=40))
@settings(max_examples=2000, deadline=None)
def test_the_ascii_shortcut_normalizes_as_the_general_path(text: str) -> None:
    assert normalize_text(text) == _normalize_by_the_general_path(text)
