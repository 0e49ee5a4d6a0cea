"""Hostile input never sinks a batch and never leaves the store (issue 18, items 1, 2 and 6).

Hand-written cases for each kind of hostile row, file and YAML seen, then Hypothesis properties over generated
hostile files: the call returns, good rows are kept, each bad row has exactly one reason, and ingesting writes
nothing outside the storage root. ``bench/fuzz_readers.py`` runs the same properties (``PROPERTIES``) for longer.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import tempfile
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import ingest
from tasks.config import get_settings
from tasks.datasheet import parse_datasheet
from tasks.deletion.blocklist import BlockList
from tasks.deletion.purge import purge_raw
from tasks.errors import DatasheetError, ShardError
from tasks.policy import PolicyError, load_policy, parse_policy
from tasks.readers import ReadLimits, read_rows
from tasks.storage import Store
from tests.helpers import datasheet, ingest_without_engine, jsonl, write_source

MAX_RECORD = 16_000  # small limits (a 5,000-deep line still fits), so generated rows can pass them cheaply
LIMITS = ReadLimits(max_field_bytes=1000)
CFG = ingest.IngestConfig(max_record_bytes=MAX_RECORD, limits=LIMITS)
FILE_REASONS = {"unreadable_file", "decompressed_too_large", "compression_ratio"}
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _row(i: int, text: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": f"g{i}", "text": f"good row {i} {text}", "owner": f"o{i % 3}", **extra}


def _reasons(store: Store) -> dict[str, list[str]]:
    """Quarantine reasons by the raw location they came from."""
    rows = store.read_parquets("quarantine").to_pylist() if store.list("quarantine", ".parquet") else []
    return {r["source_uri"].rsplit("/", 1)[-1]: r["reasons"] for r in rows}


# ---- hand-written cases -------------------------------------------------------------------------------------------

HOSTILE_LINES = {  # line -> the reason it gets
    b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}": "too_deep",  # past the interpreter's recursion limit
    b'{"text": "x", "a": ' + b"[" * 65 + b"]" * 65 + b"}": "too_deep",  # past max_depth only
    b'{"text": "lone \\ud800 surrogate"}': "invalid_unicode",
    b'{"text": "fine", "owner": "\\udfff"}': "invalid_unicode",
    b'{"text": "x", "n": ' + b"7" * 4400 + b"}": "number_too_large",
    b'{"text": "' + b"x" * 20_000 + b'"}': "too_large",
    b"[1, 2]": "malformed_json",
    b"\x00\x00": "malformed_json",
}


def test_hostile_jsonl_lines_are_rows_with_reasons(store: Store) -> None:
    good = [_row(0, "with a NUL \x00 inside"), _row(1)]
    lines = [jsonl([good[0]]).rstrip(b"\n"), *HOSTILE_LINES, jsonl([good[1]]).rstrip(b"\n")]
    write_source(store, "hostile", {"a.jsonl": b"\r\n".join(lines)})
    write_source(store, "calm", {"b.jsonl": jsonl([_row(9)])})
    ingest_without_engine(store, ingest.IngestConfig(max_record_bytes=MAX_RECORD))
    records = store.read_parquets("records").to_pylist()
    assert sorted(r["source_record_id"] for r in records) == ["g0", "g1", "g9"]  # every source published
    assert "\x00" in next(r["text"] for r in records if r["source_record_id"] == "g0")
    assert _reasons(store) == {f"a.jsonl#L{n}": [why] for n, why in enumerate(HOSTILE_LINES.values(), start=2)}



JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.text(alphabet=st.sampled_from("ab\u00e9[{\\\ud800\udfff"), max_size=8)
    | st.sampled_from(["\ud83d\ude00", "x" * 1200]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=80)


@given(JSON_VALUES, st.booleans())
@settings(FAST, max_examples=1500)
def test_skipping_the_walk_for_short_shallow_lines_never_changes_a_verdict(value: Any, ascii_only: bool) -> None:
    """``parse_json`` skips ``check_value`` when the line alone shows the value within limits: same answer."""
    from tasks.readers import RowError, check_value, parse_json

    text = json.dumps(value, ensure_ascii=ascii_only)
    if not ascii_only and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # a raw surrogate cannot reach the reader: the line would not decode from UTF-8
    limits = ReadLimits(max_depth=4)

    def verdict(check: Callable[[], Any]) -> str:
        try:
            check()
        except RowError as err:
            return err.reason
        return "ok"

    assert verdict(lambda: parse_json(text, limits, 1000)) == verdict(
        lambda: check_value(json.loads(text), limits, 1000))

def test_bom_and_mixed_line_endings_keep_every_row() -> None:
    data = b"\xef\xbb\xbf" + jsonl([_row(0)]).rstrip() + b"\r\n" + jsonl([_row(1)]).rstrip() + b"\r" + jsonl([_row(2)])
    rows = list(read_rows(data, "a.jsonl", MAX_RECORD))
    assert [r.value["id"] for r in rows] == ["g0", "g1", "g2"]


def test_csv_field_past_128_kib_is_one_row_not_the_file(store: Store) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows([["id", "text", "owner"], ["g0", "a" * 200_000, "o"], ["g1", "short", "o"]])
    write_source(store, "wide", {"a.csv": buf.getvalue().encode()})
    ingest_without_engine(store)  # default limits: the record limit is 1 MB, so the wide row is a record too
    assert sorted(store.read_parquets("records").column("source_record_id").to_pylist()) == ["g0", "g1"]
    rows = list(read_rows(buf.getvalue().encode(), "a.csv", 1_000_000, limits=ReadLimits(max_field_bytes=100_000)))
    assert [(r.reason, r.value is not None) for r in rows] == [("field_too_large", False), (None, True)]


def test_parquet_with_a_wrong_schema_and_bad_utf8_is_rows_with_reasons(store: Store) -> None:
    sink = io.BytesIO()
    texts = pa.array([b"fine text", b"\xff\xfe not utf-8"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["g0", "g1"], "text": texts}), sink)
    numbers = io.BytesIO()
    pq.write_table(pa.table({"id": ["g2"], "text": [12]}), numbers)  # the text column is an int
    write_source(store, "pq", {"a.parquet": sink.getvalue(), "b.parquet": numbers.getvalue()})
    ingest_without_engine(store)
    assert store.read_parquets("records").column("source_record_id").to_pylist() == ["g0"]
    assert _reasons(store) == {"a.parquet#row=2": ["invalid_unicode"], "b.parquet#row=1": ["wrong_type"]}


def test_truncated_gzip_is_a_file_reason_and_other_files_go_on(store: Store) -> None:
    whole = jsonl([_row(0), _row(1)], gz=True)
    write_source(store, "gz", {"cut.jsonl.gz": whole[:-12], "whole.jsonl.gz": jsonl([_row(2)], gz=True)})
    ingest_without_engine(store)
    assert store.read_parquets("records").column("source_record_id").to_pylist() == ["g2"]
    assert _reasons(store) == {"cut.jsonl.gz": ["unreadable_file"]}


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip.compress(b"\0" * 50_000_000, compresslevel=1)  # ~220 KB


@pytest.mark.parametrize(("limits", "reason"), [
    (ReadLimits(max_compression_ratio=2, ratio_min_bytes=1 << 20), "compression_ratio"),
    (ReadLimits(max_decompressed_bytes=2 << 20), "decompressed_too_large"),
])
def test_gzip_bomb_stops_at_the_cap(bomb: bytes, limits: ReadLimits, reason: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ShardError, match=f"^{reason}: "):
            read_rows(bomb, "bomb.jsonl.gz", MAX_RECORD, limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the cap (at most 2 MiB) and one step, never the 50 MB


def test_gzip_bomb_is_quarantined_by_ingest(store: Store, bomb: bytes) -> None:
    write_source(store, "bombs", {"bomb.jsonl.gz": bomb, "ok.jsonl": jsonl([_row(0)])})
    ingest_without_engine(store, ingest.IngestConfig(limits=ReadLimits(max_decompressed_bytes=1 << 20)))
    assert store.read_parquets("records").column("source_record_id").to_pylist() == ["g0"]
    assert _reasons(store) == {"bomb.jsonl.gz": ["decompressed_too_large"]}


def test_files_past_the_limit_are_quarantined(store: Store) -> None:
    write_source(store, "many", {f"{n}.jsonl": jsonl([_row(n)]) for n in range(3)})
    cfg = ingest.IngestConfig(max_files_per_source=2)
    assert [k.rsplit("/", 1)[-1] for k in ingest.source_files(store, "many", cfg)] == ["0.jsonl", "1.jsonl"]
    assert _reasons(store) == {"2.jsonl": ["too_many_files"]}


def test_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTODY_MAX_DEPTH", "5")
    monkeypatch.setenv("CUSTODY_MAX_DECOMPRESSED_BYTES", "1000")
    monkeypatch.setenv("CUSTODY_MAX_FILES_PER_SOURCE", "7")
    cfg = ingest.IngestConfig.from_settings(get_settings())
    assert (cfg.limits.max_depth, cfg.limits.max_decompressed_bytes, cfg.max_files_per_source) == (5, 1000, 7)
    assert cfg.limits.field_bytes(cfg.max_record_bytes) == 1_000_000  # unset: the record limit
    rows = list(read_rows(b'{"a": [[[[[[1]]]]]]}\n', "a.jsonl", 100, limits=cfg.limits))
    assert rows[0].reason == "too_deep"


def test_purge_goes_past_rows_it_cannot_parse(store: Store) -> None:
    lines = [jsonl([_row(0), _row(1), _row(3)]).rstrip(b"\n"), *HOSTILE_LINES]
    write_source(store, "hostile", {"a.jsonl": b"\n".join(lines) + b"\n"})
    ingest_without_engine(store, ingest.IngestConfig(max_record_bytes=MAX_RECORD))  # quarantine holds previews
    stats = purge_raw(store, BlockList(owners={"o0": "del-1"}))  # rows g0 and g3
    # the purge reads rows of any size, so the too-large line is read (it has no owner); the others cannot be
    assert (stats["raw_rows_removed"], stats["raw_rows_unreadable"]) == (2, len(HOSTILE_LINES) - 1)
    kept = [r.value["id"] for r in read_rows(store.read_bytes("raw/hostile/a.jsonl"), "a.jsonl", 10**6)
            if r.value is not None and "id" in r.value]
    assert kept == ["g1"]


def test_purge_keeps_a_csv_field_with_a_bare_carriage_return(store: Store) -> None:
    data = b'id,text,owner\r\ng0,"one\rtwo",o1\r\ng1,gone,o0\r\n'
    write_source(store, "cr", {"a.csv": data})
    assert purge_raw(store, BlockList(owners={"o0": "del-1"}))["raw_rows_removed"] == 1
    rows = list(read_rows(store.read_bytes("raw/cr/a.csv"), "a.csv", 1000))
    assert [r.value for r in rows] == [{"id": "g0", "text": "one\rtwo", "owner": "o1"}]


# ---- hostile YAML -------------------------------------------------------------------------------------------------

def _laughs(levels: int) -> str:
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in itertools.pairwise(names)]
    return "\n".join(lines) + f"\nnotes: *{names[-1]}\n"


HOSTILE_YAML = {
    "deep": "name: x\nnotes: " + "[" * 5000 + "]" * 5000 + "\n",
    "billion laughs": _laughs(9),
    "wrong types": "name: [1, 2]\ndescription: {a: b}\nlicense: 3\nconsent_basis: null\nfields: text\n",
    "huge integer": "name: x\nnotes: " + "9" * 5000 + "\n",
    "python tag": "name: !!python/object/apply:os.system [echo hi]\n",
    "not a mapping": "- just\n- a list\n",
    "cycle": "name: &n [*n]\n",
}


@pytest.mark.parametrize("text", HOSTILE_YAML.values(), ids=HOSTILE_YAML.keys())
def test_hostile_yaml_is_a_clear_error(text: str) -> None:
    with pytest.raises(DatasheetError, match=r"^raw/x/source\.yaml: "):
        parse_datasheet(text, "raw/x/source.yaml")
    with pytest.raises(PolicyError, match=r"^p\.yaml: "):
        parse_policy(text, "p.yaml")


def test_policy_file_that_is_not_text_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(path)


# ---- properties (also run for longer by bench/fuzz_readers.py) ---------------------------------------------------

GOOD_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # any valid Unicode, NUL included
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
GARBAGE = st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
HOSTILE = st.one_of(
    st.sampled_from(sorted(HOSTILE_LINES.items())),
    st.integers(65, 3000).map(lambda n: (b'{"text": ' + b"[" * n + b"]" * n + b"}", "too_deep")),
    st.integers(4301, 10_000).map(lambda n: (b'{"text": "x", "n": -' + b"1" * n + b"}", "number_too_large")),
    st.sampled_from(["\\ud800", "\\udbff\\u0041", "\\udc00"]).map(
        lambda s: (b'{"text": "a' + s.encode() + b'b"}', "invalid_unicode")),
    st.integers(MAX_RECORD + 1, 3 * MAX_RECORD).map(lambda n: (b'{"text": "' + b"y" * n + b'"}', "too_large")),
    GARBAGE.filter(lambda b: b.strip()).map(lambda b: (b, None)),  # some reason (or, rarely, a valid row)
)


@dataclass
class JsonlCase:
    """A generated JSONL file: its bytes, and per non-empty line the good row or the reason expected."""

    data: bytes
    lines: list[tuple[dict[str, Any] | None, str | None]] = field(default_factory=list)


@st.composite
def jsonl_files(draw: st.DrawFn) -> JsonlCase:
    case, parts = JsonlCase(b""), [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    for i in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            row = _row(i, draw(GOOD_TEXT))
            line = json.dumps(row, ensure_ascii=draw(st.booleans())).encode()
            case.lines.append((row, None))
        else:
            line, reason = draw(HOSTILE)
            case.lines.append((None, reason))
        parts += [line, draw(LINE_ENDS)]
    case.data = b"".join(parts)
    return case


def check_jsonl_reader(case: JsonlCase) -> None:
    """Every line is one row: a good one with its value, a hostile one with exactly its reason."""
    rows = list(read_rows(case.data, "f.jsonl", MAX_RECORD, limits=LIMITS))
    assert len(rows) == len(case.lines)
    for row, (good, reason) in zip(rows, case.lines, strict=True):
        assert (row.value is None) == (row.reason is not None)
        if good is not None:
            assert row.value == good
        elif reason is not None:
            assert row.reason == reason


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def check_jsonl_ingest(case: JsonlCase) -> None:
    """Ingested into a fresh store: good rows are records, each other row one quarantine reason, and nothing is
    written beside the root."""
    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(tmp)
        (outer / "sibling").mkdir()
        (outer / "sibling" / "keep.txt").write_bytes(b"untouched")
        store = Store((outer / "store").as_uri())
        gz = bool(case.data) and case.data[0] % 2 == 1  # gzip some of the files
        write_source(store, "fuzz", {"f.jsonl.gz" if gz else "f.jsonl": gzip.compress(case.data) if gz else case.data})
        before = _tree(outer / "sibling")
        ingest_without_engine(store, CFG)
        assert sorted(p.name for p in outer.iterdir()) == ["sibling", "store"]
        assert _tree(outer / "sibling") == before
        records = store.read_parquets("records").to_pylist() if store.list("records", ".parquet") else []
        quarantine = store.read_parquets("quarantine").to_pylist() if store.list("quarantine", ".parquet") else []
    assert all(len(q["reasons"]) == 1 for q in quarantine)
    assert len(records) + len(quarantine) == len(case.lines)
    good = {row["id"] for row, _ in case.lines if row is not None}
    assert good <= {r["source_record_id"] for r in records}


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[str | None]]:
    """A CSV file of good rows and hostile ones (bad bytes, a field past the limit, wrong columns), with the
    reason each row should get (None: kept)."""
    buf, expected = io.StringIO(), []
    end = draw(st.sampled_from(["\n", "\r\n"]))  # csv quotes a field with a line break only if it is in ``end``
    writer = csv.writer(buf, lineterminator=end, quoting=csv.QUOTE_MINIMAL if end == "\r\n" else csv.QUOTE_ALL)
    writer.writerow(["id", "text", "owner"])
    for i in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["good", "bytes", "wide", "columns"]))
        text = {"good": f"row {i} " + draw(GOOD_TEXT), "bytes": "bad \udcff byte", "wide": "w" * 1500,
                "columns": "extra"}[kind]
        writer.writerow([f"g{i}", text, "o"] + (["x"] if kind == "columns" else []))
        expected.append({"good": None, "bytes": "undecodable_bytes", "wide": "field_too_large",
                         "columns": "malformed_row"}[kind])
    return buf.getvalue().encode("utf-8", errors="surrogateescape"), expected


def check_csv_reader(case: tuple[bytes, list[str | None]]) -> None:
    data, expected = case
    rows = list(read_rows(data, "f.csv", MAX_RECORD, limits=LIMITS))
    assert [r.reason for r in rows] == expected
    assert all((r.value is None) == (r.reason is not None) for r in rows)


PARQUET_TEXTS = st.one_of(
    st.lists(st.one_of(st.none(), GOOD_TEXT), min_size=1, max_size=8).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=8).map(pa.array),
    st.lists(st.binary(max_size=20), min_size=1, max_size=8).map(lambda v: pa.array(v, pa.binary()).view(pa.string())),
    st.lists(st.lists(GOOD_TEXT, max_size=3), min_size=1, max_size=8).map(pa.array),
)


def check_parquet_reader(texts: pa.Array) -> None:
    """Whatever the text column holds, the reader returns one outcome per row and valid strings are kept."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), sink)
    rows = list(read_rows(sink.getvalue(), "f.parquet", MAX_RECORD, limits=LIMITS))
    assert len(rows) == len(texts)
    assert all((r.value is None) == (r.reason is not None) for r in rows)
    if texts.type == pa.string() and all(r.reason is None for r in rows):
        assert [r.value["text"] for r in rows] == texts.to_pylist()


def check_gzip_reader(case: tuple[JsonlCase, int]) -> None:
    """A gzip cut short or with garbage after it is the file's reason, never another exception."""
    jcase, cut = case
    data = gzip.compress(jcase.data)
    data = data[:cut % max(len(data), 1)] if cut >= 0 else data + jcase.data[:-cut]
    try:
        list(read_rows(data, "f.jsonl.gz", MAX_RECORD, limits=LIMITS))
    except ShardError as exc:
        assert str(exc).split(":", 1)[0] in FILE_REASONS


YAML_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30)


def check_datasheet(doc: dict[str, Any]) -> None:
    """Any YAML document is a datasheet or a ``DatasheetError``; nothing else escapes."""
    text = yaml.safe_dump(doc)
    with contextlib.suppress(DatasheetError):
        parse_datasheet(text, "raw/x/source.yaml")


PROPERTIES = {  # name -> (strategy, check): the suite runs each briefly, the bench for minutes
    "jsonl_reader": (jsonl_files(), check_jsonl_reader),
    "jsonl_ingest": (jsonl_files(), check_jsonl_ingest),
    "csv_reader": (csv_files(), check_csv_reader),
    "parquet_reader": (PARQUET_TEXTS, check_parquet_reader),
    "gzip_reader": (st.tuples(jsonl_files(), st.integers(-64, 10_000)), check_gzip_reader),
    "datasheet": (st.fixed_dictionaries({"name": st.just("x")}, optional={
        "description": YAML_VALUES, "license": YAML_VALUES, "consent_basis": st.text(max_size=5),
        "fields": st.one_of(YAML_VALUES, st.just(datasheet("x")["fields"]))}), check_datasheet),
}
SUITE_EXAMPLES = {"jsonl_ingest": 20}  # the rest: 60 each


def property_test(strategy: st.SearchStrategy, check: Callable[[Any], None], **overrides: Any) -> Callable[[], None]:
    """A fresh Hypothesis test of ``check`` over ``strategy`` (a function takes one settings object only, so
    each run wraps its own)."""
    def run(case: Any) -> None:
        check(case)

    return given(strategy)(settings(FAST, **overrides)(run))


@pytest.mark.parametrize("name", PROPERTIES)
def test_property(name: str) -> None:
    property_test(*PROPERTIES[name], max_examples=SUITE_EXAMPLES.get(name, 60))()
