import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.ids import content_hash, normalize_text, record_id, record_id_keys


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


def test_record_keys_are_distinct_and_do_not_depend_on_the_array_layout() -> None:
    ids = [record_id("s", str(i)) for i in range(200_000)]
    keys = record_id_keys(ids)
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == len(ids)
    chunked = pa.chunked_array([pa.array(ids[:7]), pa.array(ids[7:20])])
    assert (record_id_keys(chunked) == keys[:20]).all()
    assert (record_id_keys(pa.array(ids).slice(5, 9)) == keys[5:14]).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=30))
def test_a_record_key_is_a_function_of_its_id_alone(ids: list[str]) -> None:
    """Ids of mixed lengths (other sources' ids, tests' ids) hash one by one as they do together."""
    together = record_id_keys(ids)
    assert [int(k) for k in together] == [int(record_id_keys([i])[0]) for i in ids]
    distinct = {i: int(k) for i, k in zip(ids, together, strict=True)}
    assert len(set(distinct.values())) == len(distinct)
