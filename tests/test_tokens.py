"""App tokens on a real SQLite store: scopes, hashing, checking, revocation; and the rate limiter."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from insan_edge.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError
from insan_edge.gateway import Bucket
from insan_edge.scopes import SCOPE_PATTERN, parse_scope
from insan_edge.store import Store
from insan_edge.tokens import Tokens


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(Store(tmp_path / "db.sqlite"))


def test_scopes_parse_and_print_back() -> None:
    for text in ("admin", "ingest", "ingest:smith", "recommend:smith", "recommend:smith/emma",
                 "recommend:*"):  # fmt: skip
        assert str(parse_scope(text)) == text
        assert re.match(SCOPE_PATTERN, text)  # the pattern the OpenAPI document publishes
    for bad in ("", "root", "recommend", "recommend:", "recommend:Smith", "ingest:a/b", "admin:x",
                "recommend:smith/", "recommend:*/emma"):  # fmt: skip
        with pytest.raises(BadRequestError, match="unknown scope"):
            parse_scope(bad)
        assert not re.match(SCOPE_PATTERN, bad)


def test_only_a_hash_of_the_secret_is_stored(tokens: Tokens, tmp_path: Path) -> None:
    made = tokens.add("kitchen tablet", ["recommend:smith"])
    token = made["token"]
    assert token.startswith(f"iet_{made['id']}_")
    secret = token.split("_", 2)[2]
    dump = "\n".join(sqlite3.connect(tmp_path / "db.sqlite").iterdump())
    assert secret not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    assert "token" not in tokens.list()[0]
    grant = tokens.check(token)
    assert grant.app == "kitchen tablet" and grant.token_id == made["id"]
    assert tokens.list()[0]["last_used_at"] is not None


def test_wrong_malformed_and_revoked_tokens_are_refused(tokens: Tokens) -> None:
    made = tokens.add("app", ["ingest"])
    token = made["token"]
    for wrong, reason in [
        ("", "malformed"),
        ("Bearer x", "malformed"),
        ("iet_zzzzzzzz_" + "a" * 43, "malformed"),
        (token[:-1] + ("A" if token[-1] != "A" else "B"), "unknown"),
        ("iet_00000000_" + token.split("_", 2)[2], "unknown"),
    ]:
        with pytest.raises(UnauthorizedError) as caught:
            tokens.check(wrong)
        assert caught.value.message == reason, wrong
    tokens.check(token)
    assert tokens.revoke(made["id"])["revoked_at"] is not None
    with pytest.raises(UnauthorizedError, match="revoked"):
        tokens.check(token)
    again = tokens.revoke(made["id"])  # revoking twice keeps the first time
    assert again["revoked_at"] == tokens.list()[0]["revoked_at"]
    with pytest.raises(NotFoundError):
        tokens.revoke("00000000")


def test_a_token_needs_an_app_name_and_a_scope(tokens: Tokens) -> None:
    with pytest.raises(BadRequestError, match="at least one scope"):
        tokens.add("app", [])
    with pytest.raises(BadRequestError, match="app name"):
        tokens.add("<script>", ["admin"])
    assert tokens.list() == []


def test_grants_follow_their_scopes(tokens: Tokens) -> None:
    def grant(*scopes: str):  # type: ignore[no-untyped-def]
        return tokens.check(tokens.add("app", list(scopes))["token"])

    family = grant("recommend:smith")
    assert family.may_recommend("smith") and family.may_recommend("smith", ["emma", "dad"])
    assert not family.may_recommend("jones") and not family.may_recommend("jones", ["x"])
    assert not family.is_admin and not family.may_ingest("smith")
    with pytest.raises(ForbiddenError, match="jones"):
        family.require_recommend("jones")

    emma = grant("recommend:smith/emma", "recommend:smith/leo")
    assert emma.may_recommend("smith", ["emma"]) and emma.may_recommend("smith", ["emma", "leo"])
    assert not emma.may_recommend("smith", ["emma", "dad"])
    assert not emma.may_recommend("smith")  # the whole family includes the others
    assert not emma.may_recommend("smith", [])

    every = grant("recommend:*")
    assert every.may_recommend("smith") and every.may_recommend("jones", ["x"])

    ingest = grant("ingest:smith")
    assert ingest.may_ingest("smith") and ingest.may_ingest(None) and not ingest.may_ingest("jones")
    with pytest.raises(ForbiddenError, match="jones"):
        ingest.require_ingest(["smith", "jones"])
    assert not ingest.may_recommend("smith")

    admin = grant("admin")
    assert admin.is_admin and admin.may_recommend("x") and admin.may_ingest("y")
    admin.require_admin()
    with pytest.raises(ForbiddenError, match="admin"):
        ingest.require_admin()


def test_a_bucket_passes_its_burst_then_the_rate() -> None:
    bucket = Bucket(level=3.0, at=0.0)
    rate = 1.0  # a second per request
    assert [bucket.take(rate, 3.0, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(rate, 3.0, 0.0) == pytest.approx(1.0)
    assert bucket.take(rate, 3.0, 0.5) == pytest.approx(0.5)
    assert bucket.take(rate, 3.0, 1.0) == 0.0
    assert bucket.peek(rate, 3.0, 100.0) == 0.0
    assert bucket.take(rate, 3.0, 100.0) == 0.0 and bucket.level == pytest.approx(2.0)
