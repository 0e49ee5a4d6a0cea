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
