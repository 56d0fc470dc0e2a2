"""The PII scrubber against a labelled corpus of invented household messages.

Corpus: ``tests/data/pii_corpus.jsonl``, one message a line with its labelled personal data
(``{"type": ..., "value": exact substring}``); the family config is ``tests/data/pii_family.yaml``.
Label types are the placeholder types, except ``MEMBER``: a family member's own name, which must
become that member's role token (``<PARENT_1>``, ``<CHILD_2>``...).

Metrics, per label type T (``pytest -s`` prints the table):

- **recall**: a labelled value counts as recalled when it no longer appears in the scrubbed text
  as a whole word (case-sensitive). recall(T) = recalled values of type T / labelled values of T.
- **precision**: placeholders carry no offsets, so it is counted per message:
  TP(T) = min(placeholders of type T produced, values of type T recalled) and
  precision(T) = sum TP(T) / sum placeholders of type T produced. A ``MEMBER`` placeholder is
  any role token. A placeholder with no label of its type in its message (a false alarm such
  as "Frozen" -> ``<PERSON>``, a person spaCy calls a place -> ``<LOCATION>``, or a town
  inside a labelled organisation's name scrubbed as ``<LOCATION>``) lowers precision of its type.

Recall is generous to partial hits: "Willowmere Swim Club" scrubbed to "<LOCATION> Swim Club"
counts as recalled (the identifying part is gone).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from insan_edge.config.family import Family
from insan_edge.config.loader import load_config
from insan_edge.errors import UnknownFamilyError
from insan_edge.privacy import Scrubbed, Scrubber, role_tokens

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "pii_corpus.jsonl"
FAMILY_FILE = DATA / "pii_family.yaml"
STRUCTURED = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "URL")
DENY_LISTED = ("MEMBER", "PET", "SCHOOL")
ROLE_TOKEN = re.compile(r"<(?:PARENT|CHILD|GRANDPARENT|MEMBER)_\d+>")
PLACEHOLDER = re.compile(r"<([A-Z]+(?:_\d+)?)>")
# floors: what this corpus measures today, less a little room (see the printed table)
RECALL_FLOOR = {"ALL": 0.99, "PERSON": 0.95, "LOCATION": 0.95, "ORG": 0.85, "DATE": 0.9}
PRECISION_FLOOR = {
    "ALL": 0.85,
    **dict.fromkeys((*STRUCTURED, *DENY_LISTED, "ADDRESS"), 1.0),
    "PERSON": 0.75,
    "LOCATION": 0.4,
}


def _families() -> dict[str, Family]:
    return dict(load_config(FAMILY_FILE).config.families)


@pytest.fixture(scope="module")
def families() -> dict[str, Family]:
    return _families()


@pytest.fixture(scope="module")
def scrubber(families: dict[str, Family]) -> Scrubber:
    return Scrubber(families)


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def scrubbed(scrubber: Scrubber, corpus: list[dict[str, Any]]) -> list[Scrubbed]:
    return scrubber.scrub("testfam", [row["text"] for row in corpus])


def _survives(value: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


def _placeholder_type(name: str) -> str:
    return "MEMBER" if ROLE_TOKEN.fullmatch(f"<{name}>") else name


def _metrics(corpus: list[dict[str, Any]], scrubbed: list[Scrubbed]) -> dict[str, dict[str, float]]:
    labelled: Counter[str] = Counter()
    recalled: Counter[str] = Counter()
    produced: Counter[str] = Counter()
    true_pos: Counter[str] = Counter()
    for row, out in zip(corpus, scrubbed, strict=True):
        got = Counter(_placeholder_type(p) for p in PLACEHOLDER.findall(out.text))
        hits: Counter[str] = Counter()
        for label in row["pii"]:
            labelled[label["type"]] += 1
            if not _survives(label["value"], out.text):
                hits[label["type"]] += 1
        recalled.update(hits)
        produced.update(got)
        for kind, n in got.items():
            true_pos[kind] += min(n, hits[kind])
    table: dict[str, dict[str, float]] = {}
    for kind in sorted(set(labelled) | set(produced)):
        table[kind] = {
            "labelled": labelled[kind],
            "produced": produced[kind],
            "recall": recalled[kind] / labelled[kind] if labelled[kind] else float("nan"),
            "precision": true_pos[kind] / produced[kind] if produced[kind] else float("nan"),
        }
    total_l, total_p = sum(labelled.values()), sum(produced.values())
    table["ALL"] = {
        "labelled": total_l,
        "produced": total_p,
        "recall": sum(recalled.values()) / total_l,
        "precision": sum(true_pos.values()) / total_p,
    }
    return table


def test_corpus_is_sound(corpus: list[dict[str, Any]]) -> None:
    assert len(corpus) >= 200
    assert sum(1 for row in corpus if not row["pii"]) >= 40, "negatives are part of the test"
    for row in corpus:
        assert row["family"] == "testfam"
        for label in row["pii"]:
            assert label["value"] in row["text"], label


def test_precision_and_recall(corpus: list[dict[str, Any]], scrubbed: list[Scrubbed]) -> None:
    table = _metrics(corpus, scrubbed)
    print(f"\n{'type':<10} {'labelled':>8} {'produced':>8} {'recall':>7} {'precision':>9}")
    for kind, row in table.items():
        print(
            f"{kind:<10} {row['labelled']:>8.0f} {row['produced']:>8.0f}"
            f" {row['recall']:>7.3f} {row['precision']:>9.3f}"
        )
    for kind in (*STRUCTURED, *DENY_LISTED, "ADDRESS"):
        assert table[kind]["recall"] == 1.0, kind
    for kind, floor in RECALL_FLOOR.items():
        assert table[kind]["recall"] >= floor, kind
    for kind, floor in PRECISION_FLOOR.items():
        assert table[kind]["precision"] >= floor, kind


def test_no_structured_or_deny_listed_value_survives(
    corpus: list[dict[str, Any]], scrubbed: list[Scrubbed]
) -> None:
    leaks = [
        (label["type"], label["value"])
        for row, out in zip(corpus, scrubbed, strict=True)
        for label in row["pii"]
        if label["type"] in (*STRUCTURED, *DENY_LISTED, "ADDRESS")
        and _survives(label["value"], out.text)
    ]
    assert leaks == []


def test_member_names_become_their_role_tokens(
    families: dict[str, Family], corpus: list[dict[str, Any]], scrubbed: list[Scrubbed]
) -> None:
    family = families["testfam"]
    tokens = role_tokens(family)
    by_name = {}
    for member_id, member in family.members.items():
        by_name[member.name.casefold()] = tokens[member_id]
        by_name[member.name.split()[0].casefold()] = tokens[member_id]
    checked = 0
    for row, out in zip(corpus, scrubbed, strict=True):
        for label in row["pii"]:
            if label["type"] == "MEMBER":
                assert by_name[label["value"].casefold()] in out.text, (label, out.text)
                checked += 1
    assert checked >= 50


def test_role_tokens_are_stable_and_distinct(
    families: dict[str, Family], scrubber: Scrubber
) -> None:
    tokens = role_tokens(families["testfam"])
    assert tokens == {
        "dana": "<PARENT_1>",
        "marcus": "<PARENT_2>",
        "maya": "<CHILD_1>",
        "theo": "<CHILD_2>",
        "rosa": "<GRANDPARENT_1>",
    }
    text = "Dana told Marcus that maya and THEO visit Grandma Rosa; Dana Whitfield drives."
    first = scrubber.scrub("testfam", [text])[0]
    again = Scrubber(families).scrub("testfam", [text, "Theo"])
    assert first == again[0]
    assert first.text == (
        "<PARENT_1> told <PARENT_2> that <CHILD_1> and <CHILD_2> visit Grandma <GRANDPARENT_1>;"
        " <PARENT_1> drives."
    )
    assert first.entities["PARENT_1"] == 2
    assert again[1].text == "<CHILD_2>"


def test_batch_order_empty_and_unknown_family(scrubber: Scrubber) -> None:
    assert scrubber.scrub("testfam", []) == []
    out = scrubber.scrub("testfam", ["", "Call 555-0142", "  ", "no pii here"])
    assert [o.text for o in out] == ["", "Call <PHONE>", "  ", "no pii here"]
    assert out[1].entities == {"PHONE": 1}
    with pytest.raises(FrozenInstanceError):
        out[0].text = "x"  # type: ignore[misc]
    with pytest.raises(UnknownFamilyError):
        scrubber.scrub("nobody", ["hi"])


def test_raw_text_is_never_logged(scrubber: Scrubber, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Zanzibarovich"
    with caplog.at_level(logging.DEBUG):
        out = scrubber.scrub("testfam", [f"Mr. {secret} emailed maya at z.q@example.com"])
    assert secret not in out[0].text
    assert secret not in caplog.text
    assert "z.q@example.com" not in caplog.text


def test_first_scrub_is_quiet_and_offline() -> None:
    """A fresh process: no network attempt (sockets refuse and record), nothing on stderr."""
    script = textwrap.dedent(
        f"""
        import socket, sys, time
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args[:2])
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from pathlib import Path
        from insan_edge.config.loader import load_config
        from insan_edge.privacy import Scrubber
        families = dict(load_config(Path({str(FAMILY_FILE)!r})).config.families)
        scrubber = Scrubber(families)
        start = time.monotonic()
        out = scrubber.scrub("testfam", ["mail me at ann.lee@example.com or www.example.org/x"])
        took = time.monotonic() - start
        print(out[0].text, len(attempts), round(took, 3))
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    text, attempts, took = done.stdout.strip().rsplit(" ", 2)
    assert text == "mail me at <EMAIL> or <URL>"
    assert attempts == "0"
    assert float(took) < 2.0
