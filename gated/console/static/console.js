// The control-room console: plain DOM, no framework, nothing fetched from anywhere but gated.
"use strict";

const state = { csrf: null, events: null, role: null, overriding: null, seenAlerts: new Set(), alertsLoaded: false };
const SUPERVISORS = new Set(["supervisor", "admin"]);
const $ = (id) => document.getElementById(id);

function show(view) {
  for (const name of ["login-view", "locked-view", "console-view"]) {
    $(name).hidden = name !== view;
  }
  $("who").hidden = view === "login-view";
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (state.csrf && options.method && options.method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
  });
  let body = {};
  try {
    body = await response.json();
  } catch (_) {
    body = {};
  }
  if (response.status === 401 && body.locked && path !== "/api/session/unlock") {
    lockScreen();
  }
  return { status: response.status, body };
}

function text(tag, content, className) {
  const node = document.createElement(tag);
  if (content !== undefined && content !== null) node.textContent = String(content);
  if (className) node.className = className;
  return node;
}

function signedIn(who) {
  state.csrf = who.csrf;
  state.role = who.role;
  $("who-name").textContent = who.username;
  $("who-role").textContent = who.role;
  if (who.locked) {
    lockScreen();
    return;
  }
  show("console-view");
  $("place-form").hidden = !SUPERVISORS.has(state.role);
  listen();
  loadHolds();
}

function lockScreen() {
  if (state.events) {
    state.events.close();
    state.events = null;
  }
  show("locked-view");
  $("unlock-password").value = "";
  $("unlock-password").focus();
}

function listen() {
  if (state.events) return;
  const events = new EventSource("/api/events");
  state.events = events;
  events.addEventListener("board", (event) => {
    $("live").textContent = "live";
    $("live").className = "live on";
    render(JSON.parse(event.data));
  });
  events.addEventListener("alerts", (event) => renderAlerts(JSON.parse(event.data).alerts));
  events.addEventListener("ended", async () => {
    events.close();
    state.events = null;
    const session = await api("/api/session");
    if (session.status === 200 && !session.body.locked) listen();
    else if (session.status !== 200 && !session.body.locked) show("login-view");
  });
  events.onerror = () => {
    $("live").textContent = "reconnecting";
    $("live").className = "live";
  };
}

function render(board) {
  const lanes = $("lanes");
  lanes.replaceChildren(...board.lanes.map(tile));
  const queue = $("queue");
  queue.replaceChildren(...board.queue.map(queueItem));
  $("queue-empty").hidden = board.queue.length > 0;
}

function renderAlerts(alerts) {
  const open = alerts.filter((alert) => !alert.acked_at);
  const fresh = open.filter((alert) => !state.seenAlerts.has(`${alert.id}:${alert.level}:${alert.repeats}`));
  for (const alert of open) state.seenAlerts.add(`${alert.id}:${alert.level}:${alert.repeats}`);
  if (fresh.length && state.alertsLoaded) chime(fresh.some((alert) => alert.severity === "high"));
  state.alertsLoaded = true;
  $("alerts").hidden = alerts.length === 0;
  $("alerts-count").textContent = open.length ? `${open.length} open` : "all acknowledged";
  $("alerts-count").className = open.length ? "badge state-closed" : "badge";
  document.title = open.length ? `(${open.length}) gated console` : "gated console";
  $("alert-list").replaceChildren(...alerts.map(alertItem));
}

function alertItem(alert) {
  const item = text("li", null, `alert severity-${alert.severity} level-${alert.level}${alert.acked_at ? " acked" : ""}`);
  item.dataset.alert = alert.id;
  const head = text("p", null, "alert-head");
  head.append(
    text("span", alert.alarm, "alarm"),
    text("span", ` ${alert.lane}${alert.container ? ` · ${alert.container}` : ""} · ${alert.raised_at}`),
  );
  if (alert.repeats > 1) head.append(text("span", ` ×${alert.repeats}`, "repeats"));
  if (alert.level > 0) head.append(text("span", ` escalated to ${alert.level_name}`, "escalated"));
  item.append(head, text("p", alert.text, "reason"));
  if (alert.acked_at) {
    item.append(text("p", `Acknowledged by ${alert.acked_by} at ${alert.acked_at}${alert.ack_note ? `: ${alert.ack_note}` : ""}`, "muted"));
  } else if (state.role && state.role !== "viewer") {
    const note = text("input", null, "ack-note");
    note.placeholder = "note (optional)";
    note.maxLength = 500;
    const button = text("button", "Acknowledge", "ack");
    button.type = "button";
    button.addEventListener("click", async () => {
      $("alert-error").textContent = "";
      const result = await api(`/api/alerts/${encodeURIComponent(alert.id)}/ack`, { method: "POST", body: { note: note.value } });
      if (result.status !== 200 && result.status !== 401) $("alert-error").textContent = result.body.error || `Refused (${result.status}).`;
    });
    item.append(note, button);
  }
  return item;
}

function chime(urgent) {
  // A short tone (no sound file to fetch); browsers allow it once the officer has used the page.
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    tone.frequency.value = urgent ? 880 : 660;
    tone.connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.25);
    if (navigator.vibrate) navigator.vibrate(urgent ? [200, 100, 200] : 200);
  } catch (_) {
    // no audio on this device: the list and the title still say it
  }
}

function barrierLine(barrier) {
  if (!barrier) return null;
  const line = text("p", null, `barrier barrier-${barrier.online ? barrier.state : "offline"}`);
  line.append(
    text("span", "Barrier "),
    text("strong", barrier.online ? barrier.state : "not answering"),
    text("span", barrier.permit ? " · permit to open" : " · no permit"),
  );
  return line;
}

function tile(lane) {
  const card = text("article", null, `tile state-${lane.state}`);
  card.dataset.lane = lane.id;
  const head = text("header");
  head.append(text("h3", lane.id), text("span", lane.state, `badge state-${lane.state}`));
  card.append(head, text("p", lane.reason, "reason"));
  const devices = text("ul", null, "devices");
  for (const device of lane.devices) {
    const item = text("li", null, `device ${device.state}`);
    item.title = device.detail;
    item.append(text("span", device.id), text("span", device.state, "device-state"));
    devices.append(item);
  }
  card.append(devices);
  const visit = text("div", null, "visit");
  if (lane.visit) {
    visit.append(text("h4", `Visit ${lane.visit.id.slice(0, 8)} (${lane.visit.trigger})`));
    const readings = text("ul", null, "readings");
    for (const reading of lane.visit.readings) {
      readings.append(text("li", `${reading.source}: ${reading.value ?? "—"} (${reading.quality})`));
    }
    visit.append(readings);
  } else {
    visit.append(text("p", "No truck in the lane.", "muted"));
  }
  card.append(visit);
  const last = lane.last_decision;
  const decision = text("p", null, "last-decision");
  if (last) {
    decision.append(text("span", last.outcome, `outcome ${last.outcome}`), text("span", ` ${last.container ?? "unread"}`));
  } else {
    decision.append(text("span", "No decision yet.", "muted"));
  }
  card.append(decision);
  const barrier = barrierLine(lane.barrier);
  if (barrier) card.append(barrier);
  return card;
}

function queueItem(item) {
  const entry = text("li", null, `queue-item ${item.outcome}`);
  entry.append(
    text("span", item.outcome, `outcome ${item.outcome}`),
    text("span", ` ${item.lane} · ${item.container ?? "number unread"} · ${item.decided_at}`),
  );
  const reasons = (item.reasons || []).map((reason) => reason.text || reason.code).join("; ");
  if (reasons) entry.append(text("p", reasons, "reason"));
  const images = text("div", null, "evidence-row");
  for (const evidence of item.evidence || []) {
    if (!/^[0-9a-f]{64}$/.test(evidence.sha256)) continue;
    const image = document.createElement("img");
    image.src = `/api/evidence/${evidence.sha256}`;
    image.alt = `${evidence.source || "scan"} of ${item.container ?? "the container"}`;
    image.className = "evidence";
    // Evidence pruned by retention (or never stored) says so instead of a broken image.
    image.addEventListener("error", () => image.replaceWith(text("span", `${image.alt}: not stored`, "reason")));
    images.append(image);
  }
  if (images.childElementCount) entry.append(images);
  if (item.rpm_profile) entry.append(profilePlot(item.rpm_profile));
  if (state.role && state.role !== "viewer") {
    const resolveButton = text("button", "Resolve…", "plain resolve-open");
    resolveButton.type = "button";
    resolveButton.addEventListener("click", () => openResolve(item));
    entry.append(resolveButton);
  }
  if (SUPERVISORS.has(state.role)) {
    const button = text("button", "Override…", "plain override-open");
    button.type = "button";
    button.addEventListener("click", () => openOverride(item));
    entry.append(button);
  }
  return entry;
}

function renderVisit(report) {
  const out = $("search-result");
  out.replaceChildren();
  const visit = report.visit;
  out.append(text("h3", `Visit ${visit.id} on ${visit.lane}`));
  out.append(text("p", `opened ${visit.opened_at} by ${visit.trigger}, closed ${visit.closed_at ?? "—"} (${visit.close_cause ?? "open"})`, "muted"));
  const list = text("ul", null, "decisions");
  for (const decision of report.decisions || []) {
    const item = text("li");
    item.append(text("span", `${decision.decided_at} ${decision.container ?? "unread"} `), text("span", decision.outcome, `outcome ${decision.outcome}`));
    list.append(item);
  }
  out.append(text("h4", `${(report.decisions || []).length} decisions, ${(report.readings || []).length} readings`), list);
}

async function loadHolds() {
  $("holds-error").textContent = "";
  const container = $("holds-container").value.trim();
  const params = new URLSearchParams();
  if (container) params.set("container", container);
  if ($("holds-all").checked) params.set("all", "1");
  const result = await api(`/api/holds?${params}`);
  if (result.status !== 200) {
    if (result.status !== 401) $("holds-error").textContent = result.body.error || `Failed (${result.status}).`;
    return;
  }
  const rows = result.body.holds.map((hold) => {
    const row = text("tr", null, hold.active ? "active" : "released");
    row.dataset.hold = hold.id;
    for (const value of [hold.id, hold.container ?? hold.bill_of_lading, hold.agency, `${hold.hold_type} ${hold.code ?? ""}`, hold.placed_at, hold.released_at ?? ""]) {
      row.append(text("td", value));
    }
    const cell = text("td");
    if (hold.active && SUPERVISORS.has(state.role)) {
      const button = text("button", "Release…", "plain hold-release");
      button.type = "button";
      button.addEventListener("click", () => releaseHold(hold, cell));
      cell.append(button);
    }
    row.append(cell);
    return row;
  });
  $("holds-table").tBodies[0].replaceChildren(...rows);
  $("holds-total").textContent = `${result.body.total} holds`;
}

function releaseHold(hold, cell) {
  cell.replaceChildren();
  const form = text("form", null, "inline-form");
  const reason = document.createElement("input");
  reason.placeholder = "reason";
  reason.required = true;
  reason.className = "release-reason";
  const go = text("button", "Release", "release-go");
  go.type = "submit";
  form.append(reason, go);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await api(`/api/holds/${hold.id}/release`, { method: "POST", body: { reason: reason.value } });
    if (result.status === 200) {
      $("holds-done").textContent = `Released hold ${hold.id} on ${hold.container ?? hold.bill_of_lading}.`;
      loadHolds();
    } else $("holds-error").textContent = result.body.error || `Refused (${result.status}).`;
  });
  cell.append(form);
  reason.focus();
}

function renderReport(report) {
  const out = $("search-result");
  out.replaceChildren();
  out.append(text("h3", report.container));
  const active = report.active_holds || [];
  if (active.length) {
    out.append(text("p", `On hold: ${active.map((h) => `${h.agency} ${h.hold_type} ${h.code ?? ""}`.trim()).join(", ")}`, "held"));
  } else {
    out.append(text("p", report.eligible ? "No active hold." : "No active hold, but the hold list is not loaded.", report.eligible ? "clear" : "held"));
  }
  const decisions = report.decisions || [];
  const visits = report.visits || [];
  const reads = report.readings || [];
  out.append(text("h4", `${decisions.length} decisions, ${visits.length} visits, ${reads.length} readings`));
  const list = text("ul", null, "decisions");
  for (const decision of decisions) {
    const item = text("li");
    item.append(text("span", `${decision.decided_at} ${decision.lane} `), text("span", decision.outcome, `outcome ${decision.outcome}`));
    list.append(item);
  }
  out.append(list);
  const history = report.hold_history || [];
  if (history.length) {
    out.append(text("h4", "Hold history"));
    const past = text("ul", null, "decisions");
    for (const hold of history) {
      past.append(text("li", `${hold.placed_at} ${hold.agency} ${hold.hold_type} placed${hold.released_at ? `, released ${hold.released_at}` : ""}`));
    }
    out.append(past);
  }
}

// The portal monitor's gamma counts through the pass, with the background and the alarm threshold
// (background + n sigma, Poisson) per sample: what the officer weighs an alarm by.
function profilePlot(profile) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 320;
  const height = 120;
  const counts = profile.gamma || [];
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "rpm-plot");
  svg.setAttribute("role", "img");
  const interval = Number(profile.interval_s) || 0.1;
  const background = profile.background_cps === null ? null : Number(profile.background_cps) * interval;
  const threshold = background === null ? null : background + (Number(profile.n_sigma) || 3) * Math.sqrt(background);
  const top = Math.max(1, ...counts, threshold ?? 0) * 1.1;
  const x = (i) => (counts.length > 1 ? (i / (counts.length - 1)) * width : 0);
  const y = (v) => height - (v / top) * height;
  const line = (value, className, label) => {
    const path = document.createElementNS(ns, "line");
    path.setAttribute("x1", "0");
    path.setAttribute("x2", String(width));
    path.setAttribute("y1", String(y(value)));
    path.setAttribute("y2", String(y(value)));
    path.setAttribute("class", className);
    const title = document.createElementNS(ns, "title");
    title.textContent = label;
    path.append(title);
    svg.append(path);
  };
  if (background !== null) line(background, "background", `background ${background.toFixed(1)} counts a sample`);
  if (threshold !== null) line(threshold, "threshold", `alarm threshold ${threshold.toFixed(1)} counts a sample`);
  const trace = document.createElementNS(ns, "polyline");
  trace.setAttribute("points", counts.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
  trace.setAttribute("class", "counts");
  svg.append(trace);
  const label = document.createElementNS(ns, "title");
  label.textContent = `gamma counts of the pass: ${counts.length} samples, peak ${Math.max(0, ...counts)}`;
  svg.prepend(label);
  return svg;
}

function openOverride(item) {
  state.overriding = item.id;
  $("override-what").textContent = `${item.outcome} of ${item.container ?? "an unread box"} on ${item.lane}`;
  $("override-error").textContent = "";
  $("override-done").textContent = "";
  $("override-reason").value = "";
  $("override-password").value = "";
  $("override-form").hidden = false;
  $("override-reason").focus();
}

function openResolve(item) {
  state.resolving = item.id;
  $("resolve-what").textContent = `${item.outcome} of ${item.container ?? "an unread box"} on ${item.lane}`;
  $("resolve-number-label").hidden = item.container !== null && item.container !== undefined;
  $("resolve-number").value = "";
  $("resolve-code").value = "";
  $("resolve-note").value = "";
  $("resolve-error").textContent = "";
  $("override-done").textContent = "";
  $("resolve-form").hidden = false;
}

async function start() {
  $("holds-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadHolds();
  });
  $("place-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("place-error").textContent = "";
    const result = await api("/api/holds", {
      method: "POST",
      body: {
        container: $("place-container").value,
        agency: $("place-agency").value,
        hold_type: $("place-type").value,
        code: $("place-code").value,
        reason: $("place-reason").value,
      },
    });
    if (result.status === 200) {
      $("holds-done").textContent = result.body.placed ? `Placed hold ${result.body.hold.id}.` : `Already on hold (${result.body.hold.id}).`;
      $("place-reason").value = "";
      loadHolds();
    } else $("place-error").textContent = result.body.error || `Refused (${result.status}).`;
  });
  $("resolve-cancel").addEventListener("click", () => {
    $("resolve-form").hidden = true;
  });
  $("resolve-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const number = $("resolve-number").value.trim();
    const body = { note: $("resolve-note").value };
    if (number) body.container = number;
    else body.code = $("resolve-code").value;
    const result = await api(`/api/decisions/${encodeURIComponent(state.resolving)}/resolve`, { method: "POST", body });
    if (result.status === 200) {
      $("resolve-form").hidden = true;
      $("override-done").textContent = result.body.outcome
        ? `Decided again: ${result.body.outcome} for ${result.body.container}.`
        : `Resolved: ${result.body.code}.`;
    } else {
      $("resolve-error").textContent = result.body.error || `Refused (${result.status}).`;
    }
  });
  $("override-cancel").addEventListener("click", () => {
    $("override-form").hidden = true;
    state.overriding = null;
  });
  $("override-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("override-error").textContent = "";
    const result = await api(`/api/decisions/${encodeURIComponent(state.overriding)}/override`, {
      method: "POST",
      body: {
        outcome: $("override-outcome").value,
        reason: $("override-reason").value,
        password: $("override-password").value,
      },
    });
    $("override-password").value = "";
    if (result.status === 200) {
      $("override-form").hidden = true;
      state.overriding = null;
      $("override-done").textContent = `Overridden: ${result.body.outcome} for ${result.body.container ?? "the visit"}.`;
    } else if (result.status === 423) {
      show("login-view");
      $("login-error").textContent = "Account locked after failed logins.";
    } else {
      $("override-error").textContent = result.body.error || `Refused (${result.status}).`;
    }
  });
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    const submit = $("login-form").querySelector("button[type=submit]");
    const password = $("login-password").value;
    submit.disabled = true;  // one attempt at a time: each one counts towards the lock
    let result;
    try {
      result = await api("/api/login", {
        method: "POST",
        body: { username: $("login-username").value, password },
      });
    } finally {
      submit.disabled = false;
    }
    // Clear what was sent, never what was typed since.
    if ($("login-password").value === password) $("login-password").value = "";
    if (result.status === 200) signedIn(result.body);
    else if (result.status === 423) $("login-error").textContent = `Account locked until ${result.body.locked_until}.`;
    else $("login-error").textContent = result.body.error || `Login failed (${result.status}).`;
  });
  $("unlock-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("unlock-error").textContent = "";
    const result = await api("/api/session/unlock", { method: "POST", body: { password: $("unlock-password").value } });
    $("unlock-password").value = "";
    if (result.status === 200) signedIn(result.body);
    else if (result.status === 423) {
      $("login-error").textContent = "Account locked after failed logins.";
      show("login-view");
    } else $("unlock-error").textContent = result.body.error || "Wrong password.";
  });
  $("logout").addEventListener("click", async () => {
    await api("/api/logout", { method: "POST" });
    if (state.events) state.events.close();
    state.events = null;
    state.csrf = null;
    state.role = null;
    for (const id of ["search-result", "queue", "lanes", "alert-list"]) $(id).replaceChildren();
    $("alerts").hidden = true;
    $("override-form").hidden = true;
    $("override-done").textContent = "";
    show("login-view");
  });
  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("search-error").textContent = "";
    const number = $("search-number").value.trim();
    if (number.startsWith("gated:pass")) {
      const pass = await api(`/api/pass?qr=${encodeURIComponent(number)}`);
      if (pass.status === 200) renderVisit(pass.body);
      else if (pass.status !== 401) $("search-error").textContent = pass.body.error || `Not found (${pass.status}).`;
      return;
    }
    const result = await api(`/api/containers/${encodeURIComponent(number)}`);
    if (result.status === 200) renderReport(result.body);
    else if (result.status !== 401) $("search-error").textContent = result.body.error || `Search failed (${result.status}).`;
  });
  const session = await api("/api/session");
  if (session.status === 200) signedIn(session.body);
  else if (!session.body.locked) show("login-view");
}

start();
