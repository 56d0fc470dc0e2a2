"""The whole config file: system settings plus the families."""

from __future__ import annotations

from pydantic import Field

from insan_edge.config.base import ConfigModel
from insan_edge.config.family import Family, Ident
from insan_edge.config.system import SystemSettings


class Config(ConfigModel):
    system: SystemSettings = Field(
        default_factory=SystemSettings, title="System", description="How the box runs."
    )
    families: dict[Ident, Family] = Field(
        title="Families",
        description="The households this box serves, keyed by a short id.",
        min_length=1,
    )
