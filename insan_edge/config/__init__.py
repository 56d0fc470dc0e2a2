"""Config models and loading: validated once at the edge, trusted inside."""

from insan_edge.config.family import (
    CATEGORIES,
    RATINGS,
    Family,
    Member,
    Role,
    SafetyLevel,
    TimeRestriction,
)
from insan_edge.config.loader import LoadedConfig, load_config, parse_config
from insan_edge.config.root import Config

__all__ = [
    "CATEGORIES",
    "RATINGS",
    "Config",
    "Family",
    "LoadedConfig",
    "Member",
    "Role",
    "SafetyLevel",
    "TimeRestriction",
    "load_config",
    "parse_config",
]
