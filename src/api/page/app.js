// The page's logic: plain JavaScript, no libraries. Every number on the page comes from the
// public /v1 API; the requests it makes are the curl commands it shows.
"use strict";

const SAMPLES = [
  ["ankle-boot.png", "Ankle boot"],
  ["pullover.png", "Pullover"],
  ["trouser.png", "Trouser"],
  ["shirt.png", "Shirt"],
  ["bag.png", "Bag"],
  ["sneaker.png", "Sneaker"],
];
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
  "#17becf", "#bcbd22", "#7f7f7f"];
const SVG_NS = "http://www.w3.org/2000/svg";
const NPZ = "application/x-npz";

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  model: null,
  image: null, // {blob, name}
  mask: null, // {blob, name}
  runs: [], // per run: {pres, answer, means}
  layer: null, // {name, shape, data, time_ms}
  step: 0,
  playing: null,
  seq: 0,
  key: sessionStorage.getItem("convrnn-api-key") || "",
  lastActivationsUrl: null,
  lastAnswer: null,
};

// ---------- API ----------

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let keyWaiters = [];

function askForKey() {
  $("keyform").hidden = false;
  $("apikey").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  state.key = $("apikey").value.trim();
  sessionStorage.setItem("convrnn-api-key", state.key);
  $("keyform").hidden = true;
  const waiters = keyWaiters;
  keyWaiters = [];
  waiters.forEach((w) => w());
});

// fetch with the API key (asked for on a 401, then retried) and the API's errors as thrown
// ApiErrors carrying its own words.
async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    if (state.key) headers.set("Authorization", "Bearer " + state.key);
    const started = performance.now();
    const r = await fetch(path, { ...init, headers });
    if (r.status === 401) {
      await askForKey();
      continue;
    }
    if (!r.ok) {
      const text = await r.text();
      let message = text || r.statusText, code = "http_" + r.status;
      try {
        const body = JSON.parse(text);
        if (body && typeof body.error === "string") {
          message = body.error;
          code = body.code || code;
        }
      } catch (_) { /* not JSON: keep the text */ }
      throw new ApiError(r.status, message, code);
    }
    r.elapsedMs = performance.now() - started;
    return r;
  }
}

function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = err instanceof ApiError
    ? `The server answered ${err.status}: ${err.message} (${err.code})`
    : `Error: ${err.message || err}`;
}

function form(image, mask) {
  const body = new FormData();
  body.append("image", image.blob, image.name);
  if (mask) body.append("mask", mask.blob, mask.name);
  return body;
}

function presentationQuery(p) {
  const q = new URLSearchParams();
  if (p.kind !== "default") {
    q.set("presentation", p.kind);
    q.set("on_steps", p.on);
  }
  if (p.kind === "mask") q.set("mask_steps", p.maskSteps);
  return q;
}

function classifyPath(p) {
  const q = new URLSearchParams({ per_timestep: "true", top_k: "5" });
  presentationQuery(p).forEach((v, k) => q.set(k, v));
  return `/v1/models/${encodeURIComponent(state.model.name)}/classify?${q}`;
}

function activationsPath(p, layers, pool) {
  const q = new URLSearchParams({ layers, pool, steps: "all" });
  presentationQuery(p).forEach((v, k) => q.set(k, v));
  return `/v1/models/${encodeURIComponent(state.model.name)}/activations?${q}`;
}

// ---------- .npz (stored ZIP of .npy) ----------

function readNpz(buffer) {
  const view = new DataView(buffer);
  const arrays = {};
  let at = 0;
  while (at + 30 <= buffer.byteLength && view.getUint32(at, true) === 0x04034b50) {
    const size = view.getUint32(at + 18, true);
    const nameLen = view.getUint16(at + 26, true);
    const extraLen = view.getUint16(at + 28, true);
    const name = new TextDecoder().decode(new Uint8Array(buffer, at + 30, nameLen));
    const start = at + 30 + nameLen + extraLen;
    arrays[name.replace(/\.npy$/, "")] = readNpy(buffer.slice(start, start + size));
    at = start + size;
  }
  return arrays;
}

function readNpy(buffer) {
  const view = new DataView(buffer);
  const headerLen = view.getUint16(8, true);
  const header = new TextDecoder().decode(new Uint8Array(buffer, 10, headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)[1].match(/\d+/g) || []).map(Number);
  const data = buffer.slice(10 + headerLen);
  const Type = { "<f4": Float32Array, "<f8": Float64Array, "<i8": BigInt64Array }[descr];
  return { shape, data: new Type(data) };
}

// ---------- models ----------

async function loadModels() {
  const r = await api("/v1/models");
  state.models = (await r.json()).models;
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  if (!state.models.length) throw new Error("this server serves no model");
  chooseModel(state.models[0].name);
}

function chooseModel(name) {
  const m = state.models.find((x) => x.name === name);
  state.model = m;
  state.runs = [];
  state.layer = null;
  const trained = m.trained_on || {};
  const acc = typeof trained.test_top1 === "number"
    ? `, test top-1 ${(trained.test_top1 * 100).toFixed(2)}%` : "";
  const data = trained.dataset ? `trained on ${trained.dataset}${acc}` : "not trained on a data set";
  $("model-info").textContent = `${m.architecture}: ${m.description}. ${data}. Input `
    + `${m.input.width}×${m.input.height}, ${m.time.steps} steps of ${m.time.step_ms} ms `
    + `(image on for ${m.time.image_on_steps} by default), readout: ${m.readout.rule}, `
    + `on ${m.devices.join(", ")}.`;
  $("layer").replaceChildren(...m.layers.map((l) => new Option(layerTitle(l), l.name)));
  $("time").max = m.time.steps - 1;
  setStep(Math.min(state.step, m.time.steps - 1));
  for (const fs of document.querySelectorAll(".pres")) buildPresentation(fs);
  drawArchitecture();
  fillChannels();
  $("runs").replaceChildren();
  drawHeat();
  drawMean();
  if (state.image) run();
}

function layerTitle(l) {
  return `${l.name}${l.region ? " (" + l.region + ")" : ""}: ${l.cell || "layer"}, `
    + `${l.channels}×${l.height}×${l.width}`;
}

function currentLayerSpec() {
  return state.model.layers.find((l) => l.name === $("layer").value);
}

// ---------- presentation controls ----------

function buildPresentation(fs) {
  const which = fs.dataset.run;
  const T = state.model.time.steps;
  const old = readPresentation(fs);
  const kind = old ? old.kind : which === "a" ? "default" : "flash";
  const on = Math.min(old ? old.on : which === "a" ? state.model.time.image_on_steps : 3, T);
  const maskSteps = Math.min(old ? old.maskSteps : 2, T - on);
  fs.replaceChildren(fs.querySelector("legend"));
  const id = (s) => `${s}-${which}`;
  const kindLabel = el("label", { for: id("kind") }, "Show the image");
  const kindSelect = el("select", { id: id("kind") });
  for (const [value, text] of [["default", "default (the model's own)"], ["flash", "for k steps, then blank"],
    ["mask", "for k steps, then the mask"]]) kindSelect.append(new Option(text, value));
  kindSelect.value = kind;
  const onLabel = el("label", { for: id("on") }, "k: steps on");
  const onInput = el("input", { id: id("on"), type: "number", min: 1, max: T, value: on, required: "" });
  const maskLabel = el("label", { for: id("mask-steps") }, "mask steps");
  const maskInput = el("input", { id: id("mask-steps"), type: "number", min: 0, max: T, value: maskSteps, required: "" });
  const strip = el("div", { class: "strip", id: id("strip"), "aria-label": `Run ${which.toUpperCase()} schedule` });
  fs.append(kindLabel, kindSelect, onLabel, onInput, maskLabel, maskInput, strip);
  const sync = () => {
    onInput.disabled = kindSelect.value === "default";
    maskInput.disabled = kindSelect.value !== "mask";
    drawStrip(fs);
  };
  sync();
  for (const c of [kindSelect, onInput, maskInput]) {
    c.addEventListener("change", () => { sync(); if (state.image) run(); });
  }
}

function readPresentation(fs) {
  const which = fs.dataset.run;
  const kind = document.getElementById(`kind-${which}`);
  if (!kind) return null;
  return {
    run: which,
    kind: kind.value,
    on: Number(document.getElementById(`on-${which}`).value),
    maskSteps: Number(document.getElementById(`mask-steps-${which}`).value),
  };
}

// What the model is shown at each step: "image", "mask" or "blank".
function schedule(p) {
  const T = state.model.time.steps;
  const on = p.kind === "default" ? state.model.time.image_on_steps : p.on;
  const mask = p.kind === "mask" ? p.maskSteps : 0;
  return Array.from({ length: T }, (_, t) => (t < on ? "image" : t < on + mask ? "mask" : "blank"));
}

function drawStrip(fs) {
  const p = readPresentation(fs);
  const strip = document.getElementById(`strip-${p.run}`);
  const cells = schedule(p).map((what, t) => el("span", {
    class: `cell ${what}`,
    title: `step ${t} (${t * state.model.time.step_ms} ms): ${what}`,
  }));
  strip.replaceChildren(...cells);
}

function activePresentations() {
  const out = [readPresentation($("pres-a"))];
  if ($("compare").checked) out.push(readPresentation($("pres-b")));
  return out;
}

// ---------- images ----------

async function setImage(blob, name) {
  if (!blob.type.startsWith("image/") && blob.type !== "") {
    showError(new Error(`${name} is not an image (${blob.type})`));
    return;
  }
  state.image = { blob, name: name || "image.png" };
  await run();
}

async function showSeen(image, target) {
  const r = await api(`/v1/models/${encodeURIComponent(state.model.name)}/preprocess`,
    { method: "POST", body: form(image) });
  const url = URL.createObjectURL(await r.blob());
  const img = $(target);
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = url;
  img.hidden = false;
}

async function sampleBlob(file) {
  const r = await api(`/page/samples/${file}`);
  return r.blob();
}

function setUpImages() {
  const samples = $("samples");
  for (const [file, label] of SAMPLES) {
    const button = el("button", { type: "button", class: "sample", "aria-label": `Sample: ${label}` });
    button.append(el("img", { src: `/page/samples/${file}`, alt: "", width: 40, height: 40 }), label);
    button.addEventListener("click", async () => setImage(await sampleBlob(file), file));
    samples.append(button);
  }
  $("file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) setImage(f, f.name);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) setImage(f, f.name);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) setImage(item.getAsFile(), "pasted.png");
  });
  const mask = $("mask");
  mask.append(...SAMPLES.map(([file, label]) => new Option(`${label} (sample)`, file)));
  mask.value = "trouser.png";
  mask.addEventListener("change", async () => {
    state.mask = { blob: await sampleBlob(mask.value), name: mask.value };
    if (state.image) run();
  });
  $("mask-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (!f) return;
    state.mask = { blob: f, name: f.name };
    if (state.image) run();
  });
}

// ---------- running ----------

async function run() {
  if (!state.image || !state.model) return;
  // A field being edited (empty, or out of its range) is not sent; the browser says why.
  const invalid = [...document.querySelectorAll(".pres:not([hidden]) input")].find((i) => !i.checkValidity());
  if (invalid) {
    invalid.reportValidity();
    $("status").textContent = `${invalid.labels[0].textContent}: ${invalid.validationMessage}`;
    return;
  }
  const seq = ++state.seq;
  document.body.dataset.busy = "1";
  showError(null);
  $("status").textContent = "Running…";
  try {
    const pres = activePresentations();
    if (pres.some((p) => p.kind === "mask") && !state.mask) {
      state.mask = { blob: await sampleBlob($("mask").value), name: $("mask").value };
    }
    const maskFor = (p) => (p.kind === "mask" ? state.mask : null);
    const classified = await Promise.all(pres.map(async (p) => {
      const r = await api(classifyPath(p), { method: "POST", body: form(state.image, maskFor(p)) });
      const answer = await r.json();
      return { pres: p, answer, roundTripMs: r.elapsedMs, serverMs: Number(r.headers.get("x-total-time-ms")) };
    }));
    // The rest once the classification is in, so that it has the server to itself.
    const seen = showSeen(state.image, "seen");
    const maskSeen = pres.some((p) => p.kind === "mask") ? showSeen(state.mask, "mask-seen") : null;
    $("mask-seen").hidden = !maskSeen;
    const means = Promise.all(pres.map((p) => api(activationsPath(p, "all", "mean"),
      { method: "POST", body: form(state.image, maskFor(p)) }).then((x) => x.json())));
    // One await for all, so that every failure is handled (the first is shown).
    const [allMeans] = await Promise.all([means, seen, maskSeen]);
    const answers = classified.map((c, i) => ({ ...c, means: allMeans[i] }));
    if (seq !== state.seq) return;
    const drawStart = performance.now();
    state.runs = answers;
    state.lastAnswer = answers[0].answer;
    drawRuns();
    const drawMs = performance.now() - drawStart;
    await loadLayer(seq);
    if (seq !== state.seq) return;
    updateCurl();
    const a = answers[0];
    $("status").textContent = `Classified in ${a.roundTripMs.toFixed(1)} ms round trip `
      + `(${a.serverMs.toFixed(1)} ms in the server), drawn in ${drawMs.toFixed(1)} ms.`;
    document.body.dataset.runs = String(Number(document.body.dataset.runs || 0) + 1);
  } catch (err) {
    if (seq === state.seq) {
      showError(err);
      $("status").textContent = "";
    }
  } finally {
    if (seq === state.seq) document.body.dataset.busy = "0";
  }
}

async function loadLayer(seq) {
  const spec = currentLayerSpec();
  if (!state.image || !spec || !state.runs.length) return;
  const p = state.runs[0].pres;
  const path = activationsPath(p, spec.name, "none");
  const r = await api(path, {
    method: "POST",
    headers: { Accept: NPZ },
    body: form(state.image, p.kind === "mask" ? state.mask : null),
  });
  const buffer = await r.arrayBuffer();
  if (seq !== state.seq) return;
  const arrays = readNpz(buffer);
  state.layer = { name: spec.name, ...arrays[spec.name], npz: buffer };
  state.lastActivationsUrl = path;
  $("dl-json").disabled = false;
  $("dl-npz").disabled = false;
  drawHeat();
  drawMean();
  drawArchitecture();
}

// ---------- plots ----------

const SVG_TAGS = ["svg", "g", "path", "polyline", "line", "rect", "text", "circle", "title"];

// An element with attributes and text; SVG tags in the SVG namespace.
function el(tag, attrs = {}, text) {
  const node = SVG_TAGS.includes(tag)
    ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgText(x, y, text, attrs = {}) {
  return el("text", { x, y, ...attrs }, text);
}

// Axes of a time plot drawn at the SVG's own width (text stays readable at any width): x is
// time in ms (start of each step), y from lo to hi.
function timeAxes(svg, height, lo, hi, yLabel) {
  const width = Math.max(260, Math.round(svg.getBoundingClientRect().width) || 520);
  const m = { l: 40, r: 84, t: 16, b: 30 };
  const T = state.model.time.steps, dt = state.model.time.step_ms;
  const x = (t) => m.l + (T === 1 ? 0 : (t / (T - 1)) * (width - m.l - m.r));
  const y = (v) => m.t + (1 - (v - lo) / (hi - lo || 1)) * (height - m.t - m.b);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  svg.append(el("line", { x1: m.l, y1: y(lo), x2: width - m.r, y2: y(lo), class: "axis" }));
  svg.append(el("line", { x1: m.l, y1: m.t, x2: m.l, y2: y(lo), class: "axis" }));
  const every = Math.ceil(T / 8);
  for (let t = 0; t < T; t += every) {
    svg.append(svgText(x(t), height - 14, String(t * dt), { class: "tick", "text-anchor": "middle" }));
  }
  svg.append(svgText((m.l + width - m.r) / 2, height - 2, "time (ms)", { class: "tick", "text-anchor": "middle" }));
  for (const v of [lo, hi]) {
    svg.append(svgText(m.l - 4, y(v) + 4, fmt(v), { class: "tick", "text-anchor": "end" }));
  }
  svg.append(svgText(m.l - 4, m.t - 6, yLabel, { class: "tick", "text-anchor": "end" }));
  svg.stepX = x;
  return { x, y, m };
}

// Label heights near `ys` (same order) at least 12 px apart, within [lo, hi].
function spreadLabels(ys, lo, hi) {
  const order = ys.map((v, i) => i).sort((a, b) => ys[a] - ys[b]);
  const out = ys.slice();
  let prev = -Infinity;
  for (const i of order) { out[i] = Math.max(ys[i], prev + 12, lo); prev = out[i]; }
  let next = Infinity;
  for (const i of order.reverse()) { out[i] = Math.min(out[i], next - 12, hi); next = out[i]; }
  return out;
}

function fmt(v) {
  return Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(2);
}

function steps(n) {
  return n === 1 ? "1 step" : `${n} steps`;
}

function drawRuns() {
  const box = $("runs");
  box.replaceChildren();
  const plots = [];
  for (const r of state.runs) {
    const res = r.answer.results[0];
    const panel = el("div", { class: "run", "data-run": r.pres.run });
    const p = r.pres;
    const title = p.kind === "default" ? "default presentation"
      : p.kind === "flash" ? `image on for ${steps(p.on)}` : `image ${steps(p.on)}, mask ${steps(p.maskSteps)}`;
    panel.append(el("h3", {}, `Run ${p.run.toUpperCase()}: ${title}`));
    const list = el("ol", { class: "top5", "aria-label": `Top 5 at the readout, run ${p.run.toUpperCase()}` });
    res.top_k.forEach((c, i) => {
      const li = el("li", { class: i === 0 ? "top1" : "" });
      const bar = el("span", { class: "bar" });
      bar.style.width = `${(c.probability * 100).toFixed(1)}%`;
      li.append(el("span", { class: "label" }, c.label),
        el("span", { class: "prob" }, `${(c.probability * 100).toFixed(1)}%`), bar);
      list.append(li);
    });
    const svg = el("svg", { class: "prob-plot", role: "img",
      "aria-label": `Probability of every class against time, run ${p.run.toUpperCase()}` });
    const body = el("div", { class: "run-body" });
    body.append(list, svg);
    panel.append(body);
    box.append(panel);
    plots.push([svg, r]);
  }
  // Drawn once every panel is in place, at the width each plot finally has.
  for (const [svg, r] of plots) drawProbabilities(svg, r);
  syncStepMarkers();
}

function drawProbabilities(svg, r) {
  const res = r.answer.results[0];
  const probs = res.per_timestep;
  const labels = state.model.labels;
  const { x, y, m } = timeAxes(svg, 240, 0, 1, "p");
  // Presentation: shaded while the image is on, hatched while the mask is.
  schedule(r.pres).forEach((what, t) => {
    if (what === "blank") return;
    const w = x(1) - x(0) || 10;
    svg.append(el("rect", { x: x(t) - w / 2, y: m.t, width: w, height: y(0) - m.t, class: `on ${what}` }));
  });
  const top = res.top_k.slice(0, 3).map((c) => c.index);
  const labelY = spreadLabels(top.map((k) => y(probs[probs.length - 1][k])), m.t + 4, y(0));
  const order = labels.map((_, k) => k).sort((a, b) => top.includes(a) - top.includes(b));
  for (const k of order) {
    const rank = top.indexOf(k);
    const pts = probs.map((row, t) => `${x(t).toFixed(1)},${y(row[k]).toFixed(1)}`).join(" ");
    const line = el("polyline", { points: pts, class: rank >= 0 ? "cls top" : "cls", "data-class": labels[k] });
    if (rank >= 0) line.style.stroke = COLORS[rank];
    line.append(el("title", {}, labels[k]));
    svg.append(line);
    if (rank >= 0) {
      probs.forEach((row, t) => {
        const dot = el("circle", { cx: x(t), cy: y(row[k]), r: 2.5, class: "pt" });
        dot.style.fill = COLORS[rank];
        svg.append(dot);
      });
      const label = svgText(x(probs.length - 1) + 6, labelY[rank] + 4, labels[k], { class: "cls-label" });
      label.style.fill = COLORS[rank];
      svg.append(label);
    }
  }
  const rx = x(res.readout_step);
  svg.append(el("line", { x1: rx, y1: m.t, x2: rx, y2: y(0), class: "readout" }));
  svg.append(svgText(rx, m.t - 4, "readout", { class: "tick", "text-anchor": "middle" }));
  svg.append(el("line", { x1: 0, y1: m.t, x2: 0, y2: y(0), class: "now" }));
  svg.dataset.steps = String(probs.length);
}

// The current step's vertical marker on every time plot.
function syncStepMarkers() {
  for (const svg of document.querySelectorAll("svg.prob-plot, #mean-plot")) {
    const now = svg.querySelector("line.now");
    if (!now || !svg.stepX) continue;
    now.setAttribute("x1", svg.stepX(state.step));
    now.setAttribute("x2", svg.stepX(state.step));
  }
}

function fillChannels() {
  const spec = currentLayerSpec();
  const opts = [new Option("mean of all channels", "mean")];
  for (let c = 0; spec && c < spec.channels; c++) opts.push(new Option(`channel ${c}`, String(c)));
  $("channel").replaceChildren(...opts);
}

// A [H, W] map of the layer at step t: one channel, or the mean over channels.
function layerMap(t) {
  const L = state.layer;
  const [, , C, H, W] = L.shape;
  const plane = H * W, base = t * C * plane;
  const ch = $("channel").value;
  const out = new Float32Array(plane);
  if (ch === "mean") {
    for (let c = 0; c < C; c++) for (let i = 0; i < plane; i++) out[i] += L.data[base + c * plane + i] / C;
  } else {
    out.set(L.data.subarray(base + Number(ch) * plane, base + (Number(ch) + 1) * plane));
  }
  return out;
}

// A perceptually ordered dark-blue to yellow ramp.
const RAMP = [[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104],
  [244, 136, 73], [254, 188, 43], [240, 249, 33]];

function color(v) {
  const f = Math.max(0, Math.min(1, v)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(f)), w = f - i;
  return RAMP[i].map((a, j) => Math.round(a + (RAMP[i + 1][j] - a) * w));
}

function drawHeat() {
  const canvas = $("heat"), note = $("heat-note");
  const spec = state.model && currentLayerSpec();
  const L = state.layer;
  if (!L || !spec || L.name !== spec.name) {
    canvas.width = canvas.height = 1;
    canvas.getContext("2d").clearRect(0, 0, 1, 1);
    $("heat-caption").textContent = state.image ? "" : "Choose an image to see the layer.";
    note.hidden = true;
    return;
  }
  const [, T, , H, W] = L.shape;
  // One colour scale for all steps, so that the change over time shows.
  let lo = Infinity, hi = -Infinity;
  const maps = [];
  for (let t = 0; t < T; t++) {
    const m = layerMap(t);
    maps.push(m);
    for (const v of m) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  const m = maps[state.step];
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(W, H);
  for (let i = 0; i < W * H; i++) {
    const [r, g, b] = color((m[i] - lo) / (hi - lo || 1));
    img.data.set([r, g, b, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
  const driven = state.step >= spec.first_driven_step;
  canvas.classList.toggle("undriven", !driven);
  note.hidden = driven;
  note.textContent = driven ? "" : `Not yet driven: the image reaches ${spec.name} at step `
    + `${spec.first_driven_step} (${spec.first_driven_step * state.model.time.step_ms} ms).`;
  const ch = $("channel").value === "mean" ? "mean of channels" : `channel ${$("channel").value}`;
  $("heat-caption").textContent = `Run A: ${spec.name}${spec.region ? " (" + spec.region + ")" : ""}, `
    + `${ch}, ${W}×${H}; colour from ${fmt(lo)} (dark) to ${fmt(hi)} (yellow).`;
}

function drawMean() {
  const svg = $("mean-plot");
  const spec = state.model && currentLayerSpec();
  if (!spec || !state.runs.length) {
    svg.replaceChildren();
    return;
  }
  const series = state.runs.map((r) => {
    const a = r.means.layers[spec.name].data[0];
    return a.map((row) => row.reduce((s, v) => s + v, 0) / row.length);
  });
  const all = series.flat();
  const lo = Math.min(...all), hi = Math.max(...all);
  const { x, y, m } = timeAxes(svg, 180, lo, hi, "mean");
  if (spec.first_driven_step > 0) {
    const x1 = x(spec.first_driven_step) - (x(1) - x(0)) / 2;
    svg.append(el("rect", { x: m.l, y: m.t, width: Math.max(0, x1 - m.l), height: y(lo) - m.t, class: "undriven" }));
    svg.append(svgText(m.l + 3, y(lo) - 4, "not yet driven", { class: "tick" }));
  }
  const labelY = spreadLabels(series.map((s) => y(s[s.length - 1])), m.t + 4, y(lo));
  series.forEach((s, i) => {
    const pts = s.map((v, t) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = el("polyline", { points: pts, class: "cls top" });
    line.style.stroke = COLORS[i];
    svg.append(line);
    const label = svgText(x(s.length - 1) + 6, labelY[i] + 4, `run ${state.runs[i].pres.run.toUpperCase()}`, { class: "cls-label" });
    label.style.fill = COLORS[i];
    svg.append(label);
  });
  svg.append(el("line", { x1: 0, y1: m.t, x2: 0, y2: y(lo), class: "now" }));
  syncStepMarkers();
}

function drawArchitecture() {
  const svg = $("arch");
  const m = state.model;
  const nodes = [{ name: "image", sub: `${m.input.width}×${m.input.height}` },
    ...m.layers.map((l) => ({ layer: l, name: l.name, sub: l.region || `${l.channels}×${l.height}×${l.width}` })),
    { name: "readout", sub: `${m.labels.length} classes` }];
  const w = 92, gap = 26, h = 54, top = 26;
  const width = nodes.length * w + (nodes.length - 1) * gap + 8;
  const feedback = m.layers.flatMap((l) => (l.feedback_from || []).map((from) => ({ from, to: l.name })));
  const depth = (f) => 14 + 10 * Math.abs(nodes.findIndex((n) => n.name === f.from) - nodes.findIndex((n) => n.name === f.to));
  const below = feedback.length ? Math.max(...feedback.map(depth)) + 6 : 0;
  svg.setAttribute("viewBox", `0 0 ${width} ${h + top + 22 + below}`);
  svg.replaceChildren();
  const selected = $("layer").value;
  nodes.forEach((n, i) => {
    const x = 4 + i * (w + gap);
    if (i > 0) {
      svg.append(el("line", { x1: x - gap, y1: top + h / 2, x2: x - 4, y2: top + h / 2, class: "edge" }));
      svg.append(el("path", { d: `M${x - 4},${top + h / 2} l-6,-4 v8 z`, class: "arrow" }));
    }
    const g = el("g", { class: "node" + (n.layer ? " layer" : "") + (n.name === selected ? " selected" : "") });
    if (n.layer) {
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      g.setAttribute("aria-label", `Show layer ${layerTitle(n.layer)}`);
      const pick = () => { $("layer").value = n.name; onLayerChange(); };
      g.addEventListener("click", pick);
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
      if (n.layer.cell && n.layer.cell !== "feedforward") {
        g.append(el("path", { d: `M${x + w / 2 - 12},${top} C${x + w / 2 - 20},${top - 24} ${x + w / 2 + 20},${top - 24} ${x + w / 2 + 12},${top}`, class: "loop" }));
        g.append(svgText(x + w / 2 + 22, top - 10, n.layer.cell, { class: "tick" }));
      }
    }
    g.append(el("rect", { x, y: top, width: w, height: h, rx: 6 }));
    g.append(svgText(x + w / 2, top + 22, n.name, { "text-anchor": "middle", class: "node-name" }));
    g.append(svgText(x + w / 2, top + 40, n.sub, { "text-anchor": "middle", class: "tick" }));
    if (n.layer) {
      g.append(svgText(x + w / 2, top + h + 16, `driven from ${n.layer.first_driven_step * m.time.step_ms} ms`, { "text-anchor": "middle", class: "tick" }));
    }
    svg.append(g);
  });
  // Long-range feedback: a dashed arc under the nodes from the later layer back to the earlier one.
  const centre = (name) => 4 + nodes.findIndex((n) => n.name === name) * (w + gap) + w / 2;
  const y0 = top + h + 22;
  feedback.forEach((f) => {
    const xs = centre(f.from) - 8, xt = centre(f.to) + 8, y1 = y0 + depth(f);
    const g = el("g", { class: "feedback", "data-from": f.from, "data-to": f.to });
    g.append(el("title", {}, `feedback from ${f.from} to ${f.to} (one step later)`));
    g.append(el("path", { d: `M${xs},${y0} C${xs},${y1} ${xt},${y1} ${xt},${y0 + 6}`, class: "feedback-edge" }));
    g.append(el("path", { d: `M${xt},${y0} l-4,7 h8 z`, class: "feedback-arrow" }));
    svg.append(g);
  });
}

// ---------- time ----------

function setStep(t) {
  state.step = t;
  $("time").value = t;
  const ms = state.model ? t * state.model.time.step_ms : 0;
  $("time-out").value = `step ${t}, ${ms} ms`;
  $("time-out").textContent = `step ${t}, ${ms} ms`;
  drawHeat();
  syncStepMarkers();
}

function togglePlay() {
  const button = $("play");
  if (state.playing) {
    clearInterval(state.playing);
    state.playing = null;
    button.textContent = "Play";
    button.setAttribute("aria-pressed", "false");
    return;
  }
  button.textContent = "Pause";
  button.setAttribute("aria-pressed", "true");
  const T = state.model.time.steps;
  if (state.step >= T - 1) setStep(0);
  state.playing = setInterval(() => {
    if (state.step >= T - 1) { togglePlay(); return; }
    setStep(state.step + 1);
  }, 400);
}

async function onLayerChange() {
  fillChannels();
  drawArchitecture();
  drawMean();
  const seq = state.seq;
  try {
    document.body.dataset.busy = "1";
    await loadLayer(seq);
    updateCurl();
  } catch (err) {
    showError(err);
  } finally {
    if (seq === state.seq) document.body.dataset.busy = "0";
  }
}

// ---------- downloads ----------

function download(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function shellQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

function updateCurl() {
  if (!state.runs.length) return;
  const origin = location.origin;
  const auth = state.key ? ` -H "Authorization: Bearer $CONVRNN_API_KEY"` : "";
  const lines = [];
  for (const r of state.runs) {
    const p = r.pres;
    const files = ` -F image=@${shellQuote(state.image.name)}`
      + (p.kind === "mask" ? ` -F mask=@${shellQuote(state.mask.name)}` : "");
    lines.push(`# run ${p.run.toUpperCase()}: the answer (top 5 and every step's probabilities)`);
    lines.push(`curl -s${auth}${files} ${shellQuote(origin + classifyPath(p))}`);
  }
  if (state.lastActivationsUrl) {
    const p = state.runs[0].pres;
    const files = ` -F image=@${shellQuote(state.image.name)}`
      + (p.kind === "mask" ? ` -F mask=@${shellQuote(state.mask.name)}` : "");
    lines.push(`# run A: layer ${state.layer.name} at every step, as NumPy arrays`);
    lines.push(`curl -s${auth} -H 'Accept: ${NPZ}' -o activations.npz${files} ${shellQuote(origin + state.lastActivationsUrl)}`);
  }
  $("curl").textContent = lines.join("\n");
}

// ---------- start ----------

function init() {
  setUpImages();
  $("model").addEventListener("change", (e) => chooseModel(e.target.value));
  $("layer").addEventListener("change", onLayerChange);
  $("channel").addEventListener("change", drawHeat);
  $("time").addEventListener("input", (e) => setStep(Number(e.target.value)));
  $("play").addEventListener("click", togglePlay);
  $("run").addEventListener("click", run);
  $("compare").addEventListener("change", () => {
    $("pres-b").hidden = !$("compare").checked;
    if (state.image) run();
  });
  $("dl-json").addEventListener("click", () => download(
    new Blob([JSON.stringify(state.lastAnswer, null, 1)], { type: "application/json" }), "classify.json"));
  $("dl-npz").addEventListener("click", () => download(
    new Blob([state.layer.npz], { type: NPZ }), "activations.npz"));
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (state.runs.length) { drawRuns(); drawMean(); } }, 150);
  });
  document.body.dataset.runs = "0";
  document.body.dataset.busy = "0";
  loadModels().catch(showError);
}

init();
