"""Renders the configuration reference (docs/configuration.md) from the settings classes, so
the documentation cannot drift from what the services read. `ctloop config-reference`."""

from __future__ import annotations

from pydantic_core import to_json
from pydantic_settings import BaseSettings

from shared.settings import (
    CommonSettings,
    ConsoleSettings,
    HTTPServiceSettings,
    IngestSettings,
    MonitorSettings,
    RegistrySettings,
    ServingSettings,
    TrainerSettings,
)

SECTIONS: list[tuple[str, type[BaseSettings], type[BaseSettings] | None]] = [
    ("All services", CommonSettings, None),
    ("Every HTTP service", HTTPServiceSettings, CommonSettings),
    ("serving", ServingSettings, HTTPServiceSettings),
    ("ingest", IngestSettings, HTTPServiceSettings),
    ("registry", RegistrySettings, HTTPServiceSettings),
    ("trainer", TrainerSettings, HTTPServiceSettings),
    ("monitor", MonitorSettings, HTTPServiceSettings),
    ("console", ConsoleSettings, HTTPServiceSettings),
]


def env_name(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else f"CTLOOP_{field.upper()}"


def env_names() -> set[str]:
    """Every environment variable any service reads."""
    return {env_name(cls, f) for _, cls, _ in SECTIONS for f in cls.model_fields}


def _default(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    if info.default_factory is not None:
        return (
            "(computed)"
            if field == "instance"
            # as JSON: what the environment variable takes
            else f"`{to_json(info.get_default(call_default_factory=True, validated_data={})).decode()}`"
        )
    value = info.default
    if field == "schema_path":
        return "the packaged demo schema"
    return f"`{value}`"


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `shared/settings.py` by `ctloop config-reference`; do not edit by hand.",
        "Every service reads environment variables with the `CTLOOP_` prefix; each reads the",
        "common ones and its own section.",
    ]
    for title, cls, parent in SECTIONS:
        own = [f for f in cls.model_fields if parent is None or f not in parent.model_fields]
        lines += ["", f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for field in own:
            description = " ".join((cls.model_fields[field].description or "").split())
            lines.append(f"| `{env_name(cls, field)}` | {_default(cls, field)} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
