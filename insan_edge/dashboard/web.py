"""The dashboard's routes: login, the four pages and the parents' actions.

Mounted on the LAN gateway's app (and the localhost site); the gateway lets ``dashboard.*``
routes through without a bearer token because they check a session instead. Every action is a
POST with the session's CSRF token, runs the same code as the API and the CLI, and is audited
(``dashboard_action``) on top of whatever that code audits itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from insan_edge.config import LoadedConfig
from insan_edge.dashboard import auth, pages
from insan_edge.errors import BadRequestError, InsanEdgeError, UnauthorizedError
from insan_edge.gateway import Limits
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.personalization import Personalization
from insan_edge.store import Store
from insan_edge.tokens import PREFIX, Tokens

log = logging.getLogger("insan_edge.dashboard")
COOKIE = "insan_session"
CONFIRM = "CONFIRM:"
MAX_FORM_BYTES = 8192
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Where each action's answer is shown.
BACK = {"train": "/family", "rollback": "/family", "pause": "/", "resume": "/",
        "acknowledge": "/", "erase": "/privacy"}  # fmt: skip


@dataclass
class DashboardBackend:
    store: Store
    loaded: Callable[[], LoadedConfig]
    status: Callable[[], dict[str, Any]]
    state_dir: Path
    tokens: Tokens
    personal: Personalization
    forget: Callable[[str, str | None], Awaitable[dict[str, Any]]]
    export: Callable[[str], Awaitable[dict[str, Any]]]
    acknowledge: Callable[[int], dict[str, Any]]


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={**HEADERS, **(headers or {})})  # fmt: skip


def _see(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BadRequestError("the form is too large")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def install(app: web.Application, b: DashboardBackend) -> None:
    sessions = auth.Sessions()
    failures = Limits()
    flashes: dict[str, tuple[str, str]] = {}

    def settings() -> Any:
        return b.loaded().config.system.dashboard

    def session_of(request: web.Request) -> tuple[str | None, auth.Session | None]:
        sid = request.cookies.get(COOKIE)
        return sid, sessions.get(sid)

    def view(session: auth.Session, sid: str) -> pages.View:
        loaded = b.loaded()
        return pages.View(loaded.config, str(loaded.path), b.store, datetime.now().date(),
                          session.csrf, b.status, b.personal.pause.until(), flashes.pop(sid, None))  # fmt: skip

    def page(
        render: Callable[[pages.View], str],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            sid, session = session_of(request)
            if session is None or sid is None:
                return _see("/login")
            return _html(await asyncio.to_thread(lambda: render(view(session, sid))))

        return handler

    async def login_form(request: web.Request) -> web.StreamResponse:
        if session_of(request)[1] is not None:
            return _see("/")
        return _html(pages.login(None, str(b.loaded().path)))

    async def login(request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        per_minute = float(settings().login_attempts_per_minute)
        waiting = failures.wait(peer, per_minute, per_minute)
        path = str(b.loaded().path)
        if waiting > 0:
            log.warning(kv("dashboard.login_limited", peer=peer))
            return _html(pages.login("Too many failed attempts from this address; wait a minute "
                                     "and try again.", path), 429, {"Retry-After": str(math.ceil(waiting))})  # fmt: skip
        secret = (await _form(request)).get("secret", "").strip()
        who, why = await asyncio.to_thread(_who, b, secret)
        if who is None:
            failures.take(peer, per_minute, per_minute)
            log.warning(kv("dashboard.login_failed", peer=peer, reason=why))
            return _html(pages.login(why, path), 401)
        sessions.close(request.cookies.get(COOKIE))  # a fresh session id at every login
        sid, _ = sessions.open(who, settings().session_minutes)
        await asyncio.to_thread(_audit, b.store, "dashboard_login", who, {})
        log.info(kv("dashboard.login", who=who, peer=peer))
        response = _see("/")
        response.set_cookie(COOKIE, sid, max_age=settings().session_minutes * 60, path="/",
                            httponly=True, samesite="Strict", secure=request.secure)  # fmt: skip
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        sid, session = session_of(request)
        if session is not None and auth.csrf_ok(session, (await _form(request)).get("csrf")):
            sessions.close(sid)
            flashes.pop(sid or "", None)
        response = _see("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    async def action(request: web.Request) -> web.StreamResponse:
        name = request.match_info["action"]
        sid, session = session_of(request)
        if session is None or sid is None:
            return _html(pages.login("Log in first.", str(b.loaded().path)), 401)
        form = await _form(request)
        if not auth.csrf_ok(session, form.get("csrf")):
            log.warning(kv("dashboard.csrf_refused", action=name, peer=request.remote))
            return _html(pages.page("Refused", "<p>This form has no valid CSRF token: reload the "
                                    'page and try again. <a href="/">Home</a></p>', path=None, csrf=None,
                                    config_path=str(b.loaded().path)), 403)  # fmt: skip
        if name not in BACK:
            return _html("<p>No such action.</p>", 404)
        try:
            done = await _act(b, name, form, session.who)
        except InsanEdgeError as exc:
            flashes[sid] = ("error", exc.message)
            return _see(BACK[name])
        if done.startswith(CONFIRM):  # the erasure's confirmation step
            family, member, count = json.loads(done[len(CONFIRM) :])
            return _html(pages.confirm_erase(view(session, sid), family, member, count))
        flashes[sid] = ("ok", done)
        return _see(BACK[name])

    async def export(request: web.Request) -> web.StreamResponse:
        session = session_of(request)[1]
        if session is None:
            return _see("/login")
        family = request.query.get("family", "")
        try:
            body = await b.export(family)
        except InsanEdgeError as exc:
            return _html(f"<p>{pages.e(exc.message)}</p>", exc.status)
        await asyncio.to_thread(_audit, b.store, "dashboard_action", session.who,
                                {"action": "export", "family": family})  # fmt: skip
        return web.Response(text=json.dumps(body, indent=1, default=str), content_type="application/json",
                            headers={**HEADERS, "Content-Disposition": f'attachment; filename="{family}-export.json"'})  # fmt: skip

    css = resources.files("insan_edge.dashboard").joinpath("static/style.css").read_text()

    async def style(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
        )

    app.router.add_get("/", page(pages.home), name="dashboard.home")
    app.router.add_get("/family", page(pages.family), name="dashboard.family")
    app.router.add_get("/safety", page(pages.safety), name="dashboard.safety")
    app.router.add_get("/privacy", page(pages.privacy), name="dashboard.privacy")
    app.router.add_get("/privacy/export", export, name="dashboard.export")
    app.router.add_get("/login", login_form, name="dashboard.login_form")
    app.router.add_post("/login", login, name="dashboard.login")
    app.router.add_post("/logout", logout, name="dashboard.logout")
    app.router.add_post("/actions/{action}", action, name="dashboard.action")
    app.router.add_get("/static/style.css", style, name="dashboard.style")


def _who(b: DashboardBackend, secret: str) -> tuple[str | None, str]:
    """The parent a secret names, or None and why not."""
    if not secret:
        return None, "Enter a parent token or the passphrase."
    if secret.startswith(PREFIX):
        try:
            grant = b.tokens.check(secret)
        except UnauthorizedError:
            return None, "That token is not valid (unknown, revoked or mistyped)."
        if not grant.is_admin:
            return None, "That is an app token: only a parent's token (admin scope) can log in."
        return f"token:{grant.token_id}", ""
    if auth.check_passphrase(b.state_dir, secret):
        return "passphrase", ""
    return None, "Wrong passphrase (or none is set: insan-edge dashboard passwd)."


def _audit(store: Store, event: str, who: str, detail: dict[str, Any]) -> None:
    with store.transaction() as db:
        db.table("audit_log").insert({"ts": utcnow(), "family_id": detail.get("family"),
            "member_id": detail.get("member"), "event": event, "rule": detail.get("action"),
            "detail": json.dumps({**detail, "by": who})})  # fmt: skip


def _family(b: DashboardBackend, form: dict[str, str]) -> str:
    family = form.get("family", "")
    b.loaded().config.family(family)  # an unknown family is a clear error
    return family


async def _act(b: DashboardBackend, name: str, form: dict[str, str], who: str) -> str:
    """Run one action; its message for the page, or a whole page (a confirmation step)."""
    by = f"dashboard:{who}"
    detail: dict[str, Any] = {"action": name}
    if name == "train":
        family = _family(b, form)
        run = (await b.personal.train(family, True, by=by))["run"]
        detail.update(family=family, run=run["id"])
        message = f"Training of {family} asked for now (run {run['id']}, {run['status']})."
    elif name == "rollback":
        family = _family(b, form)
        done = await b.personal.rollback(family)
        detail.update(family=family, serving=done["serving"])
        message = f"{family} now serves {done['serving'] if done['serving'] != 'base' else 'the base model'}."
    elif name == "pause":
        try:
            until = date.fromisoformat(form.get("until", ""))
        except ValueError:
            raise BadRequestError("give the date as YYYY-MM-DD") from None
        await asyncio.to_thread(b.personal.pause.pause, until, by)
        detail.update(until=until.isoformat())
        message = f"Learning is paused until {until.isoformat()} (inclusive)."
    elif name == "resume":
        await asyncio.to_thread(b.personal.pause.resume, by)
        message = "Learning is no longer paused."
    elif name == "acknowledge":
        try:
            alert_id = int(form.get("alert", ""))
        except ValueError:
            raise BadRequestError("an alert id is a whole number") from None
        if not 1 <= alert_id < 2**63:
            raise BadRequestError("an alert id is a whole number from 1")
        alert = await asyncio.to_thread(b.acknowledge, alert_id)
        detail.update(alert=alert_id, family=alert["family_id"], member=alert["member_id"])
        message = f"Alert {alert_id} is marked as seen."
    else:  # erase
        family, member = _family(b, form), form.get("member", "")
        b.loaded().config.family(family, [member])
        if form.get("confirm") is None:
            count = b.store.read("SELECT COUNT(*) AS n FROM interactions WHERE family_id = ? "
                                 "AND member_id = ?", [family, member])[0]["n"]  # fmt: skip
            return CONFIRM + json.dumps([family, member, int(count)])
        if form.get("confirm", "").strip() != member:
            raise BadRequestError(
                f"type the member id {member!r} exactly to confirm; nothing was erased"
            )
        result = await b.forget(family, member)
        detail.update(
            family=family, member=member, interactions_deleted=result["interactions_deleted"]
        )
        message = f"Erased {result['interactions_deleted']} interactions of {member}."
    await asyncio.to_thread(_audit, b.store, "dashboard_action", who, detail)
    return message
