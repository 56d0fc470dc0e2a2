"""App-token scopes: what a LAN app may do, written ``kind[:family[/member]]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from insan_edge.errors import BadRequestError

_NAME = r"[a-z0-9][a-z0-9_-]{0,31}"
_SCOPE = re.compile(
    rf"^(?:(?P<admin>admin)|(?P<ingest>ingest)(?::(?P<ifam>{_NAME}))?"
    rf"|(?P<rec>recommend):(?:(?P<all>\*)|(?P<rfam>{_NAME})(?:/(?P<member>{_NAME}))?))$"
)
SCOPE_PATTERN = re.sub(r"\?P<\w+>", "", _SCOPE.pattern)  # the same, for JSON Schema
APP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"
SCOPE_HELP = (
    "use admin, ingest, ingest:FAMILY, recommend:FAMILY, recommend:FAMILY/MEMBER or recommend:*"
)


@dataclass(frozen=True)
class Scope:
    kind: str  # admin | ingest | recommend
    family: str | None = None  # None: every family
    member: str | None = None  # None: every member of the family

    def __str__(self) -> str:
        if self.kind == "admin":
            return "admin"
        if self.kind == "ingest":
            return "ingest" if self.family is None else f"ingest:{self.family}"
        where = "*" if self.family is None else self.family
        return f"recommend:{where}" + (f"/{self.member}" if self.member else "")


def parse_scope(text: str) -> Scope:
    m = _SCOPE.match(text.strip())
    if m is None:
        raise BadRequestError(f"unknown scope {text!r}: {SCOPE_HELP}")
    if m["admin"]:
        return Scope("admin")
    if m["ingest"]:
        return Scope("ingest", m["ifam"])
    return Scope("recommend", None if m["all"] else m["rfam"], m["member"])
