// The demo page: one WebSocket, newest state only; reconnects by itself when the server goes away.
"use strict";

const $ = (id) => document.getElementById(id);
const SPEC_SECONDS = 10; // history the spectrogram canvas holds
const MODALITIES = ["camera", "lidar", "microphone"];

let newest = -1; // version of the newest update drawn: an older image that decodes late is not drawn
let specTime = null; // tick time of the right edge of the spectrogram
let specChain = Promise.resolve(); // spectrogram slices are drawn in arrival order
let randomWeights = false;

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => setPill("connection", "connected", "good");
  ws.onclose = () => {
    setPill("connection", "disconnected: reconnecting", "bad");
    setTimeout(connect, 1000);
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.prediction) randomWeights = msg.prediction.random_weights;
    showStats(msg);
    if (msg.type === "update") showUpdate(msg);
  };
}

function setPill(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.className = "pill " + (kind || "");
}

function fmt(value, unit, digits = 0) {
  return value === null || value === undefined ? "-" : value.toFixed(digits) + (unit ? " " + unit : "");
}

function showStats(msg) {
  const running = msg.status === "running";
  setPill("status", msg.status, running ? "good" : msg.status === "stopped" ? "bad" : "");
  $("rig").textContent = msg.rig;
  $("rate").textContent = fmt(msg.samples_per_s, "", 1);
  $("latency-p50").textContent = fmt(msg.latency_p50_ms, "ms");
  $("age").textContent = msg.age_s === null ? "-" : fmt(msg.age_s, "s ago", 1);
  if (msg.metrics_url) {
    $("metrics").href = msg.metrics_url;
    $("metrics").hidden = false;
  }
  showSensors(msg.sensors);
  const warnings = msg.sensors
    .filter((s) => s.kind === "fallback")
    .map((s) => `${s.id} (${s.modality}): ${s.reason}. Showing the SIMULATED world instead.`);
  if (randomWeights) warnings.push("The model runs RANDOM weights (no checkpoint): its predictions are meaningless.");
  $("warnings").replaceChildren(...warnings.map((w) => el("div", w)));
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

// Rows are built once and then updated in place: a button replaced ten times a second would
// swallow clicks that fall between the press and the release.
const sensorEnabled = {};

function showSensors(sensors) {
  const body = $("sensors").tBodies[0];
  if (body.rows.length !== sensors.length) body.replaceChildren(...sensors.map(sensorRow));
  for (const s of sensors) {
    sensorEnabled[s.id] = s.enabled;
    const row = body.querySelector(`tr[data-sensor="${CSS.escape(s.id)}"]`);
    row.cells[3].textContent = s.state;
    row.cells[3].className = "state " + s.state;
    row.cells[4].firstChild.textContent = s.enabled ? "switch off" : "switch on";
  }
}

function sensorRow(s) {
  const tr = el("tr");
  tr.dataset.sensor = s.id;
  const source = el("td", s.kind === "device" ? `device: ${s.description}` : s.kind === "fallback" ? "simulated (stand-in)" : "simulated");
  if (s.reason) source.append(el("div", s.reason, "reason"));
  const button = el("button");
  button.dataset.sensor = s.id;
  button.onclick = () => toggle(s.id, !sensorEnabled[s.id]);
  const action = el("td");
  action.append(button);
  tr.append(el("td", s.id), el("td", s.modality), source, el("td"), action);
  return tr;
}

async function toggle(sensor, enabled) {
  const response = await fetch("/api/sensors/" + encodeURIComponent(sensor), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ enabled }),
  });
  const body = await response.json();
  if (response.ok) showSensors(body.sensors);
  else alert(body.error);
}

function showUpdate(msg) {
  const p = msg.prediction;
  if (!p || msg.version <= newest) return;
  newest = msg.version;
  const version = msg.version;
  $("label").textContent = p.error ? "error" : p.label;
  $("confidence").textContent = p.error ? p.error : (100 * p.confidence).toFixed(0) + "%";
  $("seq").textContent = p.seq;
  $("latency").textContent = fmt(p.latency_ms, "ms");
  $("position").textContent = p.position ? p.position.map((v) => v.toFixed(1)).join(", ") + " m" : "-";
  $("model").textContent = p.model_version;
  $("modalities").replaceChildren(
    ...MODALITIES.map((m) => {
      const on = p.modalities.includes(m);
      return el("span", on ? m : m + " missing", "badge " + (on ? "present" : "missing"));
    })
  );
  showProbs(p.probs, p.label);
  showObjects(p.objects, msg.truth);
  for (const id of ["camera", "lidar"]) {
    const drawn = msg.drawn[id] || { objects: 0, truth: 0 };
    $(id).dataset.objects = drawn.objects; // boxes drawn on the picture, for tests and scripts
    $(id).dataset.truth = drawn.truth;
  }
  drawImage("camera", msg.images.camera, version, "camera missing");
  drawImage("lidar", msg.images.lidar, version, "LiDAR missing");
  scrollSpectrogram(msg.images.spectrogram, p.timestamp, msg.spectrogram_window_s);
}

function showProbs(probs, label) {
  $("probs").replaceChildren(
    ...probs.map(({ name, p }) => {
      const row = el("div", undefined, "bar" + (name === label ? " top" : ""));
      const track = el("div", undefined, "track");
      const fill = el("div", undefined, "fill");
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.append(fill);
      row.append(el("span", name), track, el("span", (100 * p).toFixed(1) + "%", "v"));
      return row;
    })
  );
}

// Detected objects (highest score first) and, in the simulated world, the truth at that instant.
function showObjects(objects, truth) {
  const num = (values, digits) => values.map((v) => v.toFixed(digits)).join(", ");
  const row = (kind, o) => {
    const tr = el("tr", undefined, "object " + kind);
    const second = kind === "truth" ? o.track_id ?? "-" : (100 * o.score).toFixed(0) + "%";
    const yaw = ((o.yaw * 180) / Math.PI).toFixed(0) + "°";
    tr.append(el("td", o.class), el("td", second), el("td", num(o.position, 1)), el("td", num(o.size, 1)), el("td", yaw));
    return tr;
  };
  const none = (text) => {
    const tr = el("tr", undefined, "none");
    const td = el("td", text);
    td.colSpan = 5;
    tr.append(td);
    return tr;
  };
  $("objects").tBodies[0].replaceChildren(...(objects.length ? objects.map((o) => row("predicted", o)) : [none("none over the score threshold")]));
  $("truth-caption").textContent = truth === null ? "truth: not known (no simulated sensor)" : "truth (simulated world)";
  const rows = truth === null ? [] : truth.length ? truth.map((o) => row("truth", o)) : [none("an empty scene")];
  $("truth").tBodies[0].replaceChildren(...rows);
}

function drawImage(id, url, version, missingText) {
  const canvas = $(id);
  const ctx = canvas.getContext("2d");
  if (!url) {
    ctx.fillStyle = "#0b0d10";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#c94040";
    ctx.font = "20px sans-serif";
    ctx.fillText(missingText, 20, canvas.height / 2);
    return;
  }
  const img = new Image();
  img.onload = () => {
    if (version < newest) return; // a newer state is already on its way
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  };
  img.src = url;
}

// The spectrogram scrolls by the time between ticks; each tick draws the newest part of its window.
function scrollSpectrogram(url, tick, windowS) {
  const job = async () => {
    const canvas = $("spectrogram");
    const ctx = canvas.getContext("2d");
    const pxPerS = canvas.width / SPEC_SECONDS;
    const dt = specTime === null ? SPEC_SECONDS : tick - specTime;
    if (dt <= 0) return;
    specTime = tick;
    const dx = Math.min(canvas.width, Math.round(dt * pxPerS));
    ctx.drawImage(canvas, dx, 0, canvas.width - dx, canvas.height, 0, 0, canvas.width - dx, canvas.height);
    ctx.fillStyle = "#2a1518"; // no audio for this stretch
    ctx.fillRect(canvas.width - dx, 0, dx, canvas.height);
    if (!url) return;
    const img = new Image();
    img.src = url;
    await img.decode();
    const span = Math.min(dt, windowS); // seconds of this window not drawn yet
    const cols = (img.width * span) / windowS;
    const w = Math.round(span * pxPerS);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, img.width - cols, 0, cols, img.height, canvas.width - w, 0, w, canvas.height);
  };
  specChain = specChain.then(job).catch((err) => console.error("spectrogram", err));
}

$("spec-span").textContent = SPEC_SECONDS;
connect();
