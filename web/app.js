// National Parks Classifier in the browser: transformers.js + onnxruntime-web (wasm), nothing uploaded.
//
// The photo is decoded, preprocessed and classified in this tab; no request carries it anywhere.
// Model source: ?model=<path or Hub id>
//   - a path (relative to this page, or absolute on this server) to a checkpoint folder with config.json,
//     preprocessor_config.json and onnx/model_quantized.onnx: loaded from this server only;
//   - else, when it looks like a Hub id ("owner/name"), it is loaded from the Hugging Face Hub
//     (needs the network; this path is not exercised by the offline tests);
//   - default: the <meta name="parks-model"> folder beside the page.
// ?preprocess=transformers switches to transformers.js's own image processor (a diagnostic only: its
// browser resize and crop differ from the Python app's; see preprocess.js).
// Everything about the answer is read from the checkpoint: labels, calibration_temperature,
// abstain_threshold, out_of_scope_label, title, and the preprocessing.

import { env, AutoModelForImageClassification, AutoImageProcessor, RawImage, Tensor } from "@huggingface/transformers";
import { decodeRGB, preprocessRGB, supports, RESAMPLE_NAMES } from "./preprocess.js";

const ORT_DIST = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
const DTYPE = "q8"; // -> onnx/model_quantized.onnx
const UNSURE_BELOW = 0.5; // as the Python app (parkclf.ui.UNSURE_BELOW): an answer below this calls itself a guess

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

// ---------- where the model comes from ----------

async function isServedFolder(url) {
  try {
    const r = await fetch(new URL("config.json", url), { method: "GET", cache: "no-cache" });
    return r.ok;
  } catch {
    return false;
  }
}

async function resolveModel(spec, allowHub) {
  const folder = new URL(spec.replace(/\/*$/, "/"), location.href);
  if (folder.origin === location.origin && (await isServedFolder(folder))) {
    const parts = folder.pathname.replace(/\/$/, "").split("/");
    const name = decodeURIComponent(parts.pop());
    // transformers.js joins localModelPath + model id; the id must be one path segment here
    return { kind: "local", id: name, base: new URL(parts.join("/") + "/", location.origin).href, url: folder.href };
  }
  if (allowHub && /^[\w.-]+\/[\w.-]+$/.test(spec) && !spec.includes("..")) {
    return { kind: "hub", id: spec };
  }
  throw new Error(`no checkpoint at ${folder.href} (its config.json was not found)` +
    (allowHub ? `, and "${spec}" is not a Hub id` : ""));
}

function configureEnv(source) {
  // wasm runtime from this server, never a CDN (transformers.js defaults to jsDelivr)
  env.backends.onnx.wasm.wasmPaths = {
    mjs: ORT_DIST + "ort-wasm-simd-threaded.asyncify.mjs",
    wasm: ORT_DIST + "ort-wasm-simd-threaded.asyncify.wasm",
  };
  env.backends.onnx.wasm.proxy = false;
  if (source.kind === "local") {
    env.allowRemoteModels = false; // nothing may go to the Hub
    env.allowLocalModels = true;
    env.localModelPath = source.base;
    env.useBrowserCache = false; // served from this machine anyway; and a cache would keep a stale model
  } else {
    // Hub: downloads over the network (and caches in the browser). Untested offline.
    env.allowLocalModels = false;
    env.allowRemoteModels = true;
    env.useBrowserCache = true;
  }
}

// ---------- the answer rule of the Python app (parkclf.calibration / parkclf.classifier) ----------

export function answer(logits, model) {
  const { labels, realIdx, realLabels, temperature, threshold } = model;
  const z = Array.from(logits, (v) => v / temperature);
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const sum = e.reduce((a, b) => a + b, 0);
  const probs = e.map((v) => v / sum); // softmax over all classes, out-of-scope included
  const confidences = {};
  realIdx.forEach((i) => { confidences[labels[i]] = probs[i]; }); // not renormalised
  let label = realLabels[0];
  for (const n of realLabels) if (confidences[n] > confidences[label]) label = n;
  const score = confidences[label];
  return { label, confidences, abstained: score < threshold, score };
}

// parkclf.ui.pretty: "_" and "-" as spaces, then Python's str.title()
export function pretty(label) {
  let out = "", prevCased = false;
  for (const ch of label.replace(/[_-]/g, " ")) {
    const cased = ch.toLowerCase() !== ch.toUpperCase();
    out += cased ? (prevCased ? ch.toLowerCase() : ch.toUpperCase()) : ch;
    prevCased = cased;
  }
  return out;
}

// Python's f"{p:.0%}" (round half to even on p * 100), "under 1%" below 0.5%
export function percent(p) {
  if (p < 0.005) return "under 1%";
  const x = p * 100, f = Math.floor(x), d = x - f;
  const n = d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
  return `${n}%`;
}

function listed(names) {
  return names.length > 1 ? names.slice(0, -1).join(", ") + " or " + names[names.length - 1] : names[0];
}

// parkclf.ui.verdict, as [bold part, rest]
export function verdict(pred, realLabels) {
  const p = pred.confidences[pred.label];
  if (pred.abstained) {
    return [`This doesn't look like ${listed(realLabels.map(pretty))}.`,
      ` The closest guess is ${pretty(pred.label)} (${percent(p)}), but it is unsure.`];
  }
  if (p < UNSURE_BELOW) return [pretty(pred.label), `, probably (${percent(p)}: a low-confidence guess)`];
  return [pretty(pred.label), ` (${percent(p)} confident)`];
}

// ---------- loading and classifying ----------

let state = null;

async function load() {
  const meta = document.querySelector('meta[name="parks-model"]');
  const asked = params.get("model");
  const spec = asked || (meta && meta.content) || "models/parks-vit-small";
  const source = await resolveModel(spec, !!asked); // only an explicit ?model= may name a Hub repo
  configureEnv(source);
  setStatus(`Loading the model (${source.kind === "local" ? source.url : "Hub: " + source.id})…`);
  const [model, processor] = await Promise.all([
    AutoModelForImageClassification.from_pretrained(source.id, { dtype: DTYPE, device: "wasm" }),
    AutoImageProcessor.from_pretrained(source.id),
  ]);
  const cfg = model.config;
  const n = Object.keys(cfg.id2label).length;
  const labels = Array.from({ length: n }, (_, i) => cfg.id2label[i] ?? cfg.id2label[String(i)]);
  const oos = cfg.out_of_scope_label ?? null;
  const realIdx = labels.map((_, i) => i).filter((i) => labels[i] !== oos);
  const pp = processor.config;
  const engine = params.get("preprocess") === "transformers" || !supports(pp) ? "transformers" : "pil";
  state = {
    source, model, processor, pp, engine, labels, realIdx, outOfScope: oos,
    realLabels: realIdx.map((i) => labels[i]),
    temperature: Number(cfg.calibration_temperature ?? 1.0),
    threshold: Number(cfg.abstain_threshold ?? 0.0),
    title: cfg.title || `${listed(realIdx.map((i) => pretty(labels[i])))} classifier`,
  };
  return state;
}

async function toBlob(input) {
  if (input instanceof Blob) return input;
  const r = await fetch(input); // same-origin URL (tests, examples); a user's photo arrives as a File
  if (!r.ok) throw new Error(`Could not read ${input}: ${r.status}`);
  return r.blob();
}

/** pixel_values for one photo: {data: Float32Array, dims: [1, 3, H, W]} */
async function pixelValues(input, engine = state.engine) {
  const blob = await toBlob(input);
  if (engine === "transformers") {
    const { pixel_values } = await state.processor(await RawImage.read(blob));
    return { data: pixel_values.data, dims: pixel_values.dims };
  }
  const { data, dims } = preprocessRGB(await decodeRGB(blob), state.pp);
  return { data, dims: [1, ...dims] };
}

async function logitsOf(input, engine) {
  const pv = await pixelValues(input, engine);
  const { logits } = await state.model({ pixel_values: new Tensor("float32", pv.data, pv.dims) });
  return Array.from(logits.data);
}

async function classify(input) {
  await ready;
  return answer(await logitsOf(input), state);
}

// ---------- the page ----------

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function show(pred) {
  const [bold, rest] = verdict(pred, state.realLabels);
  const v = $("verdict");
  v.replaceChildren();
  const b = document.createElement("strong");
  b.textContent = bold;
  v.append(b, document.createTextNode(rest));
  v.dataset.label = pred.label;
  v.dataset.abstained = String(pred.abstained);
  const rows = Object.entries(pred.confidences).map(([k, p]) => [pretty(k), p]);
  // as the Python app's Label widget: "None of these" holds the rest of the probability when it abstains
  if (state.outOfScope && pred.abstained) {
    rows.push(["None of these", Math.max(0, 1 - Object.values(pred.confidences).reduce((a, b) => a + b, 0))]);
  }
  rows.sort((a, b) => b[1] - a[1]);
  const list = $("confidences");
  list.replaceChildren();
  for (const [name, p] of rows) {
    const li = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const pc = document.createElement("span");
    pc.className = "pc";
    pc.textContent = percent(p);
    li.append(bar, label, pc);
    list.append(li);
  }
}

async function handleFile(file) {
  if (!file) return;
  if (!state) { setStatus("The model is still loading; try again in a moment."); return; }
  const preview = $("preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(file); // a blob: URL, local to this tab
  preview.src = preview.dataset.url;
  preview.hidden = false;
  setStatus(`Classifying ${file.name || "the photo"}…`);
  document.body.dataset.busy = "true";
  try {
    show(await classify(file));
    setStatus("Done. The photo was classified in this browser and not uploaded.");
  } catch (e) {
    console.error(e);
    $("verdict").textContent = "";
    $("confidences").replaceChildren();
    setStatus(`That file could not be read as an image (${e.message || e}).`, true);
  } finally {
    delete document.body.dataset.busy;
  }
}

function wire() {
  const input = $("file");
  input.addEventListener("change", () => handleFile(input.files[0]));
  const zone = $("drop");
  for (const ev of ["dragenter", "dragover"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => handleFile(e.dataTransfer.files[0]));
  // a file dropped anywhere else must not make the browser navigate to it
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// for tests and the console
window.classify = (input) => classify(input);
window.parksDebug = {
  pixelValues: async (input, engine) => {
    await ready;
    const pv = await pixelValues(input, engine);
    return { dims: pv.dims, data: Array.from(pv.data) };
  },
  logits: async (input, engine) => { await ready; return logitsOf(input, engine); },
  info: () => state && {
    source: state.source, engine: state.engine, labels: state.labels, outOfScope: state.outOfScope,
    temperature: state.temperature, threshold: state.threshold, resample: RESAMPLE_NAMES[state.pp.resample ?? 2],
    transformersVersion: env.version,
  },
};

wire();
const ready = load();
ready.then((s) => {
  document.title = s.title;
  $("title").textContent = s.title;
  $("question").textContent = `Is this photo from ${listed(s.realLabels.map(pretty))}?`;
  $("file").disabled = false;
  setStatus("Ready. Choose or drop a photo.");
  document.documentElement.dataset.ready = "true";
}).catch((e) => {
  console.error(e);
  setStatus(`The model could not be loaded: ${e.message || e}`, true);
  document.documentElement.dataset.ready = "error";
});
