"""The officer app's pages, style sheet and script, kept in the package as text.

Everything is served by the app itself (no CDN, no external fonts): a lane PC or a
terminal review console may have no route to the internet, and the strict
Content-Security-Policy allows only this origin. The script is progressive: every page
works without it except the live refresh of the queue and lane views.
"""

from __future__ import annotations

TEMPLATES: dict[str, str] = {}

TEMPLATES["base.html"] = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}e-gate review{% endblock %}</title>
<link rel="stylesheet" href="/static/review.css">
<script src="/static/review.js" defer></script>
</head><body>
<header class="bar">
  <span class="brand">e-gate review</span>
  {% if me %}
  <nav>
    {% if "queue" in perms %}<a href="/" id="nav-queue">Queue</a>{% endif %}
    {% if "lanes" in perms %}<a href="/lanes" id="nav-lanes">Lanes</a>{% endif %}
    {% if "audit" in perms %}<a href="/audit" id="nav-audit">Audit log</a>{% endif %}
  </nav>
  <form method="post" action="/logout" class="logout">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <span class="who" id="who">{{ me }} ({{ role }})</span>
    <button type="submit" id="logout">Sign out</button>
  </form>
  {% endif %}
</header>
<main>
{% if notice %}<p class="notice {{ notice_kind or '' }}" id="notice">{{ notice }}</p>{% endif %}
{% block main %}{% endblock %}
</main>
</body></html>
"""

TEMPLATES["login.html"] = """{% extends "base.html" %}
{% block title %}Sign in · e-gate review{% endblock %}
{% block main %}
<form method="post" action="/login" class="login" id="login-form">
  <h1>Officer sign-in</h1>
  <input type="hidden" name="csrf" value="{{ login_csrf }}">
  <label>Name <input name="name" id="name" autocomplete="username" required></label>
  <label>Password <input name="password" id="password" type="password"
         autocomplete="current-password" required></label>
  <button type="submit" id="sign-in">Sign in</button>
  <p class="hint">After {{ max_attempts }} failed attempts an account is locked for
  {{ lockout_min }} minutes.</p>
</form>
{% endblock %}
"""

TEMPLATES["queue.html"] = """{% extends "base.html" %}
{% block title %}Queue · e-gate review{% endblock %}
{% block main %}
<h1>Open cases{% if lane %} on {{ lane }}{% endif %}</h1>
<p class="lanesum" id="lane-summary">{% for name, n in per_lane %}<a class="chip{{
 ' current' if name == lane else '' }}" href="/?lane={{ name|urlencode }}">{{ name }}: {{ n }}</a>
{% else %}<span class="empty">No open cases.</span>{% endfor %}</p>
{% if lane %}<p><a href="/" id="all-lanes">All lanes</a></p>{% endif %}
<table class="queue" id="queue" data-poll-ms="{{ poll_ms }}" data-lane="{{ lane }}">
<thead><tr><th>Lane</th><th>Opened (UTC)</th><th>Kind</th><th>Reasons</th><th>Document</th>
<th>Status</th><th></th></tr></thead>
<tbody id="queue-body">
{% for c in cases %}
<tr data-case="{{ c.case_id }}"><td>{{ c.lane_id }}</td><td>{{ c.opened_at|utc }}</td>
<td>{{ c.kind }}</td><td>{{ c.reasons|join(", ") }}</td><td>{{ c.document }}</td>
<td>{{ c.status }}</td><td><a class="open" href="/cases/{{ c.case_id }}">Open</a></td></tr>
{% endfor %}
</tbody></table>
{% endblock %}
"""

TEMPLATES["case.html"] = """{% extends "base.html" %}
{% block title %}Case · e-gate review{% endblock %}
{% block main %}
<h1>{{ case.kind }} on lane {{ case.lane_id }}</h1>
<p class="meta">Opened {{ case.opened_at|utc }} · status <b id="status">{{ case.status }}</b>
{% if case.decided_by %} · decided by {{ case.decided_by }} at {{ case.decided_at|utc }}{% endif %}
</p>
{% if seal_problem %}<p class="notice error" id="seal-problem">{{ seal_problem }}</p>{% endif %}
{% if case.images_purged_at %}<p class="notice">Images and MRZ data were purged
 {{ case.images_purged_at|utc }} under the retention policy.</p>{% endif %}
<section class="faces">
  <figure class="portrait"><figcaption>Document portrait (page)</figcaption>
  {% if "portrait" in slots %}<img id="portrait" alt="document portrait"
    src="/cases/{{ case.case_id }}/images/portrait">{% else %}<p class="empty">none</p>{% endif %}
  </figure>
  {% if chip %}<figure class="portrait chip"><figcaption>Chip portrait (DG2){% if
   chip.authentic is sameas true %}, chip authentic{% else %}, chip NOT authentic{% endif %}{%
   if chip.reference %} · compared with: {{ chip.reference }}{% endif %}</figcaption>
  {% if "chip-portrait" in slots %}<img id="chip-portrait" alt="chip portrait"
    src="/cases/{{ case.case_id }}/images/chip-portrait">{% else %}<p class="empty">not read</p>
  {% endif %}</figure>{% endif %}
  <figure class="live"><figcaption>Live frames</figcaption>
  <div class="frames">
  {% for slot in slots if slot.startswith("live-") %}<img class="live-frame" alt="live frame"
    src="/cases/{{ case.case_id }}/images/{{ slot }}">{% else %}<p class="empty">none</p>
  {% endfor %}</div></figure>
</section>
<section class="facts">
<div><h2>Score</h2>
{% if case.score is not none %}
<p id="score" class="{{ 'below' if case.threshold is not none and case.score < case.threshold
 else 'above' }}">{{ '%.3f'|format(case.score) }}
 {% if case.threshold is not none %}{{ '<' if case.score < case.threshold else '≥' }}
 threshold {{ '%.3f'|format(case.threshold) }}{% endif %}</p>
{% if case.threshold is not none %}<meter min="0" max="1" value="{{ case.score }}"
 low="{{ case.threshold }}" optimum="1"></meter>{% endif %}
{% else %}<p id="score">no score</p>{% endif %}
<h2>Reasons</h2><ul id="reasons">{% for r in case.reasons %}<li>{{ r }}</li>
{% else %}<li>none</li>{% endfor %}</ul>
</div>
<div><h2>Document (MRZ)</h2>
<table id="mrz">{% for k, v in mrz.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>
{% else %}<tr><td>none</td></tr>{% endfor %}</table>
{% if chip %}<h2>Chip</h2>
<table id="chip">
<tr><th>authentic</th><td id="chip-authentic">{{ 'yes' if chip.authentic is sameas true
 else 'NO' }}</td></tr>
<tr><th>access</th><td>{{ chip.access or 'none' }}</td></tr>
{% if chip.passive_authentication %}<tr><th>passive authentication</th><td>{{ 'valid' if
 chip.passive_authentication.valid else 'INVALID' }}</td></tr>{% endif %}
{% if chip.chip_authentication %}<tr><th>chip authentication</th><td>{{
 chip.chip_authentication.method or 'none' }} {{ 'valid' if chip.chip_authentication.valid
 else 'NOT valid' }}</td></tr>{% endif %}
{% if chip.dg1_matches_mrz is not none %}<tr><th>DG1 = page MRZ</th><td>{{ 'yes' if
 chip.dg1_matches_mrz else 'NO' }}</td></tr>{% endif %}
<tr><th>face compared with</th><td id="chip-reference">{{ chip.reference }} portrait</td></tr>
{% if chip.cross_check and chip.cross_check.page_score is not none %}<tr><th>page portrait
 cross-check</th><td>{{ chip.cross_check.page_score|num }} ({{ 'match' if
 chip.cross_check.page_match else 'no match' }})</td></tr>{% endif %}
<tr><th>reasons</th><td id="chip-reasons">{{ chip.reasons|join(", ") or 'none' }}</td></tr>
</table>{% endif %}</div>
</section>
{% if case.quality %}<h2>Live frame quality</h2>
<table id="quality"><tr><th>#</th>{% for k in quality_keys %}<th>{{ k }}</th>{% endfor %}</tr>
{% for q in case.quality %}<tr><td>{{ loop.index0 }}</td>{% for k in quality_keys %}
<td>{{ q.get(k)|num }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h2>Timeline</h2>
<table id="timeline"><tr><th>t (s)</th><th>event</th></tr>
{% for row in timeline %}<tr><td>{{ row.dt }}</td><td>{{ row.text }}</td></tr>
{% else %}<tr><td colspan="2">none</td></tr>{% endfor %}</table>
{% if decisions %}<h2>Decisions</h2><table id="decisions">
{% for d in decisions %}<tr><td>{{ d.at|utc }}</td><td>{{ d.user_name }}</td><td>{{ d.action }}</td>
<td>{{ d.comment }}</td></tr>{% endfor %}</table>{% endif %}
{% if can_decide %}
<form method="post" action="/cases/{{ case.case_id }}/decision" class="decide" id="decide">
  <input type="hidden" name="csrf" value="{{ csrf }}">
  <label>Comment (required) <textarea name="comment" id="comment" required maxlength="2000"
   rows="3"></textarea></label>
  <div class="actions">
  <button name="action" value="confirm" id="act-confirm">{{ {
    "REJECTION": "Confirm rejection", "TAILGATING": "Confirm alarm",
    "MANUAL_RELEASE": "Acknowledge release",
    "OUT_OF_SERVICE_WITH_TRAVELLER": "Confirm: traveller handled",
  }.get(case.kind, "Confirm") }}</button>
  <button name="action" value="clear" id="act-clear"{% if lane_unreachable %} disabled
   title="lane {{ case.lane_id }} is unreachable: its heartbeat stopped"{% endif %}>Clear the
   traveller (release exit)</button>{% if lane_unreachable %}<span class="unreachable-note"
   id="lane-unreachable">Lane {{ case.lane_id }} is unreachable: no release possible.</span>
  {% endif %}
  {% if case.status == "OPEN" %}<button name="action" value="escalate" id="act-escalate">
   Escalate to supervisor</button>{% endif %}
  </div>
</form>
{% endif %}
{% endblock %}
"""

TEMPLATES["lanes.html"] = """{% extends "base.html" %}
{% block title %}Lanes · e-gate review{% endblock %}
{% block main %}
<h1>Lanes</h1>
{% if not connected %}<p class="notice error" id="no-lanes">No lane connection: this review
 server was started without a lane control, so lane states are unknown and "clear the
 traveller" cannot release a door.</p>{% endif %}
<table id="lanes" data-poll-ms="{{ poll_ms }}"><thead><tr><th>Lane</th><th>State</th>
<th>Doors</th><th>Zone</th><th>Alarms</th><th>In state</th><th>Case waiting</th>
<th>Open cases</th><th>Details</th></tr></thead><tbody id="lanes-body">
{% for row in lanes %}<tr data-lane="{{ row.lane }}" class="{{
 'unreachable' if not row.reachable else '' }}{{ ' alarm' if row.alarms else '' }}">
<td>{{ row.lane }}{% if not row.reachable %} (unreachable){% endif %}</td>
<td>{{ row.state }}</td><td>{{ row.entry or "-" }} / {{ row.exit or "-" }}</td>
<td>{{ "-" if row.zone_count is none else row.zone_count }}</td>
<td class="alarms">{{ row.alarms|join(", ") }}</td>
<td>{{ "-" if row.in_state_s is none else row.in_state_s ~ " s" }}</td>
<td>{% if row.case_waiting %}<a href="/cases/{{ row.case_waiting }}">open</a>{% endif %}</td>
<td>{{ row.open_cases }}</td><td>{{ row.details }}</td></tr>{% endfor %}
</tbody></table>
{% endblock %}
"""

TEMPLATES["audit.html"] = """{% extends "base.html" %}
{% block title %}Audit log · e-gate review{% endblock %}
{% block main %}
<h1>Audit log</h1>
<form method="get" action="/audit" class="filter" id="audit-filter">
  <label>Officer <input name="officer" id="f-officer" value="{{ filters.get('officer', '') }}"
   maxlength="64"></label>
  <label>Event <input name="event" id="f-event" list="audit-events" maxlength="40"
   value="{{ filters.get('event', '') }}"></label>
  <datalist id="audit-events">{% for e in events %}<option value="{{ e }}">{% endfor %}</datalist>
  <label>From (UTC) <input name="since" id="f-since" placeholder="YYYY-MM-DDTHH:MM"
   maxlength="32" value="{{ filters.get('since', '') }}"></label>
  <label>Before (UTC) <input name="until" id="f-until" placeholder="YYYY-MM-DDTHH:MM"
   maxlength="32" value="{{ filters.get('until', '') }}"></label>
  <button type="submit" id="f-apply">Show</button>
  {% if filters %}<a href="/audit" id="f-clear">All rows</a>{% endif %}
</form>
{% macro pager(tail) %}<p class="pager">{% if newer_url %}<a id="audit-prev{{ tail }}"
 href="{{ newer_url }}">← Newer</a>{% endif %} {% if older_url %}<a id="audit-next{{ tail }}"
 href="{{ older_url }}">Older →</a>{% endif %}
 <span class="hint">{{ page_rows }} rows a page, newest first.</span></p>{% endmacro %}
{{ pager("") }}
<p class="hint">Chain: ✓ the row's MAC checks under the audit key; "legacy" hashed under
the old unkeyed rule, before the keyed chain began; UNVERIFIED: nothing vouches for the row
(no MAC, or one that does not check) — treat it as not written by this server.
<code>gate review audit-verify</code> checks the whole chain, decisions and case states.</p>
<table id="audit"><tr><th>When (UTC)</th><th>Who</th><th>What</th><th>Case</th><th>Detail</th>
<th>Chain</th></tr>
{% for a in rows %}<tr class="chain-{{ a.chain }}" data-audit-id="{{ a.id }}">
<td>{{ a.at|utc }}</td><td>{{ a.user_name }}</td><td>{{ a.action }}</td>
<td>{% if a.case_id %}<a href="/cases/{{ a.case_id }}">{{ a.case_id[:8] }}</a>{% endif %}</td>
<td>{{ a.detail }}</td><td class="chain">{{ {"verified": "✓", "legacy": "legacy",
 "unverified": "UNVERIFIED"}[a.chain] }}</td></tr>
{% else %}<tr><td colspan="6" class="empty" id="audit-none">No rows match.</td></tr>
{% endfor %}</table>
{{ pager("-bottom") }}
{% endblock %}
"""

TEMPLATES["error.html"] = """{% extends "base.html" %}
{% block main %}<h1>{{ title }}</h1><p id="error">{{ message }}</p>
<p><a href="/">Back</a></p>{% endblock %}
"""

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, sans-serif; color: #1b1f24; background: #f4f6f8; }
.bar { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.2em;
       background: #123a5a; color: #fff; }
.bar a { color: #fff; margin-right: 1em; }
.brand { font-weight: 700; }
.logout { margin-left: auto; display: flex; gap: .6em; align-items: center; }
main { padding: 1em 1.5em; }
table { border-collapse: collapse; background: #fff; margin-bottom: 1em; }
th, td { border: 1px solid #c9d1d9; padding: .3em .6em; text-align: left; vertical-align: top; }
.notice { padding: .6em 1em; background: #e6f0fa; border-left: 4px solid #2f6fb0; }
.notice.error { background: #fdecea; border-left-color: #b3261e; }
.login { max-width: 22em; display: grid; gap: .8em; background: #fff; padding: 1.5em;
         border: 1px solid #c9d1d9; }
.login label, .decide label { display: grid; gap: .2em; }
.faces { display: flex; gap: 1.5em; align-items: flex-start; }
.faces figure { margin: 0; background: #fff; padding: .6em; border: 1px solid #c9d1d9; }
.faces img { max-height: 300px; max-width: 300px; display: block; }
.frames { display: flex; flex-wrap: wrap; gap: .5em; }
.frames img { max-height: 220px; }
.facts { display: flex; gap: 2em; }
#score.below { color: #b3261e; font-weight: 700; }
#score.above { color: #1e7a34; font-weight: 700; }
.chip { display: inline-block; background: #123a5a; color: #fff; padding: .1em .6em;
        border-radius: 1em; margin-right: .4em; text-decoration: none; }
.chip.current { background: #b36b00; }
.decide { background: #fff; padding: 1em; border: 1px solid #c9d1d9; max-width: 48em;
          display: grid; gap: .8em; }
.actions { display: flex; gap: .8em; }
button { padding: .4em .9em; font: inherit; cursor: pointer; }
.empty { color: #6a737d; }
.filter { display: flex; flex-wrap: wrap; gap: .8em; align-items: end; margin-bottom: .8em; }
.filter label { display: grid; gap: .2em; }
.pager { display: flex; gap: 1.2em; }
tr.chain-unverified td { background: #fdecea; color: #b3261e; }
tr.unreachable td { background: #e0e0e0; color: #777; }
tr.alarm td { background: #fdecea; color: #b3261e; font-weight: 700; }
.unreachable-note { color: #b3261e; margin-left: 1em; }
tr.chain-unverified td.chain { font-weight: 700; }
"""

JS = r"""
"use strict";
(function () {
  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }
  // A background poll counts as the officer's activity only when they typed, clicked or
  // scrolled since the last one: an unattended station signs itself out.
  let active = false;
  ["keydown", "pointerdown", "wheel", "touchstart"].forEach(function (kind) {
    document.addEventListener(kind, function () { active = true; }, {passive: true});
  });
  function poll(url) {
    const headers = active ? {"X-User-Activity": "1"} : {};
    active = false;
    return fetch(url, {credentials: "same-origin", cache: "no-store", headers: headers});
  }
  function utc(t) { return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z"; }
  function refreshQueue(table) {
    const lane = table.dataset.lane;
    const url = "/api/queue" + (lane ? "?lane=" + encodeURIComponent(lane) : "");
    poll(url)
      .then(function (r) { if (r.status === 401) { location.href = "/login"; } return r.json(); })
      .then(function (data) {
        // Touch the page only when something changed: a link must not be swapped away
        // under an officer's pointer by a refresh that brought nothing new.
        const shown = JSON.stringify([data.cases, data.per_lane]);
        if (shown === table.dataset.shown) { return; }
        table.dataset.shown = shown;
        const body = document.getElementById("queue-body");
        const rows = data.cases.map(function (c) {
          const tr = document.createElement("tr");
          tr.dataset.case = c.case_id;
          [c.lane_id, utc(c.opened_at), c.kind, c.reasons.join(", "), c.document, c.status]
            .forEach(function (v) { tr.appendChild(cell(v)); });
          const td = document.createElement("td");
          const a = document.createElement("a");
          a.className = "open"; a.href = "/cases/" + c.case_id; a.textContent = "Open";
          td.appendChild(a); tr.appendChild(td);
          return tr;
        });
        body.replaceChildren.apply(body, rows);
        const sum = document.getElementById("lane-summary");
        const chips = Object.keys(data.per_lane).sort().map(function (name) {
          const a = document.createElement("a");
          a.className = name === lane ? "chip current" : "chip";
          a.href = "/?lane=" + encodeURIComponent(name);
          a.textContent = name + ": " + data.per_lane[name]; return a;
        });
        if (chips.length === 0) {
          const s = document.createElement("span"); s.className = "empty";
          s.textContent = "No open cases."; chips.push(s);
        }
        sum.replaceChildren.apply(sum, chips);
      })
      .catch(function () {})
      .finally(function () {
        setTimeout(function () { refreshQueue(table); }, table.dataset.pollMs);
      });
  }
  function refreshLanes(table) {
    poll("/api/lanes")
      .then(function (r) { if (r.status === 401) { location.href = "/login"; } return r.json(); })
      .then(function (data) {
        const shown = JSON.stringify(data.lanes);
        if (shown === table.dataset.shown) { return; }
        table.dataset.shown = shown;
        const body = document.getElementById("lanes-body");
        body.replaceChildren.apply(body, data.lanes.map(function (l) {
          const tr = document.createElement("tr");
          tr.dataset.lane = l.lane;
          if (!l.reachable) { tr.classList.add("unreachable"); }
          if (l.alarms.length) { tr.classList.add("alarm"); }
          [l.lane + (l.reachable ? "" : " (unreachable)"), l.state,
           (l.entry || "-") + " / " + (l.exit || "-"),
           l.zone_count === null ? "-" : String(l.zone_count), l.alarms.join(", "),
           l.in_state_s === null ? "-" : l.in_state_s + " s"]
            .forEach(function (v) { tr.appendChild(cell(v)); });
          const td = document.createElement("td");
          if (l.case_waiting) {
            const a = document.createElement("a");
            a.href = "/cases/" + l.case_waiting; a.textContent = "open"; td.appendChild(a);
          }
          tr.appendChild(td);
          [String(l.open_cases), l.details].forEach(function (v) { tr.appendChild(cell(v)); });
          return tr;
        }));
      })
      .catch(function () {})
      .finally(function () {
        setTimeout(function () { refreshLanes(table); }, table.dataset.pollMs);
      });
  }
  document.addEventListener("DOMContentLoaded", function () {
    const q = document.getElementById("queue");
    if (q) { setTimeout(function () { refreshQueue(q); }, q.dataset.pollMs); }
    const l = document.getElementById("lanes");
    if (l) { setTimeout(function () { refreshLanes(l); }, l.dataset.pollMs); }
  });
})();
"""
