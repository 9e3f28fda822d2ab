// beamline-ls operator console: state over a WebSocket, images over HTTP (newest only),
// plots with plotly.js, writes with the API key. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const TWO_PI = 2 * Math.PI;
const MOTORS = ["piezo", "galvo1", "galvo2", "stage:X", "stage:Y", "stage:Z"];
const IMAGE_MIN_INTERVAL_MS = 100;  // at most 10 images a second per camera

let state = null;
let apiKey = sessionStorage.getItem("beamline-ls-key") || "";
const shown = { camera: 0, brightfield: 0 };   // images drawn
const shownSeq = { camera: 0, brightfield: 0 };  // the frame number drawn last
const gotNew = { camera: false, brightfield: false };
const loading = { camera: false, brightfield: false };
const lastFetch = { camera: 0, brightfield: 0 };
const frameSize = { camera: [0, 0] };
let roi = null;        // frame pixel box {x0, y0, x1, y1}
let waveKey = "";      // scan parameters the waveform plot was drawn for
let wave = null;

function fmt(v, digits) {
  // numbers with the digits asked for (whole numbers as they are when none are asked)
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v === "number") {
    if (digits === undefined) return Number.isInteger(v) ? String(v) : v.toFixed(3);
    return v.toFixed(digits);
  }
  return String(v);
}
function val(name) { return state && state.values ? state.values[name] : undefined; }
function units(name) {
  const m = state && state.meta ? state.meta[name] : undefined;
  return m && m.units ? " " + m.units : "";
}
function setText(id, text) { const el = $(id); if (el && el.textContent !== text) el.textContent = text; }

function message(text, kind = "info") {
  const div = document.createElement("div");
  div.className = kind;
  div.textContent = new Date().toLocaleTimeString() + "  " + text;
  const box = $("messages");
  box.prepend(div);
  while (box.children.length > 6) box.lastChild.remove();
}

// ---- login and writes ----------------------------------------------------------------
function setLoggedIn(on) {
  document.body.classList.toggle("readonly", !on);
  $("who").textContent = on ? "operator (writes allowed)" : "read-only";
  $("login-form").hidden = on;
  $("logout").hidden = !on;
}

async function login(key) {
  const r = await fetch("/api/login", { method: "POST", headers: { "X-API-Key": key } });
  if (r.ok) {
    apiKey = key;
    sessionStorage.setItem("beamline-ls-key", key);
    setLoggedIn(true);
    $("key").value = "";
    message("logged in");
  } else {
    setLoggedIn(false);
    message("log in refused: wrong API key", "error");
  }
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-API-Key": apiKey },
    body: JSON.stringify(body || {}),
  });
  const reply = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) {
    if (r.status === 401) setLoggedIn(false);
    message(reply.error || ("HTTP " + r.status), "error");
    return null;
  }
  return reply;
}

async function put(pv, value) {
  message(`${pv} <- ${value} …`);
  const reply = await post("/api/put", { pv, value });
  if (reply) message(`${pv} = ${value} done`);
  return reply;
}

function parseValue(text) {
  const n = Number(text);
  return text.trim() !== "" && Number.isFinite(n) ? n : text;
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.put) put(b.dataset.put, parseValue(b.dataset.value));
  if (b.dataset.putFrom) {
    const input = $(b.dataset.putFrom);
    const text = input.value;
    if (input.validity && input.validity.badInput) { message("not a number: " + b.dataset.pv, "error"); return; }
    if (text.trim() === "") { message("enter a value first", "error"); return; }
    put(b.dataset.pv, parseValue(text));
  }
});

$("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("key").value); });
$("logout").addEventListener("click", () => {
  apiKey = ""; sessionStorage.removeItem("beamline-ls-key"); $("key").value = ""; setLoggedIn(false);
});

// ---- images ----------------------------------------------------------------------------
async function fetchImage(source) {
  // the newest frame, if newer than the one shown (204 otherwise)
  if (loading[source]) return;
  loading[source] = true;
  lastFetch[source] = performance.now();
  try {
    const params = new URLSearchParams({ after: String(shownSeq[source]) });
    if (source === "camera" && !$("auto-contrast").checked) {
      const low = $("low").value, high = $("high").value;
      if (low === "" && high === "") {
        setText("limits", "manual contrast: enter black and/or white (numbers); automatic until then");
      }
      params.set("low", low); params.set("high", high);
    }
    const r = await fetch(`/api/image/${source}.jpg?${params}`, { cache: "no-store" });
    gotNew[source] = r.status === 200;
    if (r.status === 204) return;
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      message(`${source} image: ${e.error || r.status}`, "error");
      if (source === "camera") $("auto-contrast").checked = true;
      return;
    }
    const seq = Number(r.headers.get("X-Frame-Seq"));
    const bitmap = await createImageBitmap(await r.blob());
    const canvas = $(source + "-canvas");
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width; canvas.height = bitmap.height;
    }
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    canvas.dataset.seq = String(seq);
    shownSeq[source] = seq;
    shown[source] += 1;
    if (source === "camera") {
      frameSize.camera = [Number(r.headers.get("X-Frame-Width")), Number(r.headers.get("X-Frame-Height"))];
      setText("camera-shown", String(shown.camera));
      setText("camera-seq", String(seq));
      setText("limits", `black ${r.headers.get("X-Low")}, white ${r.headers.get("X-High")}, bin ${r.headers.get("X-Bin")}`);
      if ($("auto-contrast").checked) {
        $("low").placeholder = r.headers.get("X-Low"); $("high").placeholder = r.headers.get("X-High");
      }
    }
  } catch (err) {
    message(`${source} image: ${err}`, "error");
  } finally {
    loading[source] = false;
  }
}

// ROI: drag on the camera image (a box follows the drag); statistics on the
// full-resolution frame. A drag released anywhere ends; one released off the image
// clips to it.
(function roiTool() {
  const canvas = $("camera-canvas");
  let start = null;
  let current = null;
  function framePoint(ev) {
    const r = canvas.getBoundingClientRect();
    const [w, h] = frameSize.camera;
    const fx = Math.min(Math.max((ev.clientX - r.left) / r.width, 0), 1);
    const fy = Math.min(Math.max((ev.clientY - r.top) / r.height, 0), 1);
    return [Math.round(fx * w), Math.round(fy * h)];
  }
  function box(a, b) {
    return { x0: Math.min(a[0], b[0]), y0: Math.min(a[1], b[1]),
             x1: Math.max(a[0], b[0]), y1: Math.max(a[1], b[1]) };
  }
  function drawBox() {
    const el = $("roi-box");
    const shown = current || roi;
    const [w, h] = frameSize.camera;
    if (!shown || !w) { el.hidden = true; return; }
    const r = canvas.getBoundingClientRect();
    el.hidden = false;
    el.style.left = (shown.x0 / w * r.width) + "px"; el.style.top = (shown.y0 / h * r.height) + "px";
    el.style.width = ((shown.x1 - shown.x0) / w * r.width) + "px";
    el.style.height = ((shown.y1 - shown.y0) / h * r.height) + "px";
  }
  canvas.addEventListener("mousedown", (ev) => {
    if (!frameSize.camera[0]) return;
    ev.preventDefault();
    start = framePoint(ev);
  });
  document.addEventListener("mousemove", (ev) => {
    if (!start) return;
    current = box(start, framePoint(ev));
    drawBox();
  });
  document.addEventListener("mouseup", (ev) => {
    if (!start) return;
    const next = box(start, framePoint(ev));
    start = null; current = null;
    if (next.x1 - next.x0 < 2 || next.y1 - next.y0 < 2) {
      roi = null; setText("roi-stats", "ROI cleared (drag on the image to measure one)");
    } else {
      roi = next;
    }
    drawBox(); updateRoi();
  });
  window.drawRoiBox = drawBox;
})();

async function updateRoi() {
  if (!roi) return;
  const q = new URLSearchParams(roi).toString();
  const r = await fetch("/api/roi/camera?" + q);
  const s = await r.json();
  if (!r.ok) { setText("roi-stats", s.error || "ROI failed"); return; }
  setText("roi-stats", `ROI ${s.x1 - s.x0} x ${s.y1 - s.y0} px at (${s.x0}, ${s.y0}): ` +
    `mean ${s.mean.toFixed(1)}, min ${s.min}, max ${s.max}`);
}
setInterval(updateRoi, 1000);

// ---- plots -----------------------------------------------------------------------------
const plotConfig = { displayModeBar: false, responsive: true };
const margin = { l: 45, r: 45, t: 10, b: 30 };

function drawPhase() {
  const ph = state.phase;
  const now = state.time;
  const target = val("gating:TargetPhase_RBV");
  const fired = ph.triggers.filter((t) => now - t.time < 8);
  const traces = [
    { x: ph.t.map((t) => t - now), y: ph.phase, mode: "lines", name: "phase", line: { width: 1 } },
    { x: fired.filter((t) => t.status === "accepted").map((t) => t.time - now),
      y: fired.filter((t) => t.status === "accepted").map((t) => t.phase ?? t.target),
      mode: "markers", name: "triggers", marker: { color: "#d62728", size: 7 } },
    { x: fired.filter((t) => t.status !== "accepted").map((t) => t.time - now),
      y: fired.filter((t) => t.status !== "accepted").map((t) => t.target),
      mode: "markers", name: "late", marker: { color: "#999", symbol: "x", size: 7 } },
  ];
  const shapes = (typeof target === "number") ? [{ type: "line", xref: "paper", x0: 0, x1: 1,
    y0: target, y1: target, line: { color: "#2ca02c", dash: "dash" } }] : [];
  Plotly.react("phase-plot", traces, {
    margin, showlegend: true, legend: { orientation: "h", y: 1.12 }, shapes,
    xaxis: { title: { text: "s before now" }, range: [-8, 0.2] },
    yaxis: { title: { text: "phase (rad)" }, range: [0, TWO_PI] },
  }, plotConfig);
  const atFire = ph.triggers.map((t) => t.phase).filter((p) => p !== null);
  maybeDraw("hist", `${atFire.length}|${target}`, 1000, () => Plotly.react("hist-plot", [{ x: atFire, type: "histogram", xbins: { start: 0, end: TWO_PI, size: TWO_PI / 60 },
    name: "phase at trigger" }], {
    margin, shapes: shapes.length ? [{ type: "line", yref: "paper", y0: 0, y1: 1, x0: target, x1: target,
      line: { color: "#2ca02c", dash: "dash" } }] : [],
    xaxis: { title: { text: `phase when the trigger fired (rad), ${atFire.length} triggers` }, range: [0, TWO_PI] },
    yaxis: { title: { text: "triggers" } },
  }, plotConfig));
}

function padded(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const pad = Math.max((hi - lo) * 0.05, 1e-6);
  return [lo - pad, hi + pad];
}

async function drawWaveforms() {
  const keys = Object.keys(state.values).filter((k) => k.startsWith("scan:") && !k.endsWith("_RBV")).sort();
  const key = keys.map((k) => k + "=" + state.values[k]).join(";");
  if (key === waveKey) return;
  waveKey = key;
  const r = await fetch("/api/waveforms");
  wave = await r.json();
  if (wave.error) { setText("scan-status", wave.error); return; }
  const shapes = wave.exposures.map(([a, b]) => ({ type: "rect", xref: "x", yref: "paper", x0: a, x1: b,
    y0: 0, y1: 1, fillcolor: "#1f77b4", opacity: 0.12, line: { width: 0 } }));
  // the last shape marks where the board is in the volume (moved by drawPosition)
  shapes.push({ type: "line", xref: "x", yref: "paper", x0: 0, x1: 0, y0: 0, y1: 1, visible: false,
    line: { color: "#d62728", width: 2 } });
  await Plotly.react("wave-plot", [
    { x: wave.t, y: wave.piezo, name: "piezo (µm)", line: { width: 1.5 } },
    { x: wave.t, y: wave.galvo1, name: "galvo 1 (V)", yaxis: "y2", line: { width: 1 } },
    { x: wave.t, y: wave.galvo2, name: "galvo 2 (V)", yaxis: "y2", line: { width: 1, dash: "dot" } },
  ], {
    margin, shapes, legend: { orientation: "h", y: 1.15 },
    // explicit ranges: react() does not re-run autorange for the same (cached) arrays
    xaxis: { title: { text: "time in volume (s)" }, range: [0, wave.period] },
    yaxis: { title: { text: "µm" }, range: padded(wave.piezo) },
    yaxis2: { title: { text: "V" }, overlaying: "y", side: "right",
              range: padded(wave.galvo1.concat(wave.galvo2)) },
  }, plotConfig);
}

function drawPosition() {
  // only the marker moves while the board scans: a relayout of one shape, not a redraw
  if (!wave || wave.error) return;
  const n = wave.exposures.length;
  const t0 = val("scan:StartTime_RBV");
  const running = val("scan:Running_RBV") === 1 && typeof t0 === "number" && t0 > 0;
  const x = running ? ((state.time - t0) % wave.period + wave.period) % wave.period : 0;
  Plotly.relayout("wave-plot", { [`shapes[${n}].x0`]: x, [`shapes[${n}].x1`]: x,
                                 [`shapes[${n}].visible`]: running });
}

function drawCalibration() {
  const cal = state.calibration;
  const tbody = $("cal-points").querySelector("tbody");
  const rows = cal.points.map((p, i) =>
    `<tr><td>${i}</td><td>${fmt(p.z)}</td><td>${fmt(p.galvo1, 4)}</td><td>${fmt(p.galvo2, 4)}</td>` +
    `<td class="write"><button data-remove="${i}">remove</button></td></tr>`).join("");
  if (tbody.dataset.rows !== rows) { tbody.innerHTML = rows; tbody.dataset.rows = rows; }
  const cur = [1, 2].map((i) => `galvo ${i}: scan board ${fmt(val(`scan:Galvo${i}Offset`), 4)} V + ` +
    `${fmt(val(`scan:Galvo${i}Slope`), 5)} V/µm`).join("; ");
  if (cal.fit) {
    setText("cal-fit", ["galvo1", "galvo2"].map((g) => `${g}: fit ${cal.fit[g].offset.toFixed(4)} V + ` +
      `${cal.fit[g].slope.toFixed(5)} V/µm (rms ${cal.fit[g].rms.toExponential(2)} V)`).join("; ") + ". Now " + cur);
  } else {
    setText("cal-fit", `${cal.why}. Now ${cur}`);
  }
  const z = cal.points.map((p) => p.z);
  const colour = { galvo1: "#1f77b4", galvo2: "#ff7f0e" };
  const traces = ["galvo1", "galvo2"].map((g) => ({ x: z, y: cal.points.map((p) => p[g]), mode: "markers",
    name: g, marker: { color: colour[g] } }));
  if (cal.fit && z.length) {
    const zs = [Math.min(...z), Math.max(...z)];
    for (const g of ["galvo1", "galvo2"]) {
      traces.push({ x: zs, y: zs.map((v) => cal.fit[g].offset + cal.fit[g].slope * v), mode: "lines",
        name: g + " fit", line: { dash: "dash", color: colour[g] } });
    }
  }
  Plotly.react("cal-plot", traces, { margin, xaxis: { title: { text: "piezo (µm)" } },
    yaxis: { title: { text: "galvo (V)" } }, legend: { orientation: "h", y: 1.2 } }, plotConfig);
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.remove !== undefined) await post("/api/calibration/remove", { index: Number(b.dataset.remove) });
  if (b.dataset.nudge) {
    const [m, sign] = b.dataset.nudge.split("|");
    const step = Number($("step-" + m.replace(":", "-")).value);
    const pos = val(m + ".RBV");
    if (!Number.isFinite(step) || typeof pos !== "number") { message("no step or position", "error"); return; }
    put(m + ".VAL", pos + Number(sign) * step);
  }
  if (b.dataset.move) {
    const input = $("to-" + b.dataset.move.replace(":", "-"));
    if (input.validity && input.validity.badInput) { message("not a number: " + b.dataset.move, "error"); return; }
    const text = input.value;
    if (text.trim() === "") { message("enter a position first", "error"); return; }
    put(b.dataset.move + ".VAL", Number(text));
  }
});
$("cal-add").addEventListener("click", async () => {
  const r = await post("/api/calibration/add");
  if (r) message(`calibration point at piezo ${r.point[0].toFixed(2)} µm`);
});
$("bg-take").addEventListener("click", async () => {
  message("taking a background with the laser off …");
  const r = await post("/api/background", { frames: Number($("bg-frames").value) });
  if (r) message(`background of ${r.frames} frames taken`);
});
$("cal-clear").addEventListener("click", () => post("/api/calibration/clear"));
$("cal-apply").addEventListener("click", async () => {
  const r = await post("/api/calibration/apply");
  if (r) message("galvo calibration applied to the scan board");
});

// ---- panels ----------------------------------------------------------------------------
function buildMotorRows() {
  const tbody = $("motors").querySelector("tbody");
  tbody.innerHTML = MOTORS.map((m) => {
    const id = m.replace(":", "-");
    return `<tr id="row-${id}"><td>${m}</td><td id="pos-${id}">–</td><td id="egu-${id}"></td>` +
      `<td id="mov-${id}"></td><td class="write"><input id="to-${id}" type="number" step="any">` +
      `<button data-move="${m}">Move</button><button data-put="${m}.STOP" data-value="1">Stop</button></td></tr>`;
  }).join("");
  $("cal-axes").querySelector("tbody").innerHTML = ["piezo", "galvo1", "galvo2"].map((m) =>
    `<tr><td>${m}</td><td id="cal-pos-${m}">–</td><td class="write">step ` +
    `<input id="step-${m}" type="number" step="any" value="${m === "piezo" ? 5 : 0.01}">` +
    `<button data-nudge="${m}|-1">−</button><button data-nudge="${m}|1">+</button></td></tr>`).join("");
}

function updatePanels() {
  const v = state.values;
  setText("prefix", state.prefix);
  const link = $("link");
  const total = state.connected + state.disconnected.length;
  link.textContent = state.disconnected.length ? `${state.connected}/${total} PVs` : "IOC connected";
  link.className = state.connected === 0 ? "bad" : "ok";
  document.body.classList.toggle("offline", state.connected === 0);
  setText("browsers", String(state.console.browsers));
  const cam = state.images.camera;
  setText("shape", cam.width ? `${cam.width} x ${cam.height}` : "–");
  setText("camera-dropped", String(cam.dropped));
  setText("ioc-dropped", fmt(v["image1:DroppedArrays_RBV"]));
  // frame rate: measured against what the scan or the camera settings should give
  const rate = v["cam1:ArrayRate_RBV"];
  let expected = null;
  const acquiring = v["cam1:DetectorState_RBV"] === "Acquire";
  if (v["scan:Running_RBV"] === 1 && v["scan:Mode"] === "Volumetric" && wave && !wave.error) {
    expected = wave.expected_frame_rate;
  } else if (acquiring && v["cam1:TriggerMode_RBV"] === "Internal") {
    // internal trigger: the period asked for, or (0) as fast as exposure and readout allow
    const period = v["cam1:AcquirePeriod_RBV"] > 0 ? v["cam1:AcquirePeriod_RBV"]
      : (v["cam1:AcquireTime_RBV"] || 0) + (v["cam1:ReadoutTime_RBV"] || 0);
    if (period > 0) expected = 1 / period;
  }
  setText("rate", fmt(rate, 1));
  setText("rate-expected", expected ? expected.toFixed(1) : "–");
  $("lagging").hidden = !(acquiring && expected && typeof rate === "number" && expected > 1.1 * rate);
  // gating
  setText("g-state", fmt(v["gating:State_RBV"]) + (v["gating:Enable"] === "On" ? "" : " (gating off)"));
  const period = v["gating:Period_RBV"];
  setText("g-period", typeof period === "number" ? `${(period * 1000).toFixed(1)} ms (${(60 / period).toFixed(0)} bpm)` : "–");
  setText("g-phase", fmt(v["gating:Phase_RBV"]) + " rad");
  setText("g-target", fmt(v["gating:TargetPhase_RBV"]) + " rad");
  setText("g-fired", `${fmt(v["gating:TriggersFired_RBV"])} / ${fmt(v["gating:TriggersLate_RBV"])}`);
  setText("g-armed", fmt(v["gating:Armed_RBV"]));
  setText("g-source", fmt(v["gating:Source_RBV"]));
  setText("g-lost", `${fmt(v["gating:FramesLost_RBV"])} / ${fmt(v["gating:FramesSkipped_RBV"])}`);
  setText("g-message", fmt(v["gating:Message_RBV"]));
  // scan
  setText("scan-status", `${fmt(v["scan:Mode"])}: ${v["scan:Running_RBV"] === 1 ? "running" : "idle"}, ` +
    `volumes ${fmt(v["scan:VolumesDone_RBV"])} of ${v["scan:NumVolumes"] === 0 ? "continuous" : fmt(v["scan:NumVolumes"])}, ` +
    `${fmt(v["scan:NumPlanes"])} planes ${fmt(v["scan:ZStart"], 1)}–${fmt(v["scan:ZStop"], 1)} µm at ${fmt(v["scan:VolumeRate"], 2)} vol/s`);
  setText("scan-message", fmt(v["scan:Message_RBV"]));
  // motors
  for (const m of MOTORS) {
    const id = m.replace(":", "-");
    const pos = v[m + ".RBV"];
    $("row-" + id).hidden = pos === undefined;
    setText("pos-" + id, fmt(pos, 3));  // always 3 decimals: columns line up
    setText("egu-" + id, fmt(v[m + ".EGU"] ?? ""));
    setText("mov-" + id, v[m + ".DMOV"] === 0 ? "moving" : "");
    const cal = $("cal-pos-" + m);
    if (cal) setText("cal-pos-" + m, `${fmt(pos, 4)} ${v[m + ".EGU"] ?? ""}`);
  }
  setText("laser", `${fmt(v["laser:Enable_RBV"])}, ${fmt(v["laser:Power_RBV"], 2)} of ` +
    `${fmt(v["laser:MaxPower_RBV"], 0)} mW at ${fmt(v["laser:Wavelength_RBV"], 0)} nm. ${fmt(v["laser:Message_RBV"])}`);
  setText("camera-info", `${fmt(v["cam1:Model_RBV"])}: ${fmt(v["cam1:DetectorState_RBV"])}, ` +
    `exposure ${fmt(v["cam1:AcquireTime_RBV"], 4)} s, trigger ${fmt(v["cam1:TriggerMode_RBV"])}, ` +
    `${fmt(v["cam1:ArraySizeX_RBV"])} x ${fmt(v["cam1:ArraySizeY_RBV"])} px, bin ${fmt(v["cam1:BinX_RBV"])}, ` +
    `frames ${fmt(v["cam1:ArrayCounter_RBV"])}, sensor ${fmt(v["cam1:TemperatureActual"], 1)} °C. ${fmt(v["cam1:StatusMessage_RBV"])}`);
  setText("background", v["cam1:BackgroundValid_RBV"] === 1
    ? `background: ${fmt(v["cam1:BackgroundFrames_RBV"])} frames, mean ${fmt(v["cam1:BackgroundLevel_RBV"], 1)} counts, ` +
      (v["cam1:BackgroundEnable"] === "On" ? "subtracted from saved frames" : "not subtracted")
    : "background: none valid (none taken, or exposure, binning or ROI changed since)");
  setText("w-file", fmt(v["HDF1:FullFileName_RBV"]));
  setText("w-capture", `${fmt(v["HDF1:Capture_RBV"])}: ${fmt(v["HDF1:NumCaptured_RBV"])} of ${fmt(v["HDF1:NumCapture_RBV"])}`);
  setText("w-dropped", `${fmt(v["HDF1:DroppedArrays_RBV"])} / ${fmt(v["HDF1:LostFrames_RBV"])}`);
  setText("w-mirror", `${fmt(v["HDF1:MirrorPath"]) || "no copies"}: queued ${fmt(v["HDF1:MirrorQueued_RBV"])}, ` +
    `verified ${fmt(v["HDF1:MirrorVerified_RBV"])}, failed ${fmt(v["HDF1:MirrorFailed_RBV"])}. ${fmt(v["HDF1:MirrorMessage_RBV"])}`);
  setText("w-message", fmt(v["HDF1:WriteMessage"]));
  // runs
  const runs = state.runs.runs;
  const active = runs.find((r) => r.exit_status === "running");
  const n = v["HDF1:NumCapture_RBV"], got = v["HDF1:NumCaptured_RBV"];
  const capturing = v["HDF1:Capture_RBV"] === "Capturing";
  setText("run-now", active ? `scan ${active.scan_id} ${active.plan_name} running` +
    (capturing ? `: ${got} of ${n} frames` : "") : (capturing ? `capturing ${got} of ${n} frames` : "no run in progress"));
  $("run-progress").value = capturing && n > 0 ? got / n : 0;
  const rows = runs.map((r) => `<tr><td>${fmt(r.scan_id)}</td><td>${escapeHtml(r.plan_name)}</td>` +
    `<td>${r.time ? new Date(r.time * 1000).toLocaleString() : "–"}</td><td>${escapeHtml(r.exit_status)}${r.reason ? ": " + escapeHtml(r.reason) : ""}</td>` +
    `<td>${r.duration === null ? "–" : r.duration.toFixed(1)}</td></tr>`).join("");
  const tbody = $("runs").querySelector("tbody");
  if (tbody.dataset.rows !== rows) { tbody.innerHTML = rows; tbody.dataset.rows = rows; }
  setText("runs-error", state.runs.error);
  updateQueue();
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

function updateQueue() {
  const q = state.queue;
  $("queue-box").hidden = !q || !q.configured;
  if (!q || !q.configured) return;
  const st = q.status || {};
  setText("queue-status", `manager ${fmt(st.manager_state)}, ${fmt(st.items_in_queue)} queued, ` +
    `${fmt(st.items_in_history)} done` + (st.worker_environment_exists ? "" : ", environment closed") +
    (st.queue_stop_pending ? ", stop pending" : ""));
  const row = (mark, i) => `<tr><td>${mark}</td><td>${escapeHtml(i.name)}</td><td>${escapeHtml(i.params)}</td>` +
    `<td>${escapeHtml(i.user)}</td></tr>`;
  const rows = (q.running ? [row("running", q.running)] : []).concat(
    (q.queue || []).map((i) => row("queued", i)),
    (q.history || []).map((i) => row(escapeHtml(i.exit_status || "done"), i))).join("");
  const tbody = $("queue-items").querySelector("tbody");
  if (tbody.dataset.rows !== rows) { tbody.innerHTML = rows; tbody.dataset.rows = rows; }
  setText("queue-error", q.error || "");
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-queue]");
  if (!b) return;
  const r = await post(`/api/queue/${b.dataset.queue}`);
  if (r) message(`queue ${b.dataset.queue}: ${r.reply && r.reply.msg ? r.reply.msg : "accepted"}`);
});

// ---- the state stream --------------------------------------------------------------------
// Text panels and images follow every update; each plot is redrawn only when what it
// shows changed, and at most a few times a second: a browser on the acquisition host
// must not take the CPU the camera and the writer need.
const drawn = {};
function maybeDraw(name, key, minIntervalMs, draw) {
  const last = drawn[name] || { key: null, at: 0 };
  const now = performance.now();
  if (key === last.key || now - last.at < minIntervalMs) return;
  drawn[name] = { key, at: now };
  return draw();
}

function phaseKey() {
  const ph = state.phase;
  return `${ph.t.length ? ph.t[ph.t.length - 1] : 0}|${ph.triggers.length}|${val("gating:TargetPhase_RBV")}`;
}

let drawing = false;
async function onState(text) {
  state = JSON.parse(text);
  if (drawing) return;  // a redraw in progress: this update is skipped, the next one drawn
  drawing = true;
  try {
    updatePanels();
    maybeDraw("phase", phaseKey(), 250, drawPhase);
    const params = Object.keys(state.values).filter((k) => k.startsWith("scan:") && !k.endsWith("_RBV"))
      .sort().map((k) => state.values[k]).join(";");
    await maybeDraw("wave", params, 250, drawWaveforms);
    const running = val("scan:Running_RBV") === 1;
    maybeDraw("position", running ? Math.floor(state.time * 2) : "idle", 500, drawPosition);
    maybeDraw("calibration", JSON.stringify(state.calibration) + params, 500, drawCalibration);
    window.drawRoiBox();
  } finally {
    drawing = false;
  }
}

function connect(delay = 500) {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onmessage = (ev) => { onState(ev.data).catch((err) => message(String(err), "error")); };
  ws.onopen = () => { delay = 500; };
  ws.onclose = () => {
    const link = $("link");
    link.textContent = "console server lost; reconnecting";
    link.className = "bad";
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

// images: at most 10 a second each, only while the newest frame is newer than the one
// drawn and the previous one has been drawn (a slow browser skips frames, never queues)
setInterval(() => {
  if (!state) return;
  for (const source of ["camera", "brightfield"]) {
    const info = state.images[source];
    // a frame newer than the one drawn is known (state), or likely (the last ask got one)
    const due = info && (info.seq > shownSeq[source] || gotNew[source]);
    if (due && performance.now() - lastFetch[source] >= IMAGE_MIN_INTERVAL_MS) {
      fetchImage(source);
    }
  }
}, IMAGE_MIN_INTERVAL_MS);

buildMotorRows();
setLoggedIn(false);
if (apiKey) login(apiKey);
connect();
