// Live pool dashboard of the example app: polls /report (what every worker publishes)
// once a second and draws, per worker, in use / idle / waits over the last samples.
"use strict";

const HISTORY = 60; // samples kept per worker
const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 120;

const container = document.getElementById("workers");
const histories = new Map(); // "host:pid" -> [{inUse, idle, waits}]
const lastWaits = new Map(); // "host:pid" -> the waits counter of the previous sample

function svg(name, attributes) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function workerPanel(key, row) {
  let panel = document.getElementById(`worker-${key}`);
  if (panel) return panel;
  panel = document.createElement("section");
  panel.className = "worker";
  panel.id = `worker-${key}`;
  panel.dataset.pid = row.pid;
  const title = document.createElement("h3");
  const suspect = document.createElement("span");
  suspect.className = "suspect";
  title.append(`${row.host} · pid ${row.pid} `, suspect);
  const numbers = document.createElement("p");
  numbers.className = "numbers";
  panel.append(title, numbers);
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img" });
  chart.append(svg("line", { class: "limit", x1: 0, x2: WIDTH, y1: 2, y2: 2 }));
  for (const name of ["idle", "in-use", "waits"]) chart.append(svg("polyline", { class: name, points: "" }));
  panel.insertBefore(chart, panel.querySelector(".numbers"));
  container.append(panel);
  return panel;
}

function points(samples, field, limit) {
  const step = WIDTH / (HISTORY - 1);
  const offset = HISTORY - samples.length;
  return samples
    .map((sample, i) => {
      const y = HEIGHT - 2 - (Math.min(sample[field], limit) / limit) * (HEIGHT - 4);
      return `${((offset + i) * step).toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
}

function draw(key, row) {
  const panel = workerPanel(key, row);
  const samples = histories.get(key);
  // Connections on the scale of the pool's limit; waits on their own (they run to hundreds).
  const limit = row.max_connections || 1;
  const mostWaits = Math.max(1, ...samples.map((s) => s.waits));
  for (const [name, field, top] of [["in-use", "inUse", limit], ["idle", "idle", limit], ["waits", "waits", mostWaits]]) {
    panel.querySelector(`polyline.${name}`).setAttribute("points", points(samples, field, top));
  }
  panel.dataset.samples = samples.length;
  panel.dataset.maxInUse = Math.max(...samples.map((s) => s.inUse));
  panel.dataset.peak = row.peak_in_use;
  panel.querySelector(".numbers").textContent =
    `in use ${row.in_use} · idle ${row.idle} · peak ${row.peak_in_use} / ${row.max_connections} · ` +
    `waits ${row.waits} (at most ${mostWaits} per sample) · timeouts ${row.timeouts} · ` +
    (row.async_pools ? `async in use ${row.async_in_use} on ${row.async_pools} loop(s) · ` : "") +
    `server connections ${row.server_connections ?? "?"}`;
  panel.querySelector(".suspect").textContent = row.suspect ? `leak suspect: ${row.suspect}` : "";
}

function table(rows) {
  // Built with textContent: host names come from Redis, not from this page.
  const body = document.querySelector("#processes tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.pid = r.pid;
    const age = r.snapshot_age === null ? null : `${r.snapshot_age.toFixed(1)} s`;
    for (const value of [r.host, r.pid, r.in_use, r.idle, r.peak_in_use, r.checkouts, r.waits, r.timeouts, age,
                         r.server_connections, r.suspect]) {
      const td = document.createElement("td");
      td.textContent = value ?? "-";
      tr.append(td);
    }
    return tr;
  }));
}

function update(report) {
  const rows = report.processes.filter((row) => row.in_use !== null); // workers that publish
  const seen = new Set();
  for (const row of rows) {
    const key = `${row.host}-${row.pid}`;
    seen.add(key);
    const samples = histories.get(key) || [];
    const previous = lastWaits.has(key) ? lastWaits.get(key) : row.waits;
    samples.push({ inUse: row.in_use, idle: row.idle, waits: row.waits - previous });
    lastWaits.set(key, row.waits);
    histories.set(key, samples.slice(-HISTORY));
    draw(key, row);
  }
  for (const key of histories.keys()) {
    if (!seen.has(key)) { // its snapshot expired: the worker is gone
      histories.delete(key);
      lastWaits.delete(key);
      document.getElementById(`worker-${key}`)?.remove();
    }
  }
  table(report.processes);
  document.getElementById("updated").textContent =
    `${rows.length} publishing, ${report.totals.server_connections ?? "?"} server connections, ` +
    `at ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  const error = document.getElementById("error");
  try {
    const response = await fetch(container.dataset.reportUrl, { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    update(await response.json());
    error.hidden = true;
  } catch (exc) {
    error.textContent = `Could not read the report: ${exc.message}`;
    error.hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function burst(kind) {
  // Several requests, so that more than one worker is likely to take part.
  const url = `${container.dataset.burstUrl}?kind=${encodeURIComponent(kind)}`;
  const answers = await Promise.all([1, 2, 3, 4].map(() => fetch(url, { method: "POST" }).then((r) => r.json())));
  const pids = [...new Set(answers.filter((a) => a.started).map((a) => a.pid))];
  document.getElementById("burst-status").textContent =
    pids.length ? `${kind} burst started in pid ${pids.join(", ")}` : "a burst is still running";
}

for (const button of document.querySelectorAll("button.burst")) {
  button.addEventListener("click", () => burst(button.dataset.kind));
}
poll();
