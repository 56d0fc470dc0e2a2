"""The one base model every config section derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored); values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
