"""The dataset schema file: loading, both example schemas, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.schema import SchemaError, load_schema
from tests.fixtures import credit_schema, demo_schema


def test_demo_schema_loads() -> None:
    schema = demo_schema()
    assert schema.name == "demo"
    assert schema.feature_names == ["x1", "x2", "x3", "amount", "color"]
    assert schema.class_keys == ["0", "1"]


def test_second_schema_loads_with_its_own_rules() -> None:
    schema = credit_schema()
    assert schema.name == "credit"
    assert schema.label.classes == ["no", "yes"]
    assert schema.feature("housing").unseen == "accept"  # type: ignore[union-attr]
    assert schema.feature("income").required is False  # type: ignore[union-attr]


def test_json_schema_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        '{"name": "j", "label": {"classes": [0, 1]}, "features": [{"name": "a", "type": "numeric"}]}'
    )
    assert load_schema(path).feature_names == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nlabel: {classes: [0, 1]}\nfeatures: []\n", "features"),
        ("name: x\nlabel: {classes: [0]}\nfeatures: [{name: a, type: numeric}]\n", "label.classes"),
        (
            "name: x\nlabel: {classes: [0, 1]}\nfeatures: [{name: a, type: numeric, min: 2, max: 1}]\n",
            "min 2.0 is above max 1.0",
        ),
        (
            "name: x\nlabel: {classes: [0, 1]}\nfeatures: [{name: a, type: numeric}, {name: a, type: numeric}]\n",
            "duplicate feature names: ['a']",
        ),
        ("name: x\nlabel: {classes: [0, 1]}\nfeatures: [{name: a, type: text}]\n", "features.0"),
        ("name: ../etc\nlabel: {classes: [0, 1]}\nfeatures: [{name: a, type: numeric}]\n", "name"),
        ("name: x\nlabel: {classes: [0, 1]\nfeatures: oops\n", "not valid yaml"),
    ],
)
def test_invalid_schema_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=r"bad\.yaml") as info:
        load_schema(path)
    assert message in str(info.value)


def test_missing_schema_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot read schema file"):
        load_schema(tmp_path / "nope.yaml")
