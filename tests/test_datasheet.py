import pytest
import yaml

from tasks.datasheet import load_datasheet, parse_datasheet
from tasks.errors import DatasheetError
from tests.helpers import datasheet, write_source


def test_valid_datasheet_loads_with_hash(store) -> None:
    write_source(store, "good", {}, datasheet("good"))
    sheet, digest = load_datasheet(store, "good")
    assert sheet.license == "CC-BY-4.0" and sheet.fields.text == "text" and len(digest) == 16


@pytest.mark.parametrize(("change", "field"), [
    ({"license": None}, "license"),
    ({"consent": "maybe"}, "consent"),
    ({"fields": {"label": "x"}}, "fields.text"),
    ({"surprise": 1}, "surprise"),
    ({"license": "CC BY 4.0"}, "license"),
])
def test_invalid_datasheet_names_the_field(change, field) -> None:
    sheet = datasheet("bad")
    sheet.update(change)
    with pytest.raises(DatasheetError, match=f"field '{field}'"):
        parse_datasheet(yaml.safe_dump(sheet), "raw/bad/source.yaml")


def test_missing_datasheet_and_name_mismatch(store) -> None:
    with pytest.raises(DatasheetError, match="missing datasheet"):
        load_datasheet(store, "absent")
    write_source(store, "folder", {}, datasheet("other"))
    with pytest.raises(DatasheetError, match="field 'name'"):
        load_datasheet(store, "folder")
