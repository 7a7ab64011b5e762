"""The dataset schema: which features a record has, their types and the label.

Every service reads the same file (`CTLOOP_SCHEMA`, YAML or JSON) through `load_schema`, so
the whole stack runs on any dataset a user describes. The format is documented in
docs/schema.md; the model here is the contract.

>>> s = DatasetSchema.model_validate({
...     "name": "toy",
...     "label": {"name": "y", "type": "categorical", "classes": [0, 1]},
...     "features": [{"name": "a", "type": "numeric", "min": 0},
...                  {"name": "c", "type": "categorical", "categories": ["u", "v"]}]})
>>> s.feature_names
['a', 'c']
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
LabelValue = int | str


class SchemaError(ValueError):
    """The schema file is missing, unreadable or describes an impossible dataset."""


class NumericFeature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    type: Literal["numeric"]
    min: float | None = None
    max: float | None = None
    required: bool = True
    """A required feature must be present and not null; an optional one may be missing."""

    @model_validator(mode="after")
    def _range_is_ordered(self) -> NumericFeature:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        return self


class CategoricalFeature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    type: Literal["categorical"]
    categories: list[LabelValue] = Field(min_length=1)
    required: bool = True
    unseen: Literal["reject", "accept"] = "reject"
    """A value outside `categories`: `reject` the record, or `accept` it (models treat it as
    an unknown category)."""

    @field_validator("categories")
    @classmethod
    def _unique(cls, values: list[LabelValue]) -> list[LabelValue]:
        if len(set(values)) != len(values):
            raise ValueError("categories must be unique")
        return values


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "label"
    type: Literal["categorical"] = "categorical"
    classes: list[LabelValue] = Field(min_length=2)

    @field_validator("classes")
    @classmethod
    def _unique(cls, values: list[LabelValue]) -> list[LabelValue]:
        if len(set(values)) != len(values):
            raise ValueError("classes must be unique")
        return values


class DatasetSchema(BaseModel):
    """A dataset: its name (the model name), features, label and intake limits."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    label: LabelSpec
    features: list[Feature] = Field(min_length=1)
    id_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
    """Record ids must match this regular expression."""
    max_future_seconds: float = Field(300.0, ge=0)
    """Event times further ahead of the receiving clock than this are refused."""
    max_past_seconds: float = Field(30 * 86400.0, ge=0)
    """Event times older than this are refused."""

    @field_validator("id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"id_pattern is not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _names_unique(self) -> DatasetSchema:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def id_regex(self) -> re.Pattern[str]:
        """`id_pattern` compiled once: every record's id is matched against it."""
        return re.compile(self.id_pattern)

    @cached_property
    def known_features(self) -> frozenset[str]:
        """The feature names as a set, made once: validation checks every record against it."""
        return frozenset(self.feature_names)

    @cached_property
    def features_by_name(self) -> dict[str, NumericFeature | CategoricalFeature]:
        """Each feature by its name, made once: the V2 API looks up every tensor's."""
        return {f.name: f for f in self.features}

    def feature(self, name: str) -> NumericFeature | CategoricalFeature:
        return self.features_by_name[name]

    @property
    def class_keys(self) -> list[str]:
        """Class labels as strings: the keys of a prediction's `probabilities`."""
        return [str(c) for c in self.label.classes]


def load_schema(path: str | Path) -> DatasetSchema:
    """Read a schema file (`.yaml`, `.yml` or `.json`) and validate it.

    Raises `SchemaError` naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SchemaError(f"schema file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    try:
        return DatasetSchema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise SchemaError(f"schema file {path} is invalid: {problems}") from exc
