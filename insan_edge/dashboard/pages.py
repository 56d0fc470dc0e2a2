"""The dashboard's HTML: one layout (``templates/layout.html``) and a function per page.

Everything variable goes through ``html.escape``; no script, no external resource. Families and
members are shown by their ids (as the API names them), never by the names or display names in
the config: a page on the kitchen phone holds no one's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from html import escape
from importlib import resources
from string import Template
from typing import Any

from insan_edge.config import Config
from insan_edge.dashboard import charts, data
from insan_edge.store import Store

PAGES = (("/", "Home"), ("/family", "Family"), ("/safety", "Safety"), ("/privacy", "Privacy"))


@dataclass
class View:
    config: Config
    config_path: str
    store: Store
    today: date
    csrf: str
    status: Callable[[], dict[str, Any]]  # only Home asks: it is the daemon's whole status
    paused_until: date | None
    flash: tuple[str, str] | None = None


@cache
def _layout() -> Template:
    text = resources.files("insan_edge.dashboard").joinpath("templates/layout.html").read_text()
    return Template(text)


def e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _nav(path: str | None, csrf: str | None) -> str:
    if path is None:
        return ""
    current = ' aria-current="page"'
    items = "".join(
        f'<li><a href="{href}"{current if href == path else ""}>{name}</a></li>'
        for href, name in PAGES
    )
    out = f'<form method="post" action="/logout">{_csrf(csrf or "")}<button>Log out</button></form>'
    return f'<nav aria-label="Pages"><ul>{items}<li>{out}</li></ul></nav>'


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def page(title: str, body: str, *, path: str | None, csrf: str | None, config_path: str,
         flash: tuple[str, str] | None = None) -> str:  # fmt: skip
    note = ""
    if flash is not None:
        kind, message = flash
        role = "alert" if kind == "error" else "status"
        note = f'<p class="flash {e(kind)}" role="{role}">{e(message)}</p>'
    return _layout().substitute(
        title=e(title), nav=_nav(path, csrf), flash=note, body=body, config_path=e(config_path)
    )


def _form(action: str, csrf: str, fields: str, button: str, danger: bool = False) -> str:
    cls = ' class="danger"' if danger else ""
    return (f'<form class="inline" method="post" action="{action}">{_csrf(csrf)}{fields}'
            f"<button{cls}>{e(button)}</button></form>")  # fmt: skip


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def _where(path: str) -> str:
    return f'<span class="muted">set in the YAML at <code>{e(path)}</code></span>'


def _duration(seconds: float) -> str:
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    return f"{d} d {h} h" if d else f"{h} h {rest // 60} min"


def login(error: str | None, config_path: str) -> str:
    body = (
        '<div class="card login"><form method="post" action="/login">'
        '<label for="secret">Parent token or passphrase</label>'
        '<input id="secret" name="secret" type="password" autocomplete="current-password" required '
        'aria-describedby="secret-help">'
        '<p id="secret-help" class="muted">A token with the <code>admin</code> scope '
        "(<code>insan-edge tokens add --scope admin</code>) or the passphrase set with "
        "<code>insan-edge dashboard passwd</code>. App tokens cannot log in.</p>"
        "<button>Log in</button></form></div>"
    )
    flash = ("error", error) if error else None
    return page("Log in", body, path=None, csrf=None, config_path=config_path, flash=flash)


def _when(ts: str | None) -> str:
    return "" if not ts else ts[:16].replace("T", " ") + " UTC"


def _health(s: dict[str, Any], box: dict[str, Any]) -> str:
    """'healthy', or what needs a look: a rejected config edit, a gateway that did not start,
    memory nearly gone, a hot box."""
    problems = []
    if s["config"].get("last_reload_error"):
        problems.append("the last config edit was rejected (the previous config still runs)")
    if (s.get("lan") or {}).get("error"):
        problems.append("the LAN gateway did not start")
    if s["memory"]["available_mb"] < 0.05 * s["memory"]["total_mb"]:
        problems.append("memory is nearly full")
    if box["temperature_c"] is not None and box["temperature_c"] >= 85:
        problems.append(f"it is hot ({box['temperature_c']:.0f} °C)")
    if not problems:
        return "healthy"
    return "needs a look: " + "; ".join(e(p) for p in problems)


def home(v: View) -> str:
    s = v.status()
    mem = s["memory"]
    box = data.box_readings()
    training = s.get("training") or {}
    window = training.get("idle_window") or {}
    temp = (
        f"{box['temperature_c']:.0f} °C ({e(box['sensor'])})"
        if box["temperature_c"]
        else "not measured here"
    )
    cards = [
        ("Box", f'<p class="big">{_health(s, box)}</p><p>Up {_duration(s["uptime_seconds"])}, version {e(s["version"])}.</p>'
         f'<p>Memory: {mem["available_mb"]:,} MB free of {mem["total_mb"]:,} MB; the daemon uses {mem["rss_mb"]} MB.</p>'
         f"<p>Temperature: {temp}. Power mode: {e(box['power_mode'] or 'not a Jetson (unknown)')}.</p>"),
        ("Today", f'<p class="big">{data.events_today(v.store, v.today):,}</p><p>events came in today.</p>'),
    ]  # fmt: skip
    if not training.get("enabled"):
        learning = "<p>Learning is turned off.</p>" + _where("system.training.enabled")
    else:
        state = e(training.get("state"))
        run = training.get("run")
        now = (
            f" (run {run['id']}, step {run.get('step') or 0} of {run.get('steps') or '?'})"
            if run
            else ""
        )
        learning = (f'<p class="big">{state}{e(now)}</p><p>New runs start only in the idle window '
                    f"{e(window.get('start'))}–{e(window.get('end'))}"
                    f"{' (open now)' if window.get('open') else ' (closed now)'}.</p>"
                    + _where("system.training.idle_window"))  # fmt: skip
    if v.paused_until:
        learning += f"<p><strong>Learning is paused until {e(v.paused_until.isoformat())}</strong> (inclusive).</p>"
        learning += _form("/actions/resume", v.csrf, "", "Resume learning now")
    else:
        tomorrow = (v.today + timedelta(days=1)).isoformat()
        learning += _form("/actions/pause", v.csrf,
            f'<span><label for="until">Pause learning until</label><input id="until" name="until" '
            f'type="date" value="{tomorrow}" min="{v.today.isoformat()}" required></span>', "Pause")  # fmt: skip
    cards.append(("Learning", learning))
    waiting = data.alerts(v.store)
    if waiting:
        rows = "".join(
            f"<li>{e(a['family_id'])}/{e(a['member_id'])}: a possible <strong>{e(a['signal'])}</strong> "
            f"signal at {e(_when(a['created_at']))}"
            + _form("/actions/acknowledge", v.csrf, _hidden("alert", str(a["id"])),
                    f"I have seen alert {a['id']}") + "</li>"
            for a in waiting
        )  # fmt: skip
        cards.insert(0, ("Crisis alerts waiting", f"<ul>{rows}</ul><p>Talk with your child; "
                         "the box keeps no text of what was written.</p>"))  # fmt: skip
    else:
        cards.append(("Crisis alerts", "<p>None waiting.</p>"))
    body = (
        '<div class="grid">'
        + "".join(
            f'<section class="card{" alert" if t.startswith("Crisis alerts waiting") else ""}" '
            f'aria-labelledby="c{i}"><h2 id="c{i}">{e(t)}</h2>{c}</section>'
            for i, (t, c) in enumerate(cards)
        )
        + "</div>"
    )
    body += "<h2>Train now</h2>" + "".join(
        _form("/actions/train", v.csrf, _hidden("family", fid), f"Train family {fid} now")
        for fid, fam in v.config.families.items()
    )
    return page("Home", body, path="/", csrf=v.csrf, config_path=v.config_path, flash=v.flash)


def _said(pairs: list[tuple[str, int]]) -> str:
    if not pairs:
        return "nothing yet"
    return ", ".join(f"“{e(t)}” ({n}×)" for t, n in pairs)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.0f}%"


def _loss(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def family(v: View) -> str:
    body = []
    for fid, fam in v.config.families.items():
        body.append(f"<h2>Family {e(fid)}</h2>")
        learned = data.learned(v.store, fid)
        body.append('<div class="grid">')
        for mid, m in fam.members.items():
            mine = learned.get(mid, {})
            body.append(f'<section class="card" aria-label="member {e(mid)}"><h3>{e(mid)} '
                        f'<span class="muted">{e(m.role.value)}, {m.age}</span></h3>'
                        f"<p>Most accepted: {_said(mine.get('accepted', []))}.</p>"
                        f"<p>Most turned down: {_said(mine.get('rejected', []))}.</p></section>")  # fmt: skip
        body.append("</div>")
        counts = data.per_day(v.store, fid, v.today)
        first = v.today - timedelta(days=len(counts) - 1)
        labels = [(first + timedelta(days=i)).strftime("%d %b") for i in range(len(counts))]
        body.append(f"<h3>Interactions per day, last {len(counts)} days</h3>")
        body.append(charts.bars(f"Interactions per day in {fid}, total {sum(counts)}",
                                counts, labels, every=10))  # fmt: skip
        vers = data.versions(v.store, fid)
        body.append("<h3>Model versions</h3>")
        if vers:
            body.append(charts.bars("Held-out preference accuracy per version",
                                    [r["preference_accuracy"] for r in vers],
                                    [f"v{r['version']}" for r in vers], top=1.0, fmt="{:.0%}"))  # fmt: skip
            rows = "".join(
                f"<tr><td>v{r['version']}{' <strong>(serving)</strong>' if r['status'] == 'active' else ''}</td>"
                f"<td>{e(r['status'])}</td><td>{_pct(r['preference_accuracy'])}</td>"
                f"<td>{_loss(r['heldout_loss'])}</td>"
                f"<td>{_pct(r['safety_score'])}</td><td>{e(r['examples'])}</td><td>{e((r['created_at'] or '')[:16])}</td></tr>"
                for r in vers
            )  # fmt: skip
            body.append('<div class="scroll"><table><caption class="muted">Evaluation numbers on held-out data</caption>'
                        "<tr><th scope=col>Version</th><th scope=col>Status</th><th scope=col>Preference accuracy</th>"
                        "<th scope=col>Held-out loss</th><th scope=col>Safety</th><th scope=col>Examples</th>"
                        f"<th scope=col>Made</th></tr>{rows}</table></div>")  # fmt: skip
        serving = next((r for r in vers if r["status"] == "active"), None)
        body.append(
            f"<p>Serving now: <strong>{'v' + str(serving['version']) if serving else 'the base model'}</strong>.</p>"
        )
        if serving:
            body.append(_form("/actions/rollback", v.csrf, _hidden("family", fid),
                              f"Roll back from v{serving['version']}", danger=True))  # fmt: skip
        body.append(_form("/actions/train", v.csrf, _hidden("family", fid), "Train now"))
        runs = data.runs(v.store, fid)
        if runs:
            items = "".join(f"<li>run {r['id']}: {e(r['status'])}{' – ' + e(r['reason']) if r['reason'] else ''}"
                            f" <span class=muted>(asked by {e(r['requested_by'])}, {e(r['created_at'])})</span></li>"
                            for r in runs)  # fmt: skip
            body.append(f"<h3>Latest training runs</h3><ul>{items}</ul>")
    return page(
        "Family",
        "".join(body),
        path="/family",
        csrf=v.csrf,
        config_path=v.config_path,
        flash=v.flash,
    )


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> str:
    if not rows:
        return f"<p>{e(empty)}</p>"
    th = "".join(f"<th scope=col>{e(h)}</th>" for h in head)
    tr = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{th}</tr>{tr}</table></div>'


def safety(v: View) -> str:
    since = v.today - timedelta(days=data.SAFETY_DAYS)
    blocked = data.blocked(v.store, data.local_midnight_utc(since))
    body = [f"<h2>Blocked in the last {data.SAFETY_DAYS} days</h2>",
            _table(("Rule", "Items blocked"), blocked["by_rule"], "Nothing was blocked."),
            "<h3>Per member</h3>",
            _table(("Family/member", "Items blocked"), blocked["by_member"], "Nothing was blocked.")]  # fmt: skip
    rows = [(r["ts"][:19].replace("T", " "), r["event"], r["rule"] or "", f"{r['family_id'] or '-'}/{r['member_id'] or '-'}",
             "; ".join(f"{k}: {val}" for k, val in r["detail"].items())) for r in data.audit(v.store)]  # fmt: skip
    body += ["<h2>Latest audit records</h2>",
             _table(("When (UTC)", "What", "Rule", "Who", "Detail"), rows, "No audit records yet.")]  # fmt: skip
    cap = v.config.system.safety.rating_cap
    body.append("<h2>Settings in force</h2>")
    body.append(f"<p>No suggestion is ever rated above <strong>{e(cap)}</strong> on this box. "
                f"{_where('system.safety.rating_cap')}</p>")  # fmt: skip
    limits_by_family = {fid: data.rating_limits(v.config, fid) for fid in v.config.families}
    for fid, fam in v.config.families.items():
        s = fam.safety
        body.append(f'<section class="card"><h3>Family {e(fid)}</h3>')
        topics = ", ".join(s.blocked_topics) or "none"
        body.append(
            f"<p>Topics never suggested to anyone: <strong>{e(topics)}</strong>. "
            f"{_where(f'families.{fid}.safety.blocked_topics')}</p>"
        )
        body.append(f"<p>Highest rating for the family: <strong>{e(s.max_content_rating)}</strong>. "
                    f"{_where(f'families.{fid}.safety.max_content_rating')}</p>")  # fmt: skip
        for mid, m in fam.members.items():
            avoided = ", ".join(m.avoided_topics) or "none"
            body.append(f"<p><strong>{e(mid)}</strong> sees nothing rated above "
                        f"<strong>{e(limits_by_family[fid][mid])}</strong> (from age {m.age}, "
                        f"safety level {e(m.effective_safety_level.value)} and the limits above) and "
                        f"nothing about: {e(avoided)}. {_where(f'families.{fid}.members.{mid}')}</p>")  # fmt: skip
        for rule in s.time_restrictions:
            who = ", ".join(rule.members) if rule.members else "everyone"
            body.append(f"<p>“{e(rule.name)}”: no {e(', '.join(rule.restricted))} for {e(who)} from "
                        f"{rule.start:%H:%M} to {rule.end:%H:%M} ({e(', '.join(rule.days))}). "
                        f"{_where(f'families.{fid}.safety.time_restrictions')}</p>")  # fmt: skip
        body.append("</section>")
    return page(
        "Safety",
        "".join(body),
        path="/safety",
        csrf=v.csrf,
        config_path=v.config_path,
        flash=v.flash,
    )


def privacy(v: View) -> str:
    days = v.config.system.privacy.retention_days
    body = [f"<p>Interactions are kept {days} days, then deleted. {_where('system.privacy.retention_days')} "
            "Text is scrubbed of personal data before it is stored; the raw text is never kept.</p>"]  # fmt: skip
    for fid, fam in v.config.families.items():
        held = data.stored(v.store, fid)
        rows = [(mid, held.get(mid, {}).get("interactions", 0), held.get(mid, {}).get("oldest") or "–")
                for mid in fam.members]  # fmt: skip
        body.append(f"<h2>Family {e(fid)}</h2>")
        body.append(_table(("Member", "Interactions stored", "Oldest (UTC)"), rows, ""))
        body.append(f'<p><a href="/privacy/export?family={e(fid)}" download>Export everything stored about '
                    f"family {e(fid)} (JSON)</a></p>")  # fmt: skip
        options = "".join(f'<option value="{e(mid)}">{e(mid)}</option>' for mid in fam.members)
        body.append(_form("/actions/erase", v.csrf, _hidden("family", fid) +
                          f'<span><label for="erase-{e(fid)}">Erase a member\'s data</label>'
                          f'<select id="erase-{e(fid)}" name="member">{options}</select></span>',
                          "Erase…", danger=True))  # fmt: skip
    return page(
        "Privacy",
        "".join(body),
        path="/privacy",
        csrf=v.csrf,
        config_path=v.config_path,
        flash=v.flash,
    )


def confirm_erase(v: View, family_id: str, member_id: str, count: int) -> str:
    body = (f'<section class="card alert"><h2>Erase {e(member_id)}?</h2><p>This deletes all '
            f"{count:,} stored interactions of <strong>{e(member_id)}</strong> in {e(family_id)} "
            "for good, and marks the family's models for retraining without them. It cannot be undone.</p>"
            + _form("/actions/erase", v.csrf, _hidden("family", family_id) + _hidden("member", member_id)
                    + f'<span><label for="confirm">Type {e(member_id)} to confirm</label>'
                    f'<input id="confirm" name="confirm" autocomplete="off" required></span>',
                    f"Erase {member_id} for good", danger=True)
            + '<p><a href="/privacy">Cancel</a></p></section>')  # fmt: skip
    return page("Confirm erasure", body, path="/privacy", csrf=v.csrf, config_path=v.config_path)


def stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M")
