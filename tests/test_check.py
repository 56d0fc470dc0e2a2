"""POST /v1/families/{family}/check against a real daemon: verdicts, reasons, parents' lists,
time windows, several members, bad input, scopes on the LAN, audit, status, metrics, the CLI,
and the same verdicts as the recommendation path (the model is forced to write the items)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import RunningDaemon, family_config, start_daemon

from insan_edge.client import ClientError

AFTERNOON = "2026-11-23T15:00:00"  # a Monday
EVENING = "2026-11-23T20:00:00"  # inside kim's 19:00-07:00 no-screens window
SAME = [
    {"title": "Zombie war night", "description": "A bloody battle movie marathon.",
     "category": "craft", "content_rating": "G", "reason": "exciting"},
    {"title": "Spider safari", "description": "Find and count the spiders in the garden.",
     "category": "outdoor", "content_rating": "G", "reason": "nature"},
    {"title": "Teen detective novel", "description": "A mystery book for older readers.",
     "category": "book", "content_rating": "PG-13", "reason": "mystery"},
    {"title": "Cartoon marathon", "description": "Three episodes of a friendly cartoon.",
     "category": "show", "content_rating": "G", "reason": "relaxing"},
    {"title": "Knights and castles colouring", "description": "Colour in a castle with knights.",
     "category": "craft", "content_rating": "G", "reason": "drawing"},
    # Known by name (an 8+ book: PG): the model's "G" is not what the box serves or reports.
    {"title": "Charlotte's Web", "description": "A story about a pig on a farm and his friends.",
     "category": "book", "content_rating": "G", "reason": "reading"},
]  # fmt: skip


def _config(model: Path, tmp: Path) -> dict[str, Any]:
    grammar = tmp / "force.gbnf"  # the model can only write SAME
    text = json.dumps({"items": SAME}, ensure_ascii=False)
    grammar.write_text("root ::= " + json.dumps(text, ensure_ascii=False) + "\n")
    cfg = family_config(
        model, tmp / "state", tmp / "api.sock",
        model={"grammar_file": str(grammar), "context_length": 4096},
        recommendations={"generation_rounds": 1},
        lan={"enabled": True, "port": 0, "host": "127.0.0.1", "interfaces": ["127.0.0.1"],
             "instance_name": "check test box", "advertise": False},
    )  # fmt: skip
    fam = cfg["families"]["testfam"]
    kim = fam["members"]["kim"]
    kim["safety_level"] = "moderate"  # 8 and moderate: a PG limit
    kim["allow_list"] = ["Star Wars"]
    kim["deny_list"] = ["slime"]
    fam["members"]["ada"] = {"name": "Ada", "age": 5, "role": "child"}  # limit G
    fam["safety"]["deny_list"] = ["Skibidi"]
    fam["privacy"] = {"pets": ["Biscuit"]}
    return cfg


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[RunningDaemon]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("check")
    d = start_daemon(tmp, _config(tiny_model_path, tmp))
    yield d
    assert d.stop() == 0, d.log()


def check(d: RunningDaemon, items: list[dict[str, Any]], **body: Any) -> list[dict[str, Any]]:
    body.setdefault("member", "kim")
    body.setdefault("context", {"at": AFTERNOON})
    answer = d.client.request("POST", "/v1/families/testfam/check", {**body, "items": items})
    assert len(answer["results"]) == len(items)
    return list(answer["results"])


def _rules(result: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(r["rule"], r["member"]) for r in result["reasons"] if r["blocks"]}


def test_each_rule_fires_with_a_reason_a_parent_reads(daemon: RunningDaemon) -> None:
    items = [
        {"title": "Knights and castles colouring", "kind": "craft"},
        {"title": "Battle robots", "description": "Robots fight to the end.", "kind": "show"},
        {"title": "Teen detective", "content_rating": "PG-13", "kind": "book"},
        {"title": "Spider safari", "kind": "outdoor"},
        {"title": "Watch 'Hereditary'", "content_rating": "G", "kind": "movie"},
        {"title": "A friendly cartoon", "content_rating": "TV-Y", "kind": "show"},
    ]
    ok, violent, rated, spiders, hereditary, cartoon = check(daemon, items)
    assert ok["allowed"] and ok["reasons"] == [] and ok["rating"] == "G" and ok["index"] == 0
    assert not violent["allowed"] and ("blocked_topic", None) in _rules(violent)
    assert "blocked topic for the family: violence" in violent["reasons"][0]["message"]
    assert any(t["topic"] == "violence" for t in violent["topics"])
    assert _rules(rated) == {("content_rating", "kim")}
    assert rated["reasons"][0]["message"] == "rated PG-13, kim's limit is PG"
    assert _rules(spiders) == {("avoided_topic", "kim")}
    assert "kim avoids the topic: spiders" in spiders["reasons"][0]["message"]
    # Its words say nothing; the title table knows it. The app's G is not trusted.
    assert not hereditary["allowed"] and hereditary["rating"] == "R"
    assert hereditary["known_title"]["title"] == "Hereditary"
    assert "'Hereditary' (2018) is rated R (MPAA)" in hereditary["reasons"][0]["message"]
    assert cartoon["allowed"] and cartoon["rating"] == "G"
    # In the evening the same cartoon is a screen inside kim's window.
    [late] = check(daemon, [items[-1]], context={"at": EVENING})
    assert _rules(late) == {("time_restriction", "kim")}
    assert late["reasons"][0]["message"].startswith("no screens at night: no show for kim")


def test_several_members_must_all_be_suited(daemon: RunningDaemon) -> None:
    items = [{"title": "A gentle adventure", "content_rating": "PG", "kind": "movie"}]
    assert check(daemon, items)[0]["allowed"]  # kim: PG
    [both] = check(daemon, items, member=None, members=["kim", "ada"])
    assert _rules(both) == {("content_rating", "ada")}
    [present] = check(daemon, items, member="pat", context={"at": AFTERNOON, "present": ["ada"]})
    assert _rules(present) == {("content_rating", "ada")}
    answer = daemon.client.request("POST", "/v1/families/testfam/check", {"items": items})
    assert answer["members"] == ["pat", "kim", "ada"]  # nobody named: the whole family


def test_parents_lists_win_and_say_so(daemon: RunningDaemon) -> None:
    items = [
        {"title": "Star Wars: A New Hope (1977)", "description": "Space wars and a battle.", "kind": "movie"},
        {"title": "Slime making", "kind": "craft"},
        {"title": "Skibidi toilet compilation", "kind": "video"},
        {"title": "Star Wars: A New Hope", "kind": "movie"},
    ]  # fmt: skip
    allowed, slime, skibidi, at_night = check(daemon, items[:3]) + check(
        daemon, items[3:], context={"at": EVENING}
    )
    assert allowed["allowed"]
    assert allowed["reasons"][0] == {"rule": "parent_allow", "member": "kim", "blocks": False,
                                     "message": "on kim's allow-list: 'Star Wars'"}  # fmt: skip
    lifted = [r for r in allowed["reasons"][1:]]
    assert lifted and all(not r["blocks"] and "overridden" in r["message"] for r in lifted)
    assert _rules(slime) == {("parent_deny", "kim")}
    assert slime["reasons"][0]["message"] == "on kim's deny-list: 'slime'"
    assert _rules(skibidi) == {("parent_deny", "kim")}
    assert "the family's deny-list: 'Skibidi'" in skibidi["reasons"][0]["message"]
    assert _rules(at_night) == {("time_restriction", "kim")}  # allowed is about what, not when
    # pat has no allow-list: the family's blocked topic stands for him.
    [pats] = check(daemon, items[:1], member="pat")
    assert ("blocked_topic", None) in _rules(pats)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"member": "kim", "items": []}, 422, "items"),
        ({"member": "kim"}, 422, "items"),
        ({"member": "kim", "items": [{"title": "  "}]}, 422, "items.0.title"),
        ({"member": "kim", "items": [{"title": "x" * 501}]}, 422, "items.0.title"),
        ({"member": "kim", "items": [{"title": "a"}] * 101}, 422, "items"),
        ({"member": "kim", "items": [{"title": "a", "content_rating": "X9"}]}, 422, "items.0.content_rating"),
        ({"member": "kim", "items": [{"title": "a", "kind": "film"}]}, 422, "items.0.kind"),
        ({"member": "kim", "items": [{"title": "a", "colour": 1}]}, 422, "items.0.colour"),
        ({"member": "nobody", "items": [{"title": "a"}]}, 404, "nobody"),
        ({"member": "Bad Id", "items": [{"title": "a"}]}, 422, "member"),
        ([{"title": "a"}], 400, "object"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_4xx(
    daemon: RunningDaemon, body: Any, status: int, field: str
) -> None:
    code, answer = _raw(daemon, "/v1/families/testfam/check", json.dumps(body).encode())
    assert code == status, answer
    assert field in answer["error"]["message"]


def _raw(d: RunningDaemon, path: str, payload: bytes) -> tuple[int, Any]:
    status, data, _ = d.client._once("POST", path, payload)
    return status, data


def test_unknown_family_huge_body_and_bad_json(daemon: RunningDaemon) -> None:
    one = json.dumps({"member": "kim", "items": [{"title": "a"}]}).encode()
    code, answer = _raw(daemon, "/v1/families/nofam/check", one)
    assert code == 404 and answer["error"]["code"] == "unknown_family"
    big = json.dumps({"member": "kim", "items": [{"title": "a", "description": "x" * 1999}] * 100})
    assert _raw(daemon, "/v1/families/testfam/check", big.encode())[0] == 200  # 200 KB fits
    huge = json.dumps({"member": "kim", "items": [{"title": "a", "description": "x" * 300_000}]})
    code, answer = _raw(daemon, "/v1/families/testfam/check", huge.encode())
    assert code == 413 and answer["error"]["code"] == "payload_too_large"
    assert _raw(daemon, "/v1/families/testfam/check", b"{not json")[0] == 400
    assert daemon.client.health()["status"] == "ok" and "api.crash" not in daemon.log()


def test_check_and_recommendations_give_the_same_verdicts(daemon: RunningDaemon) -> None:
    ask = {"member": "kim", "count": 6, "context": {"at": EVENING}}
    answer = daemon.client.recommend("testfam", ask)
    served = {i["title"]: i["content_rating"] for i in answer["items"]}
    items = [{"title": i["title"], "description": i["description"], "kind": i["category"],
              "content_rating": i["content_rating"]} for i in SAME]  # fmt: skip
    verdicts = check(daemon, items, context={"at": EVENING})
    # The same verdicts, and the same rating: the box's own estimate in both answers.
    allowed = {i["title"]: v["rating"] for i, v in zip(SAME, verdicts, strict=True) if v["allowed"]}
    assert allowed == served
    assert served == {"Knights and castles colouring": "G", "Charlotte's Web": "PG"}


def test_blocked_items_are_audited_scrubbed_counted_and_shown(daemon: RunningDaemon) -> None:
    title = "Kim's gory clip https://videos.example/watch?v=abc123&user=kim Biscuit"
    [r] = check(daemon, [{"title": title, "description": "Blood and gore.", "kind": "video"}])
    assert not r["allowed"]
    rows = daemon.client.request("GET", "/v1/families/testfam/audit?limit=1000")["decisions"]
    mine = [
        row for row in rows if row["event"] == "check_blocked" and "gory" in row["detail"]["title"]
    ]
    assert mine
    stored = json.dumps(mine)
    assert "abc123" not in stored and "?v=" not in stored and "Biscuit" not in stored
    assert "<URL videos.example>" in mine[0]["detail"]["title"]
    assert "Kim" not in mine[0]["detail"]["title"] and "<CHILD_1>" in mine[0]["detail"]["title"]
    checks = daemon.client.status()["checks"]
    assert checks["items_blocked"] >= 1 and checks["blocked_by_rule"]["blocked_topic"] >= 1
    page = daemon.client.request("GET", "/metrics")
    assert 'insan_edge_checks_blocked_by_rule_total{rule="blocked_topic"}' in page
    out = _cli(daemon, "audit", "--family", "testfam", "--since", "1h")
    assert (
        out.returncode == 0
        and "blocked_topic" in out.stdout
        and "<URL videos.example>" in out.stdout
    )
    assert (
        "no decisions"
        in _cli(daemon, "audit", "--family", "testfam", "--since", "2099-01-01T00:00").stdout
    )


def _cli(d: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "insan_edge.cli", *args, "--socket", str(d.socket)]
        if args[0] == "audit"
        else [sys.executable, "-m", "insan_edge.cli", args[0], "--socket", str(d.socket), *args[1:]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_check_exit_codes(daemon: RunningDaemon) -> None:
    ok = _cli(daemon, "check", "--family", "testfam", "--member", "kim", "--at", AFTERNOON,
              "Shooting-star night walk", "Look for meteors with a torch")  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.startswith("ALLOWED for kim"), ok.stderr
    bad = _cli(daemon, "check", "--family", "testfam", "--member", "kim", "--at", AFTERNOON,
               "--kind", "video_game", "Play Doom Eternal")  # fmt: skip
    assert bad.returncode == 1 and "NOT ALLOWED" in bad.stdout
    assert "'Doom Eternal' (2020) is rated M (ESRB), kim's limit is PG" in bad.stdout
    err = _cli(daemon, "check", "--family", "nofam", "--member", "kim", "Bluey")
    assert err.returncode == 2 and "nofam" in err.stderr


def test_on_the_lan_a_member_token_may_check_for_that_member_only(daemon: RunningDaemon) -> None:
    port = daemon.client.status()["lan"]["port"]
    assert port

    def token(*scopes: str) -> str:
        made = daemon.client.request(
            "POST", "/v1/tokens", {"app": "kids-tablet", "scopes": list(scopes)}
        )
        return str(made["token"])

    def call(tok: str, body: dict[str, Any], path: str = "/v1/families/testfam/check") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {tok}"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    one = {"items": [{"title": "Bluey"}]}
    kim = token("recommend:testfam/kim")
    assert call(kim, {**one, "member": "kim"}) == 200
    assert call(kim, {**one, "member": "pat"}) == 403
    assert call(kim, {**one, "members": ["kim", "ada"]}) == 403
    assert call(kim, one) == 403  # the whole family
    assert call(token("recommend:testfam"), {**one, "member": "pat"}) == 200
    assert call(token("ingest:testfam"), {**one, "member": "kim"}) == 403
    with pytest.raises(ClientError):
        daemon.client.request("POST", "/v1/families/testfam/check", {"items": []})
