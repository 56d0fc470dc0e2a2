"""A family's training set, built from its scrubbed interactions in the store.

One example per accepted suggestion (``suggestion_accepted``, or a ``rating`` of 4 or 5 with an
item): the prompt serving builds for that situation (``plan_prompt`` at the event's local time,
with the recently enjoyed items as they were then) plus ``ANSWER_PREFIX``; the target is the
accepted title (``title_target``); the negatives are what the same member turned down in the
same session. ``sampled`` are a few other titles the family met (accepted, turned down or rated
at any time), drawn per example with a fixed hash: none the member took in the same situation
and none their rules block. The pairwise term ranks the target above them too, as serving ranks
it among catalog candidates; evaluation compares only against the real negatives.

A *session* is one member, one situation (time of day, day of week and activity of the stored
context) and at most ``SESSION_WINDOW`` (2 hours) either side of the acceptance. Its rejections
(``suggestion_rejected``, or a rating of 1 or 2) are the example's negatives; a second positive
for the same title in the same member's session (the rating after the acceptance) is no second
example.

The split is fixed by a hash of (seed, example id): an example held out once is held out in
every later build, and never trained on. Only this module, the config, the prompt and safety
rules, and the store are used: no model code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from insan_edge.config import Config
from insan_edge.config.family import Family
from insan_edge.config.training import TrainingSettings
from insan_edge.contracts import RequestContext
from insan_edge.files import write_atomic
from insan_edge.prompts import ANSWER_PREFIX, TEXT_CHAR, plan_prompt, title_target
from insan_edge.safety import estimated_rating, member_rating_limit, rank, topic_hits
from insan_edge.store import Store

log = logging.getLogger("insan_edge.dataset")

SESSION_WINDOW = timedelta(hours=2)
POSITIVE_MIN_RATING = 4
NEGATIVE_MAX_RATING = 2
# The privacy scrubber writes member ids that equal a name as role tokens (Family.role_tokens);
# a stored ``present`` list is read back through them.
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>|\[redacted\]")
# A title the output grammar can write (prompts._text); a placeholder's brackets it cannot.
_SERVABLE = re.compile(f"[A-Za-z0-9]{TEXT_CHAR}*")
_KINDS = ("suggestion_accepted", "suggestion_rejected", "rating")
_TEXT_FIELDS = ("time_of_day", "day_of_week", "activity")

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class Example:
    id: str  # stable: the interaction's event hash (or row id)
    split: Split
    prompt: str  # plan_prompt(...).prompt + ANSWER_PREFIX: what serving builds for the situation
    target: str  # title_target(accepted item)
    negatives: tuple[str, ...]  # title_target(items the member rejected in the same session)
    member: str
    interaction_id: int
    replay: bool = False  # an older example mixed in so the adapter does not forget
    sampled: tuple[str, ...] = ()  # title_target(other titles the family met): training only

    def record(self) -> dict[str, Any]:
        """The worker's line for this example."""
        return {
            "id": self.id,
            "split": self.split,
            "prompt": self.prompt,
            "target": self.target,
            "negatives": list(self.negatives),
            "sampled": list(self.sampled),
        }


@dataclass(frozen=True)
class Dataset:
    family_id: str
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    upto_interaction_id: int  # highest interaction id considered: the next run's since_id
    new_examples: int  # training examples from interactions after since_id
    skipped: dict[str, int] = field(default_factory=dict, compare=False)  # why, how many

    def write_jsonl(self, path: Path) -> int:
        """Train then held-out examples, one JSON object a line, written atomically; lines."""
        examples = (*self.train, *self.heldout)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (json.dumps(example.record(), ensure_ascii=False) + "\n" for example in examples)
        write_atomic(path, "".join(lines))
        return len(examples)


@dataclass(frozen=True)
class _Row:
    id: int
    member: str
    kind: str
    item: str | None
    rating: int | None
    context: str | None
    ts: str  # as stored (ISO UTC): compared as text, like the store's SQL does
    at: datetime  # aware UTC
    event_hash: str | None


@dataclass(frozen=True)
class _Situation:
    context: RequestContext
    present: tuple[str, ...]  # members of the family, in the stored order
    dropped: int  # context values that were unknown or invalid

    @property
    def key(self) -> tuple[str | None, ...]:
        c = self.context
        return (c.time_of_day, c.day_of_week, c.activity)


def role_token_members(family: Family) -> dict[str, str]:
    """Role token ('<CHILD_1>') -> member id, numbered like the privacy scrubber numbers them."""
    return {token: member_id for member_id, token in family.role_tokens().items()}


def _valid(name: str, value: Any) -> Any:
    """The value as RequestContext keeps it, or None when it is invalid."""
    try:
        return getattr(RequestContext.model_validate({name: value}), name)
    except ValidationError:
        return None


def _situation(raw: str | None, family: Family, tokens: dict[str, str]) -> _Situation:
    """The stored context as a RequestContext: known fields only, invalid values dropped."""
    try:
        data = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, TypeError):
        data = None
    if not isinstance(data, dict):
        return _Situation(RequestContext(), (), 1)
    dropped = 0
    fields: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, str) and name != "activity":
            value = value.strip().lower()
        kept = _valid(name, value)
        if kept is None:
            dropped += 1
        else:
            fields[name] = kept
    environment = data.get("environment", [])
    if not isinstance(environment, list):
        environment, dropped = [], dropped + 1
    for value in environment:
        kept = _valid("environment", [value])
        if kept is None or len(fields.setdefault("environment", [])) >= 16:
            dropped += 1
        else:
            fields["environment"].extend(kept)
    present: list[str] = []
    listed = data.get("present", [])
    if not isinstance(listed, list):
        listed, dropped = [], dropped + 1
    for value in listed:
        member = tokens.get(value, value) if isinstance(value, str) else None
        if member not in family.members:
            dropped += 1
        elif member not in present:
            present.append(member)
    context = RequestContext(**fields, present=present[:32])
    return _Situation(context, tuple(present[:32]), dropped)


def _meaningful(item: str | None) -> bool:
    """An item with some words left after scrubbing (not only placeholders)."""
    return item is not None and any(ch.isalnum() for ch in _PLACEHOLDER.sub("", item))


def _servable(item: str) -> bool:
    """A title serving could have written: no placeholder or markup left in it."""
    return _SERVABLE.fullmatch(title_target(item)[:-1].strip()) is not None


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _parse_ts(ts: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _load(store: Store, family_id: str) -> tuple[list[_Row], int, int]:
    """The family's rows that matter, the highest interaction id, and unreadable times.

    One statement, so the rows and the highest id come from the same snapshot.
    """
    marks = ",".join("?" for _ in _KINDS)
    sql = (
        "SELECT id, member_id, kind, item, rating, context, ts, event_hash FROM interactions "
        f"WHERE family_id = ? AND (kind IN ({marks}) OR id = "
        "(SELECT MAX(id) FROM interactions WHERE family_id = ?)) ORDER BY id"
    )
    with store.transaction() as db:  # the store's lock: the connection is shared by threads
        fetched = db.execute(sql, [family_id, *_KINDS, family_id]).fetchall()
    rows: list[_Row] = []
    bad_ts = 0
    top = 0
    for rid, member, kind, item, rating, context, ts, event_hash in fetched:
        top = max(top, rid)
        if kind not in _KINDS:
            continue
        at = _parse_ts(ts) if isinstance(ts, str) else None
        if at is None:
            bad_ts += 1
            continue
        rows.append(_Row(rid, member, kind, item, rating, context, ts, at, event_hash))
    return rows, top, bad_ts


def _positive(row: _Row) -> bool:
    return row.kind == "suggestion_accepted" or (
        row.kind == "rating" and row.rating is not None and row.rating >= POSITIVE_MIN_RATING
    )


def _negative(row: _Row) -> bool:
    return row.kind == "suggestion_rejected" or (
        row.kind == "rating" and row.rating is not None and row.rating <= NEGATIVE_MAX_RATING
    )


class _Recent:
    """``Store.recent_accepted(family, members, limit, before=ts)``, over rows read once."""

    def __init__(self, rows: list[_Row]) -> None:
        kept = [r for r in rows if r.item and _positive(r)]
        kept.sort(key=lambda r: (r.ts, r.id))
        self._ts = [r.ts for r in kept]
        self._rows = kept

    def __call__(self, members: tuple[str, ...], limit: int, before: str) -> list[str]:
        out: list[str] = []
        if limit <= 0:
            return out
        for i in range(bisect_left(self._ts, before) - 1, -1, -1):
            row = self._rows[i]
            if row.member in members and row.item not in out:
                out.append(row.item or "")
                if len(out) >= limit:
                    break
        return out


class _Negatives:
    """What each member turned down (rejections, poor ratings), by time."""

    def __init__(self, rows: list[_Row]) -> None:
        self._rows: dict[str, list[_Row]] = {}
        for row in rows:
            if _negative(row) and _meaningful(row.item) and _servable(row.item or ""):
                self._rows.setdefault(row.member, []).append(row)
        for listed in self._rows.values():
            listed.sort(key=lambda r: (r.at, r.id))
        self._at = {m: [r.at for r in listed] for m, listed in self._rows.items()}

    def __call__(
        self, row: _Row, key: tuple[str | None, ...], situation: Callable[[_Row], _Situation]
    ) -> tuple[str, ...]:
        """Titles (as targets) the member turned down in ``row``'s session, but not its own."""
        times = self._at.get(row.member, [])
        lo = bisect_left(times, row.at - SESSION_WINDOW)
        hi = bisect_right(times, row.at + SESSION_WINDOW)
        out: list[str] = []
        for neg in self._rows.get(row.member, [])[lo:hi]:
            target = title_target(neg.item or "")
            if neg.item != row.item and situation(neg).key == key and target not in out:
                out.append(target)
        return tuple(out)


class _Sampled:
    """Other titles the family met, drawn per example (``Example.sampled``)."""

    def __init__(self, rows: list[_Row], situation: Callable[[_Row], _Situation]) -> None:
        self._titles = sorted(
            {r.item for r in rows if r.item and _meaningful(r.item) and _servable(r.item)}
        )
        self._taken: dict[tuple[str, tuple[str | None, ...]], set[str]] = {}
        for r in rows:
            if _positive(r) and r.item:
                self._taken.setdefault((r.member, situation(r).key), set()).add(r.item)

    def __call__(
        self, row: _Row, key: tuple[str | None, ...], example_id: str, k: int, seed: int,
        members: tuple[str, ...], unsafe: Callable[[str, tuple[str, ...]], bool],
    ) -> tuple[str, ...]:  # fmt: skip
        if k <= 0:
            return ()
        taken = self._taken.get((row.member, key), set())
        pool = [t for t in self._titles if t != row.item and t not in taken]
        pool.sort(key=lambda t: _unit(seed, "sampled", example_id, t))
        out: list[str] = []
        for title in pool:
            if not unsafe(title, members):
                out.append(title_target(title))
                if len(out) == k:
                    break
        return tuple(out)


def _unsafe(item: str, family: Family, members: tuple[str, ...], config: Config) -> bool:
    """A target the family's rules would block now for these members (never taught)."""
    if topic_hits(item, family.safety.blocked_topics):
        return True
    rating = estimated_rating(item, "G")
    for m in members:
        member = family.members[m]
        if topic_hits(item, member.avoided_topics):
            return True
        if rank(rating) > rank(member_rating_limit(member, family, config.system.safety)):
            return True
    return False


def build_dataset(
    store: Store,
    config: Config,
    family_id: str,
    *,
    since_id: int | None = None,
    settings: TrainingSettings | None = None,
    recent_examples: int | None = None,
    max_heldout: int = 64,
) -> Dataset:
    """The family's examples: new ones (ids after ``since_id``), replay, and the held-out set."""
    family = config.family(family_id)
    settings = settings or config.system.training
    limit = config.system.recommendations.recent_examples
    limit = limit if recent_examples is None else recent_examples
    rows, top, bad_ts = _load(store, family_id)
    skipped: Counter[str] = Counter({"unreadable_time": bad_ts} if bad_ts else {})
    tokens = role_token_members(family)
    situations: dict[str | None, _Situation] = {}

    def situation(row: _Row) -> _Situation:
        if row.context not in situations:
            situations[row.context] = _situation(row.context, family, tokens)
        return situations[row.context]

    negatives = _Negatives(rows)
    sampled = _Sampled(rows, situation)

    @functools.cache
    def unsafe_for(title: str, members: tuple[str, ...]) -> bool:  # targets and sampled titles
        return _unsafe(title, family, members, config)

    recent = _Recent(rows)
    last_kept: dict[tuple[str, str, tuple[str | None, ...]], datetime] = {}
    examples: list[Example] = []
    for row in sorted((r for r in rows if _positive(r)), key=lambda r: (r.at, r.id)):
        if row.member not in family.members:
            skipped["unknown_member"] += 1
            continue
        if not _meaningful(row.item):
            skipped["empty_item"] += 1
            continue
        item = row.item or ""
        if not _servable(item):
            skipped["unservable_item"] += 1
            continue
        where = situation(row)
        skipped["context_values_dropped"] += where.dropped
        session = (row.member, item, where.key)
        if session in last_kept and row.at - last_kept[session] <= SESSION_WINDOW:
            skipped["same_session_repeat"] += 1
            continue
        last_kept[session] = row.at
        members = tuple(dict.fromkeys((row.member, *where.present)))
        if unsafe_for(item, members):
            skipped["unsafe_target"] += 1
            continue
        at = row.at.astimezone().replace(tzinfo=None)  # local wall-clock time, as serving uses
        shown = recent(members, limit, row.ts)
        plan = plan_prompt(family, members, where.context, config.system.safety, shown, at)
        if not plan.categories:
            skipped["no_allowed_category"] += 1
            continue
        example_id = row.event_hash[:32] if row.event_hash else f"row-{row.id}"
        held = _unit(settings.seed, "split", example_id) < settings.heldout_fraction
        passed = negatives(row, where.key, situation)
        others = sampled(
            row, where.key, example_id, 0 if held else settings.sampled_negatives,
            settings.seed, members, unsafe_for,
        )  # fmt: skip
        examples.append(
            Example(
                id=example_id,
                split="heldout" if held else "train",
                prompt=plan.prompt + ANSWER_PREFIX,
                target=title_target(item),
                negatives=passed,
                member=row.member,
                interaction_id=row.id,
                sampled=tuple(t for t in others if t not in passed),
            )
        )
    train, heldout, new = _select(examples, since_id, settings, max_heldout, skipped)
    upto = max(top, since_id or 0)
    kept = {k: v for k, v in skipped.items() if v}
    why = ",".join(f"{k}:{v}" for k, v in sorted(kept.items())) or "none"
    log.info(
        "dataset family=%s train=%d new=%d heldout=%d upto=%d skipped=%s",
        *(family_id, len(train), new, len(heldout), upto, why),
    )
    return Dataset(family_id, train, heldout, upto, new, kept)


def _select(
    examples: list[Example],
    since_id: int | None,
    settings: TrainingSettings,
    max_heldout: int,
    skipped: Counter[str],
) -> tuple[tuple[Example, ...], tuple[Example, ...], int]:
    """Train (new plus replay), held out (the most recent), and how many are new."""
    examples = sorted(examples, key=lambda e: e.interaction_id)
    heldout = [e for e in examples if e.split == "heldout"]
    if len(heldout) > max_heldout:
        skipped["heldout_beyond_cap"] += len(heldout) - max_heldout
    heldout = heldout[-max_heldout:] if max_heldout > 0 else []
    trainable = [e for e in examples if e.split == "train"]
    new = [e for e in trainable if since_id is None or e.interaction_id > since_id]
    older = [e for e in trainable if since_id is not None and e.interaction_id <= since_id]
    count = min(len(older), round(settings.replay_fraction * len(new)))
    older.sort(key=lambda e: _unit(settings.seed, "replay", since_id, e.id))
    replay = [replace(e, replay=True) for e in older[:count]]
    train = sorted(new + replay, key=lambda e: e.interaction_id)
    return tuple(train), tuple(heldout), len(new)


def count_interactions(store: Store, family_id: str, since_id: int | None = None) -> int:
    """Scrubbed interactions of the family (any kind) stored after ``since_id``."""
    with store.transaction() as db:
        row = db.execute(
            "SELECT COUNT(*) FROM interactions WHERE family_id = ? AND id > ?",
            [family_id, since_id if since_id is not None else -1],
        ).fetchone()
    return int(row[0])
