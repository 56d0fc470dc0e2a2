"""The whole config file: system settings plus the families."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from insan_edge.config.base import ConfigModel
from insan_edge.config.family import Family, Ident
from insan_edge.config.system import SystemSettings
from insan_edge.errors import UnknownFamilyError, UnknownMemberError


class Config(ConfigModel):
    system: SystemSettings = Field(
        default_factory=SystemSettings, title="System", description="How the box runs."
    )
    families: dict[Ident, Family] = Field(
        title="Families",
        description="The households this box serves, keyed by a short id.",
        min_length=1,
    )

    def family(self, family_id: str, members: Iterable[str] = ()) -> Family:
        """The family, checking that it and each of ``members`` exist (404-style errors if not)."""
        family = self.families.get(family_id)
        if family is None:
            raise UnknownFamilyError(f"there is no family '{family_id}' on this box")
        for member in members:
            if member not in family.members:
                raise UnknownMemberError(f"'{member}' is not a member of the family '{family_id}'")
        return family
