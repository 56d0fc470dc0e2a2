"""The parents' dashboard against a real daemon on a temporary socket and loopback port.

Browser tests drive Debian's Chromium through Playwright (one browser for the module); they
skip, saying why, where either is missing. The HTTP tests run everywhere.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import closing
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import RunningDaemon, family_config, start_daemon

DATA = Path(__file__).parent / "data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PHONE, LAPTOP = (390, 844), (1366, 900)
PAGES = ("/", "/family", "/safety", "/privacy")


def _corpus() -> list[dict[str, Any]]:
    lines = (DATA / "pii_corpus.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _ts(days_ago: int, hour: int = 10) -> str:
    at = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return at.replace(hour=hour, minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _demo_events() -> list[dict[str, Any]]:
    out = []
    picks = {"maya": ("Paper plate dinosaur masks", "Watercolour sunset painting"),
             "theo": ("Cardboard marble run", "Pressed flower bookmarks"),
             "dana": ("Homemade pizza night", "Slow cooked vegetable stew")}  # fmt: skip
    for day in range(20):
        for member, (liked, disliked) in picks.items():
            out.append({"family": "testfam", "member": member, "kind": "suggestion_accepted",
                        "item": liked, "ts": _ts(day, 9 + day % 8)})  # fmt: skip
            if day % 3 == 0:
                out.append({"family": "testfam", "member": member, "kind": "suggestion_rejected",
                            "item": disliked, "ts": _ts(day, 18)})  # fmt: skip
    out.append({"family": "testfam", "member": "rosa", "kind": "rating", "item": "Baking banana "
                "bread together", "rating": 5, "ts": _ts(1)})  # fmt: skip
    # A child types something that must reach the parents (keyword signal; text never shown).
    out.append({"family": "testfam", "member": "maya", "kind": "query",
                "text": "sometimes i want to die", "ts": _ts(0, 8)})  # fmt: skip
    return out


def _seed(db_path: Path) -> None:
    """What a long-running box would have: two model versions and blocked suggestions."""
    now = _ts(0)
    with closing(sqlite3.connect(db_path, timeout=10)) as db, db:
        for v, status, acc in ((1, "retired", 0.61), (2, "active", 0.74)):
            db.execute(
                "INSERT INTO model_versions (family_id, version, status, created_at, promoted_at, "
                "path, examples, preference_accuracy, heldout_loss, safety_score, scores) "
                "VALUES ('testfam', ?, ?, ?, ?, ?, 120, ?, 1.2, 1.0, '{}')",
                [v, status, _ts(10 - v), _ts(10 - v), f"/nonexistent/v{v}", acc],
            )
        for rule, member in (("blocked_topic", "maya"), ("rating", "maya"), ("rating", "theo")):
            db.execute(
                "INSERT INTO audit_log (ts, family_id, member_id, event, rule, detail) "
                "VALUES (?, 'testfam', ?, 'item_dropped', ?, ?)",
                [now, member, rule, json.dumps({"title": "A scary film", "request_id": "r1"})],
            )


class Box:
    def __init__(self, daemon: RunningDaemon, port: int, local_port: int, admin: str, app: str):
        self.daemon, self.port, self.local_port = daemon, port, local_port
        self.admin, self.app = admin, app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Box]:
    tmp = tmp_path_factory.mktemp("dash")
    config = family_config(
        tiny_model_path, tmp / "state", tmp / "api.sock",
        lan={"enabled": True, "host": "127.0.0.1", "port": 0, "advertise": False},
        dashboard={"localhost_port": 0, "login_attempts_per_minute": 6},
        training={"enabled": True, "min_interactions_for_training": 100000,
                  "retraining_threshold": 100000},
    )  # fmt: skip
    config["families"] = yaml.safe_load((DATA / "pii_family.yaml").read_text())["families"]
    daemon = start_daemon(tmp, config)
    try:
        c = daemon.client
        admin = c.request("POST", "/v1/tokens", {"app": "parents", "scopes": ["admin"]})["token"]
        app = c.request(
            "POST", "/v1/tokens", {"app": "tablet", "scopes": ["recommend:*", "ingest"]}
        )
        corpus = [{"family": "testfam", "member": "dana", "kind": "query", "text": m["text"],
                   "ts": _ts(2), "context": {"n": i}} for i, m in enumerate(_corpus())]  # fmt: skip
        events = _demo_events() + corpus
        stored = c.request("POST", "/v1/interactions", events)["stored"]
        assert stored == len(events), daemon.log()[-3000:]
        _seed(daemon.state_dir / "insan-edge.db")
        deadline = time.monotonic() + 30
        while (s := c.status())["lan"]["port"] is None or s["dashboard"]["localhost_port"] is None:
            assert time.monotonic() < deadline, daemon.log()[-3000:]
            time.sleep(0.1)
        yield Box(daemon, s["lan"]["port"], s["dashboard"]["localhost_port"], admin, app["token"])
    finally:
        code = daemon.stop()
        assert code == 0, daemon.log()[-3000:]


def _http(
    port: int, method: str, path: str, form: dict[str, str] | None = None, cookie: str | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
        if cookie:
            headers["Cookie"] = cookie
        body = urllib.parse.urlencode(form) if form is not None else None
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.headers, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _login(port: int, secret: str) -> tuple[str, str]:
    """The session cookie and the page's CSRF token."""
    status, headers, _ = _http(port, "POST", "/login", {"secret": secret})
    assert status == 303, status
    cookie = headers["Set-Cookie"].split(";")[0]
    _, _, page = _http(port, "GET", "/", cookie=cookie)
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return cookie, m.group(1)


# --- HTTP: what works without a browser -----------------------------------------------------


def test_session_cookie_and_pages_need_login(box: Box) -> None:
    status, headers, _ = _http(box.port, "GET", "/family")
    assert status == 303 and headers["Location"] == "/login"
    status, headers, _ = _http(box.port, "POST", "/login", {"secret": box.admin})
    assert status == 303
    flags = headers["Set-Cookie"].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "max-age=" in flags
    assert "secure" not in flags  # plain HTTP here; Secure is set on TLS
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    # The localhost-only site serves the same pages.
    cookie, _ = _login(box.local_port, box.admin)
    status, _, page = _http(box.local_port, "GET", "/safety", cookie=cookie)
    assert status == 200 and "<h1>Safety</h1>" in page


def test_app_token_and_wrong_token_get_nothing(box: Box) -> None:
    status, headers, page = _http(box.port, "POST", "/login", {"secret": box.app})
    assert status == 401 and "Set-Cookie" not in headers and "app token" in page
    status, headers, _ = _http(box.port, "POST", "/login", {"secret": box.admin[:-3] + "xyz"})
    assert status == 401 and "Set-Cookie" not in headers
    # Presenting an app token as a bearer gets no page either.
    conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=30)
    conn.request("GET", "/family", headers={"Authorization": f"Bearer {box.app}"})
    r = conn.getresponse()
    assert r.status == 303 and r.headers["Location"] == "/login"
    r.read()
    conn.close()


def test_action_without_csrf_is_refused(box: Box) -> None:
    cookie, _ = _login(box.port, box.admin)
    for form in ({"until": "2099-01-01"}, {"until": "2099-01-01", "csrf": "forged"}):
        status, _, page = _http(box.port, "POST", "/actions/pause", form, cookie=cookie)
        assert status == 403 and "CSRF" in page
    assert box.daemon.client.status()["training"]["paused_until"] is None
    status, _, _ = _http(box.port, "POST", "/actions/pause", {"until": "x"})  # no session
    assert status == 401


def _leaks(data: bytes, ignore: set[str]) -> set[tuple[str, str]]:
    """Labelled personal data of the corpus found in ``data`` as whole words (case-sensitive)."""
    return {
        (lb["type"], lb["value"])
        for m in _corpus()
        for lb in m["pii"]
        if lb["value"] not in ignore and _word(lb["value"], data)
    }


def _word(value: str, data: bytes) -> bool:
    pattern = rb"(?<![A-Za-z0-9])" + re.escape(value.encode()) + rb"(?![A-Za-z0-9])"
    return re.search(pattern, data) is not None


def test_no_page_or_response_holds_raw_pii(box: Box, request: pytest.FixtureRequest) -> None:
    """After the whole corpus was ingested: no page or response says any labelled value. Member
    ids ("maya") are the API's identifiers, chosen in the config, and are shown by design; the
    export is the family's own copy of what is stored, so it may hold only what the scrubber
    let into the store (reported), never more."""
    cookie, _ = _login(box.port, box.admin)
    ids = {
        m["id"] for m in box.daemon.client.request("GET", "/v1/families/testfam/export")["members"]
    }
    pages = []
    for path in (*PAGES, "/login", "/static/style.css"):
        status, headers, body = _http(
            box.port, "GET", path, cookie=None if path == "/login" else cookie
        )
        assert status == 200, path
        pages.append(str(headers) + body)
    everything = "\n".join(pages).encode()
    assert b"Paper plate dinosaur masks" in everything  # the pages do show what was learned
    assert _leaks(everything, ids) == set()
    status, _, exported = _http(box.port, "GET", "/privacy/export?family=testfam", cookie=cookie)
    assert status == 200 and '"interactions"' in exported
    with closing(sqlite3.connect(box.daemon.state_dir / "insan-edge.db")) as db:
        stored = "\n".join(
            t for (t,) in db.execute("SELECT text FROM interactions WHERE text IS NOT NULL")
        )
    in_store = _leaks(stored.encode(), ids)
    if in_store:
        _say(
            request,
            f"the scrubber let these into the store (not the dashboard's doing): {sorted(in_store)}",
        )
    assert _leaks(exported.encode(), ids) <= in_store


# --- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        reason = f"playwright is not installed ({exc}); pip install -e '.[dev]'"
    if reason is None and CHROMIUM is None:
        reason = "chromium is not installed (apt-get install chromium; .ci/run does it)"
    if reason is not None:
        _say(request, f"dashboard browser tests skipped: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    where = os.environ.get("INSAN_DASHBOARD_SCREENSHOTS")
    folder = Path(where) if where else tmp_path_factory.mktemp("dashboard-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    _say(request, f"dashboard screenshots: {folder}")
    return folder


def _say(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


def _browser_login(page: Any, box: Box, secret: str) -> None:
    page.goto(box.url + "/")
    page.get_by_label("Parent token or passphrase").fill(secret)
    page.get_by_role("button", name="Log in").click()


def test_browser_refuses_wrong_and_app_tokens(box: Box, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    _browser_login(page, box, box.app)
    assert page.get_by_role("alert").inner_text().startswith("That is an app token")
    _browser_login(page, box, "a wrong passphrase")
    assert "Wrong passphrase" in page.get_by_role("alert").inner_text()
    assert context.cookies() == []
    context.close()


def test_browser_parent_sees_the_family_and_acts(box: Box, browser: Any, screens: Path) -> None:
    context = browser.new_context(viewport={"width": LAPTOP[0], "height": LAPTOP[1]})
    page = context.new_page()
    _browser_login(page, box, box.admin)
    assert page.get_by_role("heading", name="Home", level=1).is_visible()
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    for path in PAGES:  # every page at phone and laptop width, before the actions change them
        name = path.strip("/") or "home"
        page.goto(box.url + path)
        for label, (w, h) in (("phone", PHONE), ("laptop", LAPTOP)):
            page.set_viewport_size({"width": w, "height": h})
            page.screenshot(path=str(screens / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": LAPTOP[0], "height": LAPTOP[1]})

    page.goto(box.url + "/family")
    assert page.get_by_role("heading", name="Family testfam").is_visible()
    maya = page.get_by_role("region", name="member maya")
    assert "Paper plate dinosaur masks" in maya.inner_text()
    assert "Watercolour sunset painting" in maya.inner_text()  # turned down
    assert "Serving now: v2" in page.inner_text("main")

    # Acknowledge the crisis alert.
    page.goto(box.url + "/")
    assert page.get_by_role("heading", name="Crisis alerts waiting").is_visible()
    page.get_by_role("button", name=re.compile(r"I have seen alert \d+")).click()
    assert "marked as seen" in page.get_by_role("status").inner_text()
    assert box.daemon.client.request("GET", "/v1/alerts")["alerts"] == []

    # Pause learning until a date, then resume.
    until = (date.today() + timedelta(days=3)).isoformat()
    page.get_by_label("Pause learning until").fill(until)
    page.get_by_role("button", name="Pause").click()
    assert f"paused until {until}" in page.get_by_role("status").inner_text()
    assert box.daemon.client.status()["training"]["paused_until"] == until
    page.get_by_role("button", name="Resume learning now").click()
    assert box.daemon.client.status()["training"]["paused_until"] is None

    # Train now (the same scheduler request as POST /v1/families/testfam/train).
    page.get_by_role("button", name="Train family testfam now").click()
    assert "Training of testfam asked for now (run" in page.get_by_role("status").inner_text()
    assert "asked by dashboard:token:" in page.inner_text("main")

    # Roll back from v2 to v1.
    page.get_by_role("button", name="Roll back from v2").click()
    assert "testfam now serves v1" in page.get_by_role("status").inner_text()
    assert box.daemon.client.request("GET", "/v1/families/testfam/model")["serving"] == "v1"

    # Erase a member, with the confirmation step (a wrong confirmation erases nothing).
    page.goto(box.url + "/privacy")
    page.get_by_label("Erase a member's data").select_option("rosa")
    page.get_by_role("button", name="Erase…").click()
    assert page.get_by_role("heading", name="Erase rosa?").is_visible()
    page.get_by_label("Type rosa to confirm").fill("ros")
    page.get_by_role("button", name="Erase rosa for good").click()
    assert "nothing was erased" in page.get_by_role("alert").inner_text()
    page.get_by_label("Erase a member's data").select_option("rosa")
    page.get_by_role("button", name="Erase…").click()
    page.get_by_label("Type rosa to confirm").fill("rosa")
    page.get_by_role("button", name="Erase rosa for good").click()
    assert "Erased 1 interactions of rosa" in page.get_by_role("status").inner_text()
    exported = box.daemon.client.request("GET", "/v1/families/testfam/export")
    assert not [i for i in exported["interactions"] if i["member_id"] == "rosa"]

    # Every action is in the audit log, shown on the Safety page.
    page.goto(box.url + "/safety")
    text = page.inner_text("main")
    for action in ("acknowledge", "pause", "resume", "train", "rollback", "erase"):
        assert f"dashboard_action\t{action}" in text or f"dashboard_action {action}" in text, action
    page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
    page.screenshot(path=str(screens / "safety-after-actions-phone.png"), full_page=True)

    page.get_by_role("button", name="Log out").click()
    page.goto(box.url + "/family")
    assert page.url.endswith("/login")
    context.close()


def test_passphrase_set_with_the_cli_logs_in(box: Box) -> None:
    cli = [sys.executable, "-m", "insan_edge.cli", "dashboard", "passwd", "--stdin",
           "--config", str(box.daemon.config_path)]  # fmt: skip
    short = subprocess.run(cli, input="short\n", capture_output=True, text=True, check=False)
    assert short.returncode != 0 and "at least 10 characters" in short.stderr
    done = subprocess.run(cli, input="correct horse battery\n", capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = (box.daemon.state_dir / "dashboard-passphrase.json").read_text()
    assert "correct horse" not in stored and '"kdf": "scrypt"' in stored
    cookie, _ = _login(box.port, "correct horse battery")
    status, _, page = _http(box.port, "GET", "/privacy", cookie=cookie)
    assert status == 200 and "<h1>Privacy</h1>" in page


def test_session_cookie_is_secure_over_tls(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path
) -> None:
    tmp = tmp_path_factory.mktemp("dash-tls")
    config = family_config(tiny_model_path, tmp / "state", tmp / "api.sock",
                           lan={"enabled": True, "host": "127.0.0.1", "port": 0,
                                "advertise": False, "tls": True})  # fmt: skip
    daemon = start_daemon(tmp, config)
    try:
        admin = daemon.client.request("POST", "/v1/tokens", {"app": "p", "scopes": ["admin"]})
        while (port := daemon.client.status()["lan"]["port"]) is None:
            time.sleep(0.1)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the box's self-signed certificate
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        conn.request("POST", "/login", urllib.parse.urlencode({"secret": admin["token"]}),
                     {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        r = conn.getresponse()
        r.read()
        conn.close()
        flags = [f.strip().lower() for f in r.headers["Set-Cookie"].split(";")]
        assert r.status == 303 and "secure" in flags and "httponly" in flags
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_login_is_rate_limited(box: Box) -> None:  # last: it shuts 127.0.0.1 out for a while
    for _ in range(10):
        status, headers, _ = _http(box.port, "POST", "/login", {"secret": "not it at all"})
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            break
        assert status == 401
    else:
        raise AssertionError("ten failed logins were never limited")
    status, _, _ = _http(box.port, "POST", "/login", {"secret": box.admin})
    assert status == 429  # even the right secret waits
    log = box.daemon.log()
    assert "dashboard.login_failed" in log and "dashboard.login " in log.replace("\n", " ")
    assert box.admin not in log and box.app not in log and "correct horse" not in log
