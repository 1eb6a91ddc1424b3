"""Server-rendered HTML for the host's web pages: no build step, no script, readable on a phone.

Every value that came from a user (team names, messages, file names, problems) goes through
html.escape; the Markdown pages are the host's own text.
"""

from __future__ import annotations

from html import escape

import markdown as markdown_lib

STYLE = """
*{box-sizing:border-box}body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1b1f24}
header{background:#1d3557;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;
gap:.3rem .9rem;align-items:center}header a{color:#fff;text-decoration:none;white-space:nowrap}
header a.on{text-decoration:underline}header strong{margin-right:.4rem}main{max-width:60rem;margin:0 auto;padding:1rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{padding:.35rem .5rem;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}tr.baseline{background:#f3f0e0}
tr.you{background:#e3f2fd}.note{color:#555;font-size:.9rem}.error{color:#b00020}
.ok{color:#1b5e20}.state{display:inline-block;padding:0 .4rem;border-radius:.3rem;background:#eee}
form.inline{display:inline}input,button,textarea{font:inherit;padding:.35rem;max-width:100%}
button{cursor:pointer}label{display:block;margin:.5rem 0 .2rem}code{background:#f4f4f4}
"""


def markdown(text: str) -> str:
    return markdown_lib.markdown(text, extensions=["tables", "fenced_code"])


NAV = [
    ("overview", "/", "Overview"),
    ("data", "/data", "Data"),
    ("rules", "/rules", "Rules"),
    ("leaderboard", "/leaderboard", "Leaderboard"),
    ("submit", "/submit", "Submit"),
    ("submissions", "/submissions", "My submissions"),
]


def layout(title: str, body: str, *, name: str, active: str, team: dict | None, csrf: str) -> str:
    links = "".join(
        f'<a href="{href}"{" class=on" if key == active else ""}>{label}</a>'
        for key, href, label in NAV
    )
    if team and team["role"] == "host":
        links += f'<a href="/host"{" class=on" if active == "host" else ""}>Host</a>'
    if team:
        account = (
            f'<form class=inline method=post action="/logout">{csrf_field(csrf)}'
            f"<button>Log out {escape(team['name'])}</button></form>"
        )
    else:
        account = '<a href="/login">Log in</a>'
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · {escape(name)}</title>"
        '<link rel=stylesheet href="/static/kit.css"></head><body>'
        f"<header><strong>{escape(name)}</strong>{links}{account}</header>"
        f"<main>{body}</main></body></html>"
    )


def csrf_field(csrf: str) -> str:
    return f'<input type=hidden name=csrf value="{escape(csrf)}">'


def _score(value) -> str:
    return "" if value is None else f"{value:.5f}"


def state_line(state: str, settings: dict) -> str:
    end = f"; ends {escape(settings['end'])} UTC" if settings.get("end") else ""
    words = {
        "open": "open for submissions",
        "frozen": "closed: submissions are frozen",
        "revealed": "finished: private scores are revealed",
    }
    return f"<p>Competition <span class=state id=state>{state}</span> {words[state]}{end}.</p>"


def leaderboard(
    rows: list[dict], *, revealed: bool, settings: dict, team: dict | None, noise: dict | None
) -> str:
    """The public board (or the private one after reveal, with each team's rank change)."""
    direction = "higher" if settings["greater_is_better"] else "lower"
    head = (
        "<tr><th class=num>#</th><th>Team</th>"
        + ("<th class=num>Private</th><th class=num>Change</th>" if revealed else "")
        + "<th class=num>Public</th><th class=num>90% interval</th>"
        "<th class=num>Entries</th><th>Last</th></tr>"
    )
    lines = []
    for row in rows:
        classes = " ".join(
            c
            for c, on in (
                ("baseline", row["baseline"]),
                ("you", team is not None and team["name"] == row["team"]),
            )
            if on
        )
        rank = row["private_rank"] if revealed else row["rank"]
        name = escape(row["team"]) + (" <em>(host baseline)</em>" if row["baseline"] else "")
        cells = f"<td class=num>{rank or ''}</td><td>{name}</td>"
        if revealed:
            change = row.get("rank_change")
            arrow = "" if change is None else ("=" if change == 0 else f"{change:+d}")
            cells += f"<td class=num>{_score(row['private_score'])}</td><td class=num>{arrow}</td>"
        interval = (
            f"{_score(row['public_low'])} – {_score(row['public_high'])}"
            if row["public_low"] is not None
            else ""
        )
        cells += (
            f"<td class=num>{_score(row['public_score'])}</td><td class=num>{interval}</td>"
            f"<td class=num>{row['entries']}</td><td>{escape(row['last'][:16])}</td>"
        )
        lines.append(f"<tr class='{classes}'>{cells}</tr>")
    table = (
        f"<div class=scroll><table id=leaderboard>{head}{''.join(lines)}</table></div>"
        if rows
        else "<p>No submissions yet.</p>"
    )
    which = "Private leaderboard" if revealed else "Public leaderboard"
    note = (
        f"<p class=note>Metric <code>{escape(settings['metric'])}</code>, {direction} is better. "
        "The interval is a bootstrap 90% interval over the public rows: where two teams' "
        "intervals overlap, their order is within the noise of the public split.</p>"
    )
    noise_line = ""
    if noise:
        noise_line = (
            f"<p id=noise>The public intervals left <strong>{noise['undetermined']}</strong> of "
            f"{noise['teams']} team(s) with an undetermined rank; on the private split "
            f"<strong>{noise['moved']}</strong> team(s) changed rank.</p>"
        )
    return f"<h1>{which}</h1>{note}{noise_line}{table}"


def login(csrf: str, error: str = "") -> str:
    message = f"<p class=error>{escape(error)}</p>" if error else ""
    return (
        f"<h1>Log in</h1>{message}<form method=post action=/login>{csrf_field(csrf)}"
        "<label for=token>Team token (from your host)</label>"
        "<input id=token name=token type=password autocomplete=off size=50 required>"
        "<p><button id=login>Log in</button></p></form>"
    )


def submit(csrf: str, *, remaining: int, daily_limit: int, state: str, problems=()) -> str:
    shown = ""
    if problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in problems)
        shown = (
            f"<div class=error id=problems><p>Not accepted (not counted):</p><ul>{items}</ul></div>"
        )
    if state != "open":
        return f"<h1>Submit</h1>{shown}<p>Submissions are closed ({state}).</p>"
    return (
        f"<h1>Submit</h1>{shown}<p id=remaining>{remaining} of {daily_limit} submission(s) left "
        "today (UTC).</p>"
        f'<form method=post action=/submit enctype="multipart/form-data">{csrf_field(csrf)}'
        "<label for=file>Submission CSV</label><input id=file name=file type=file accept=.csv required>"
        "<label for=message>Message</label><input id=message name=message size=50 maxlength=500>"
        "<p><button id=upload>Submit</button></p></form>"
        "<p class=note>Or from a terminal: <code>kit submit FILE -m MESSAGE</code>.</p>"
    )


def my_submissions(
    rows: list[dict],
    *,
    csrf: str,
    remaining: int,
    settings: dict,
    revealed: bool,
    new_id: int | None,
    state: str,
) -> str:
    banner = ""
    if new_id is not None:
        new = next((r for r in rows if r["id"] == new_id), None)
        if new:
            banner = (
                f"<p class=ok id=scored>Submission {new_id} scored: public "
                f"{escape(settings['metric'])} <strong>{_score(new['public_score'])}</strong>"
                "</p>"
            )
    head = (
        "<tr><th>Final</th><th class=num>Id</th><th>Time (UTC)</th><th>Message</th>"
        "<th class=num>Public</th><th class=num>90% interval</th>"
        + ("<th class=num>Private</th>" if revealed else "")
        + "</tr>"
    )
    lines = []
    for row in rows:
        checked = " checked" if row["final"] else ""
        disabled = "" if state != "revealed" else " disabled"
        cells = (
            f"<td><input type=checkbox name=ids value={row['id']}{checked}{disabled}"
            f" aria-label='final {row['id']}'></td>"
            f"<td class=num>{row['id']}</td><td>{escape(row['submitted_at'][:19])}</td>"
            f"<td>{escape(row['message'])}</td><td class=num>{_score(row['public_score'])}</td>"
            f"<td class=num>{_score(row['public_low'])} – {_score(row['public_high'])}</td>"
        )
        if revealed:
            cells += f"<td class=num>{_score(row.get('private_score'))}</td>"
        lines.append(f"<tr>{cells}</tr>")
    if not rows:
        return f"<h1>My submissions</h1>{banner}<p>None yet: <a href=/submit>submit one</a>.</p>"
    finals = settings["max_finals"]
    button = (
        ""
        if state == "revealed"
        else f"<p><button id=finals>Use the ticked as finals (up to {finals})</button></p>"
    )
    return (
        f"<h1>My submissions</h1>{banner}<p id=remaining>{remaining} submission(s) left today."
        f" Final selections: up to {finals}; none ticked means your best public one.</p>"
        f"<form method=post action=/finals>{csrf_field(csrf)}<div class=scroll>"
        f"<table id=submissions>{head}{''.join(lines)}</table></div>{button}</form>"
    )


def host_home(state: str, settings: dict, csrf: str, counts: dict) -> str:
    buttons = "".join(
        f"<form class=inline method=post action=/host/state>{csrf_field(csrf)}"
        f"<input type=hidden name=state value={target}><button id=to-{target}>{label}</button></form> "
        for target, label in (("open", "Reopen"), ("frozen", "Freeze"), ("revealed", "Reveal"))
        if target != state
    )
    return (
        f"<h1>Host</h1>{state_line(state, settings)}<p>{counts['teams']} team(s), "
        f"{counts['submissions']} submission(s).</p><p>{buttons}</p>"
        "<p><a href=/host/teams>Teams</a> · <a href=/host/submissions>All submissions</a> · "
        "<a href=/host/export.csv>Export final standings (CSV)</a> · "
        "<a href=/leaderboard?view=private>Private leaderboard preview</a></p>"
        "<p class=note>Teams are added from a terminal: <code>kit host team add HOSTDIR NAME</code>"
        " (the token is shown once).</p>"
    )


def host_teams(rows: list[dict]) -> str:
    lines = "".join(
        f"<tr><td>{escape(r['name'])}</td><td>{escape(r['role'])}</td>"
        f"<td>{'active' if r['active'] else 'revoked'}</td><td>{escape(r['members'])}</td>"
        f"<td class=num>{r['entries']}</td></tr>"
        for r in rows
    )
    return (
        "<h1>Teams</h1><div class=scroll><table><tr><th>Team</th><th>Role</th><th>Token</th>"
        f"<th>Members</th><th class=num>Entries</th></tr>{lines}</table></div>"
    )


def host_submissions(rows: list[dict]) -> str:
    lines = "".join(
        f"<tr><td class=num>{r['id']}</td><td>{escape(r['team'])}</td>"
        f"<td>{escape(r['submitted_at'][:19])}</td><td>{escape(r['message'])}</td>"
        f"<td class=num>{_score(r['public_score'])}</td><td class=num>{_score(r['private_score'])}</td>"
        f"<td>{'yes' if r['final'] else ''}</td></tr>"
        for r in reversed(rows)
    )
    return (
        "<h1>All submissions</h1><div class=scroll><table><tr><th class=num>Id</th><th>Team</th>"
        "<th>Time</th><th>Message</th><th class=num>Public</th><th class=num>Private</th>"
        f"<th>Final</th></tr>{lines}</table></div>"
    )


def message(title: str, text: str) -> str:
    return f"<h1>{escape(title)}</h1><p>{escape(text)}</p>"
