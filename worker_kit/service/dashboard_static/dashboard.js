// worker_kit dashboard: plain JS, no build step. One push connection per page: the endpoint view
// reads /v2/{id}/dashboard/feed, a job view reads the job's /stream as Server-Sent Events.
// Both are read with fetch (not EventSource) so the client key travels in a header, never a URL.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const STATES_LIVE = ["IN_QUEUE", "IN_PROGRESS"];
const STATES_RETRY = ["FAILED", "TIMED_OUT"];
const HISTORY_MS = 10 * 60 * 1000;

const app = { endpoint: "", key: "", filter: "", conn: null, history: [], jobId: null, job: null, series: null };

// -- small helpers -----------------------------------------------------------------------------
function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function text(el, value) { el.textContent = value === null || value === undefined ? "–" : String(value); }

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1000) return value + " ms";
  if (value < 60000) return (value / 1000).toFixed(1) + " s";
  return (value / 60000).toFixed(1) + " min";
}

function clock(epochMs) { return epochMs ? new Date(epochMs).toLocaleTimeString() : "–"; }

function pretty(value) { return value === undefined ? "–" : JSON.stringify(value, null, 2); }

function badge(status) {
  const span = document.createElement("span");
  span.className = "badge";
  span.dataset.status = status;
  span.textContent = status;
  return span;
}

function cell(row, content, cls) {
  const td = row.insertCell();
  if (content instanceof Node) td.appendChild(content); else text(td, content);
  if (cls) td.className = cls;
  return td;
}

function jobLink(id) {
  const a = document.createElement("a");
  a.href = "#" + new URLSearchParams({ ep: app.endpoint, job: id });
  a.textContent = id.length > 12 ? id.slice(0, 12) + "…" : id;
  a.title = id;
  return a;
}

function say(message) {
  const p = $("#message");
  p.hidden = !message;
  p.textContent = message || "";
}

function setConn(state, label) {
  const el = $("#conn");
  el.dataset.state = state;
  el.textContent = label || state;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (app.key) h.Authorization = "Bearer " + app.key;
  return h;
}

function url(path) { return "/v2/" + encodeURIComponent(app.endpoint) + path; }

async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(url(path), init);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) throw new Error((data && data.error) || "HTTP " + resp.status);
  return data;
}

// -- Server-Sent Events over fetch --------------------------------------------------------------
async function readEvents(path, extraHeaders, onEvent, signal) {
  const resp = await fetch(url(path), { headers: headers(Object.assign({ Accept: "text/event-stream" }, extraHeaders)), signal });
  if (!resp.ok) {
    let message = "HTTP " + resp.status;
    try { message = (await resp.json()).error || message; } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = resp.status;
    throw err;
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const ev = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") ev.event = val;
        else if (field === "data") ev.data.push(val);
        else if (field === "id") ev.id = val;
      }
      if (ev.data.length) onEvent(ev.event, JSON.parse(ev.data.join("\n")), ev.id);
    }
  }
}

// Keeps one connection open, reconnecting with backoff; `open(signal)` resolves when the server
// ends the stream and returns true when there is nothing more to read.
function keepOpen(open) {
  const ctl = new AbortController();
  (async () => {
    let delay = 1000;
    while (!ctl.signal.aborted) {
      try {
        if (await open(ctl.signal)) return;
        delay = 1000;
      } catch (err) {
        if (ctl.signal.aborted) return;
        if (err.status === 401 || err.status === 403 || err.status === 404) {
          setConn("error", "refused");
          say(err.message);
          return;
        }
        setConn("reconnecting", "reconnecting: " + err.message);
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 15000);
    }
  })().catch((err) => say(String(err)));
  return ctl;
}

function closeConn() {
  if (app.conn) app.conn.abort();
  app.conn = null;
}

// -- charts (inline SVG) --------------------------------------------------------------------------
function drawChart(svg, series, opts) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 300, H = 100, top = 10, bottom = 92;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const scale = max > 0 ? max : 1;
  const y = (v) => bottom - (v / scale) * (bottom - top);
  for (const frac of [0, 0.5, 1]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", 0); line.setAttribute("x2", W);
    line.setAttribute("y1", y(frac * scale)); line.setAttribute("y2", y(frac * scale));
    svg.appendChild(line);
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", 2); label.setAttribute("y", 9);
  label.textContent = (opts.format || String)(max);
  svg.appendChild(label);
  const n = Math.max(1, ...series.map((s) => s.values.length));
  series.forEach((s, i) => {
    if (opts.bars) {
      const slot = W / n, width = Math.max(1, slot / series.length - 1);
      s.values.forEach((v, k) => {
        if (!v) return;
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("class", s.cls);
        rect.setAttribute("x", k * slot + i * width); rect.setAttribute("width", width);
        rect.setAttribute("y", y(v)); rect.setAttribute("height", bottom - y(v));
        svg.appendChild(rect);
      });
      return;
    }
    let d = "";
    s.values.forEach((v, k) => {
      if (v === null) return;
      const x = n > 1 ? (k / (n - 1)) * W : W / 2;
      d += (d ? " L" : "M") + x.toFixed(1) + " " + y(v).toFixed(1);
      const dot = document.createElementNS(SVG, "rect"); // so a lone point shows too
      dot.setAttribute("class", s.cls);
      dot.setAttribute("x", Math.min(W - 3, x)); dot.setAttribute("y", y(v) - 1.5);
      dot.setAttribute("width", 3); dot.setAttribute("height", 3);
      svg.appendChild(dot);
    });
    if (!d) return;
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("class", "line " + s.cls);
    path.setAttribute("d", d);
    svg.appendChild(path);
  });
}

// -- the endpoint view ----------------------------------------------------------------------------
function renderSnapshot(snap) {
  const load = snap.load;
  text($("#t-queue"), load.inQueue);
  text($("#t-progress"), load.inProgress);
  text($("#t-workers"), load.workersBusy + " / " + load.workersLive);
  text($("#t-desired"), load.desiredWorkers + " of " + load.workersMax);
  const s = snap.series;
  app.series = s;
  const last = s.completed.length - 1;
  text($("#t-completed"), s.completed[last]);
  text($("#t-failed"), s.failed[last]);

  app.history.push([snap.now, load.inQueue, load.inProgress]);
  while (app.history.length && app.history[0][0] < snap.now - HISTORY_MS) app.history.shift();
  drawChart($("#c-queue"), [
    { values: app.history.map((h) => h[1]), cls: "s0" },
    { values: app.history.map((h) => h[2]), cls: "s1" },
  ], {});
  drawChart($("#c-done"), [{ values: s.completed, cls: "ok" }, { values: s.failed, cls: "bad" }], { bars: true });
  drawChart($("#c-delay"), [{ values: s.delayP50, cls: "s0" }, { values: s.delayP95, cls: "s1" }], { format: ms });
  drawChart($("#c-exec"), [{ values: s.execP50, cls: "s0" }, { values: s.execP95, cls: "s1" }], { format: ms });

  const wbody = $("#workers tbody");
  wbody.replaceChildren();
  for (const w of snap.workers) {
    const row = wbody.insertRow();
    cell(row, w.id);
    cell(row, badge(w.state));
    cell(row, w.running + " / " + w.slots);
    const jobs = document.createElement("span");
    w.jobs.forEach((id, i) => { if (i) jobs.append(" "); jobs.appendChild(jobLink(id)); });
    cell(row, jobs);
    cell(row, ms(w.lastSeenMs) + " ago");
  }
  if (!snap.workers.length) cell(wbody.insertRow(), "no live workers").colSpan = 5;

  $("#requests-total").textContent = "(" + snap.requests.length + " of " + snap.requestsTotal + ")";
  const rbody = $("#requests tbody");
  rbody.replaceChildren();
  for (const job of snap.requests) {
    const row = rbody.insertRow();
    row.dataset.id = job.id;
    row.dataset.status = job.status;
    cell(row, jobLink(job.id));
    cell(row, badge(job.status));
    cell(row, clock(job.createdAt));
    cell(row, ms(job.delayTime));
    cell(row, job.startedAt ? ms(job.executionTime) : "–");
    cell(row, job.workerId);
    cell(row, job.error, "error");
  }
  if (!snap.requests.length) cell(rbody.insertRow(), "no requests seen yet").colSpan = 7;
}

function openEndpoint() {
  closeConn();
  $("#endpoint-view").hidden = false;
  $("#job-view").hidden = true;
  $("#intro").hidden = true;
  setConn("connecting", "connecting");
  const query = app.filter ? "?state=" + encodeURIComponent(app.filter) : "";
  app.conn = keepOpen(async (signal) => {
    await readEvents("/dashboard/feed" + query, {}, (event, data) => {
      if (event === "snapshot") { setConn("live", "live"); say(""); renderSnapshot(data); }
      else if (event === "error") say(data.error);
    }, signal);
    return false;
  });
}

// -- the job view -----------------------------------------------------------------------------------
function renderJob(job) {
  app.job = job;
  text($("#j-id"), job.id);
  const status = $("#j-status");
  status.dataset.status = job.status;
  text(status, job.status);
  text($("#j-created"), clock(job.createdAt));
  text($("#j-delay"), ms(job.delayTime));
  text($("#j-exec"), job.startedAt ? ms(job.executionTime) : "–");
  text($("#j-attempt"), job.attempt);
  text($("#j-retries"), job.retries);
  text($("#j-worker"), job.workerId);
  if ("input" in job) text($("#j-input"), pretty(job.input));
  else if (job.inputPreview !== undefined) text($("#j-input"), job.inputPreview + "\n… (truncated)");
  else text($("#j-input"), job.inputHidden ? "(not shown: dashboard_inputs is off for this endpoint)" : "–");
  text($("#j-progress"), job.progress === undefined || job.progress === null ? "–" : pretty(job.progress));
  if ("output" in job) text($("#j-output"), pretty(job.output));
  else text($("#j-output"), job.outputPreview !== undefined ? job.outputPreview + "\n… (truncated)" : "–");
  text($("#j-error"), job.error || "–");
  $("#j-cancel").hidden = !STATES_LIVE.includes(job.status);
  $("#j-retry").hidden = !STATES_RETRY.includes(job.status);
}

async function refreshJob() {
  try { renderJob(await call("GET", "/dashboard/jobs/" + encodeURIComponent(app.jobId))); }
  catch (err) { say(err.message); }
}

function appendChunk(output) {
  const li = document.createElement("li");
  li.textContent = typeof output === "string" ? output : JSON.stringify(output);
  const list = $("#j-stream");
  list.appendChild(li);
  text($("#j-stream-count"), "(" + list.children.length + ")");
  list.scrollTop = list.scrollHeight;
}

function openJob(jobId) {
  closeConn();
  app.jobId = jobId;
  $("#endpoint-view").hidden = true;
  $("#job-view").hidden = false;
  $("#intro").hidden = true;
  $("#back").href = "#" + new URLSearchParams({ ep: app.endpoint });
  $("#j-stream").replaceChildren();
  text($("#j-stream-count"), "");
  setConn("connecting", "connecting");
  let cursor = 0;
  app.conn = keepOpen(async (signal) => {
    await refreshJob();
    let ended = false;
    const extra = cursor ? { "Last-Event-ID": String(cursor) } : {};
    await readEvents("/stream/" + encodeURIComponent(jobId), extra, (event, data, id) => {
      setConn("live", "live");
      // A chunk is an unnamed ("message") event; older services named it "chunk".
      if (event === "message" || event === "chunk") { appendChunk(data.output); if (id) cursor = Number(id); }
      else if (event === "update") {
        if (!app.job || data.status !== app.job.status) refreshJob(); // times, attempt, worker
        else if ("output" in data) renderJob(Object.assign({}, app.job, { progress: data.output }));
      }
      else if (event === "status") { ended = true; refreshJob(); }
      else if (event === "error") say(data.error);
    }, signal);
    if (ended) setConn("idle", "job ended");
    return ended;
  });
}

async function act(path) {
  try {
    await call("POST", path + "/" + encodeURIComponent(app.jobId));
    if (path === "/retry") openJob(app.jobId); else await refreshJob();
  } catch (err) { say(err.message); }
}

// -- navigation -----------------------------------------------------------------------------------
function route() {
  const params = new URLSearchParams(location.hash.slice(1));
  const endpoint = params.get("ep") || "";
  if (!endpoint) {
    closeConn();
    $("#endpoint-view").hidden = true;
    $("#job-view").hidden = true;
    $("#intro").hidden = false;
    return;
  }
  app.endpoint = endpoint;
  app.key = sessionStorage.getItem("worker-kit-key:" + endpoint) || "";
  $("#endpoint").value = endpoint;
  $("#key").value = app.key;
  const job = params.get("job");
  if (job) openJob(job);
  else { app.history = []; openEndpoint(); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#connect").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const endpoint = $("#endpoint").value.trim();
    sessionStorage.setItem("worker-kit-key:" + endpoint, $("#key").value);
    const target = "#" + new URLSearchParams({ ep: endpoint });
    if (location.hash === target) route(); else location.hash = target;
  });
  $("#filter").addEventListener("change", () => { app.filter = $("#filter").value; openEndpoint(); });
  $("#submit").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let input;
    try { input = JSON.parse($("#submit-input").value); }
    catch (err) { say("the input is not valid JSON: " + err.message); return; }
    try { await call("POST", "/run", { input }); say(""); }
    catch (err) { say(err.message); }
  });
  $("#j-cancel").addEventListener("click", () => act("/cancel"));
  $("#j-retry").addEventListener("click", () => act("/retry"));
  window.addEventListener("hashchange", route);
  route();
  fetch("/dashboard/endpoints").then((r) => (r.ok ? r.json() : { endpoints: [] })).then((data) => {
    const list = $("#known-endpoints");
    for (const id of data.endpoints) {
      const option = document.createElement("option");
      option.value = id;
      list.appendChild(option);
    }
  }).catch(() => { /* suggestions only */ });
});
