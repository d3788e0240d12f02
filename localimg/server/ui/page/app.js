// localimg's web page: the form, a job followed live (progress, previews), results and history.
// Everything goes through the public API: /v1/models, /v1/images/jobs (+ /events, DELETE).

import { ApiError, apiFetch, apiJson, currentKey, errorFrom, readEvents, saveKey, setKeyPrompt } from "./api.js";
import * as history from "./history.js";
import { MaskEditor } from "./mask.js";
import { controlDataUrl, controlFile, controlParams } from "./control.js";
import { fillHires, hiresParams, upscaleRow } from "./upscale.js";

const $ = (id) => document.getElementById(id);
const MODEL_STORAGE = "localimg.model";
const FINISHED = new Set(["completed", "failed", "cancelled"]);

const ui = {
  form: $("form"), model: $("model"), modelInfo: $("model-info"), prompt: $("prompt"),
  negative: $("negative"), width: $("width"), height: $("height"), steps: $("steps"),
  cfg: $("cfg"), n: $("n"), sampler: $("sampler"), seed: $("seed"), strength: $("strength"),
  images: $("images"), generate: $("generate"), cancel: $("cancel"), progress: $("progress"),
  statusText: $("status-text"), error: $("error"), current: $("current"), history: $("history"),
  historyNote: $("history-note"), seedReuse: $("seed-reuse"), serverNote: $("server-note"),
};

const editor = new MaskEditor({
  root: $("mask-editor"), imageCanvas: $("mask-image"), paintCanvas: $("mask-paint"), brush: $("brush"),
});

let models = [];
let entries = history.load();
let running = null; // {id, cancelled} while a job runs
let lastSeed = null;

// -- messages ------------------------------------------------------------------------------

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function status(text) {
  ui.statusText.textContent = text;
}

function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) return `Error: ${err.message}`;
    return `Error (${err.status}): ${err.message}`;
  }
  return `Error: ${err && err.message ? err.message : err}`;
}

// -- the API key ---------------------------------------------------------------------------

const keyDialog = $("key-dialog");
let keyWaiter = null; // resolves the pending 401 question

function openKeyDialog(message) {
  $("key-message").textContent = message || "This server asks for an API key (localimg serve --api-key).";
  $("key-input").value = currentKey();
  if (!keyDialog.open) keyDialog.showModal();
  $("key-input").focus();
}

function closeKeyDialog(key) {
  if (keyDialog.open) keyDialog.close();
  const waiter = keyWaiter;
  keyWaiter = null;
  if (waiter) waiter(key);
}

let pendingAsk = null;
setKeyPrompt((message) => {
  if (!pendingAsk) {
    pendingAsk = new Promise((resolve) => {
      keyWaiter = resolve;
      openKeyDialog(`This server needs an API key: ${message}`);
    }).finally(() => { pendingAsk = null; });
  }
  return pendingAsk;
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  const asked = Boolean(keyWaiter);
  saveKey(key);
  updateKeyNote();
  closeKeyDialog(key || null);
  if (!asked) loadModels();
});
$("key-forget").addEventListener("click", () => {
  saveKey("");
  $("key-input").value = "";
  updateKeyNote();
  closeKeyDialog(null);
});
$("key-close").addEventListener("click", () => closeKeyDialog(null));
keyDialog.addEventListener("cancel", () => closeKeyDialog(null));
$("key-button").addEventListener("click", () => openKeyDialog(currentKey() ? "Change or forget the API key kept in this browser." : ""));

function updateKeyNote() {
  ui.serverNote.textContent = currentKey() ? "API key set" : "";
}

// -- models and samplers ---------------------------------------------------------------------

function modelLabel(m) {
  const where = m.loaded ? "loaded" : m.state || "unloaded";
  return `${m.id} (${m.backend || "backend unknown"}, ${where})`;
}

async function loadModels() {
  try {
    const body = await apiJson("/v1/models");
    models = body.data || [];
  } catch (err) {
    showError(`The model list could not be read. ${describe(err)}`);
    return;
  }
  const chosen = ui.model.value || localStorage.getItem(MODEL_STORAGE) || "";
  ui.model.replaceChildren(...models.map((m) => new Option(modelLabel(m), m.id)));
  if (!models.length) {
    ui.model.append(new Option("no models are configured", ""));
  } else if (models.some((m) => m.id === chosen)) {
    ui.model.value = chosen;
  }
  await modelChanged();
}

function selectedModel() {
  return models.find((m) => m.id === ui.model.value) || null;
}

async function modelChanged() {
  const m = selectedModel();
  if (!m) {
    ui.modelInfo.textContent = "";
    return;
  }
  try { localStorage.setItem(MODEL_STORAGE, m.id); } catch { /* not kept */ }
  const queued = m.queued ? `, ${m.queued} queued` : "";
  ui.modelInfo.textContent = `Backend ${m.backend || "unknown"}; ${m.loaded ? "loaded" : m.state || "not loaded"}${queued}.`;
  const chosen = ui.sampler.value;
  try {
    const body = await apiJson(`/ui/samplers?backend=${encodeURIComponent(m.backend || "")}`);
    ui.sampler.replaceChildren(
      new Option("Model's default", ""),
      ...body.data.map((s) => new Option(s.label, s.value)),
    );
    if (chosen && !body.data.some((s) => s.value === chosen)) ui.sampler.append(new Option(chosen, chosen));
    ui.sampler.value = chosen;
  } catch (err) {
    showError(`The sampler list could not be read. ${describe(err)}`);
  }
}

ui.model.addEventListener("change", modelChanged);
$("models-refresh").addEventListener("click", loadModels);

// -- the form --------------------------------------------------------------------------------

function numberField(input, label, { integer = true } = {}) {
  if (input.validity.badInput) throw new Error(`${label} is not a number.`);
  const text = input.value.trim();
  if (!text) return null;
  const value = Number(text);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new Error(`${label} must be ${integer ? "a whole number" : "a number"}.`);
  }
  return value;
}

// What the form asks for (only what is set: the rest is the model's default).
function readForm() {
  const params = { model: ui.model.value || null, prompt: ui.prompt.value };
  if (!params.prompt.trim()) throw new Error("Write a prompt first.");
  if (ui.negative.value.trim()) params.negative_prompt = ui.negative.value;
  const width = numberField(ui.width, "Width");
  const height = numberField(ui.height, "Height");
  if ((width === null) !== (height === null)) {
    throw new Error("Set both width and height, or leave both empty for the model's size.");
  }
  if (width !== null) params.size = `${width}x${height}`;
  const steps = numberField(ui.steps, "Steps");
  if (steps !== null) params.steps = steps;
  const cfg = numberField(ui.cfg, "CFG scale", { integer: false });
  if (cfg !== null) params.cfg_scale = cfg;
  const n = numberField(ui.n, "Images");
  if (n !== null && n !== 1) params.n = n;
  const seed = numberField(ui.seed, "Seed");
  if (seed !== null) params.seed = seed;
  if (ui.sampler.value) params.scheduler = ui.sampler.value;
  if (editor.files.length) {
    const strength = numberField(ui.strength, "Strength", { integer: false });
    if (strength !== null) params.strength = strength;
  }
  return Object.assign(params, controlParams(), hiresParams());
}

async function jobRequest(params) {
  const control = controlFile();
  if (!editor.files.length) {
    const body = control ? { ...params, control_image: await controlDataUrl() } : params;
    return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  const form = new FormData();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) form.append(key, String(value));
  }
  const field = editor.files.length > 1 ? "image[]" : "image";
  for (const file of editor.files) form.append(field, file, file.name);
  const mask = await editor.maskBlob();
  if (mask) form.append("mask", mask, "mask.png");
  if (control) form.append("control_image", control, control.name);
  return { method: "POST", body: form };
}

function fillForm(entry) {
  const p = entry.params || {};
  if (p.model && !models.some((m) => m.id === p.model)) ui.model.append(new Option(`${p.model} (not served now)`, p.model));
  if (p.model) ui.model.value = p.model;
  ui.prompt.value = p.prompt || "";
  ui.negative.value = p.negative_prompt || "";
  const [w, h] = (entry.size || p.size || "x").split("x");
  ui.width.value = w || "";
  ui.height.value = h || "";
  ui.steps.value = entry.steps ?? p.steps ?? "";
  ui.cfg.value = p.cfg_scale ?? "";
  ui.n.value = p.n ?? 1;
  ui.seed.value = entry.seed ?? "";
  fillHires(p);
  modelChanged().then(() => {
    if (p.scheduler && ![...ui.sampler.options].some((o) => o.value === p.scheduler)) {
      ui.sampler.append(new Option(p.scheduler, p.scheduler));
    }
    ui.sampler.value = p.scheduler || "";
  });
  status("The settings of that result are in the form.");
  ui.prompt.focus();
}

$("seed-random").addEventListener("click", () => { ui.seed.value = ""; ui.seed.focus(); });
ui.seedReuse.addEventListener("click", () => { if (lastSeed !== null) ui.seed.value = String(lastSeed); });

ui.images.addEventListener("change", async () => {
  showError("");
  try {
    await editor.setFiles(ui.images.files);
    $("images-list").textContent = editor.files.length > 1
      ? `${editor.files.length} images: the mask applies to the first; the rest are references.`
      : "";
  } catch (err) {
    showError(describe(err));
  }
});
$("mask-clear").addEventListener("click", () => editor.clear());
$("mask-invert").addEventListener("click", () => editor.invert());
$("images-remove").addEventListener("click", async () => {
  ui.images.value = "";
  await editor.setFiles([]);
});

// -- running a job ---------------------------------------------------------------------------

function setRunning(job) {
  running = job;
  ui.generate.disabled = Boolean(job);
  ui.cancel.disabled = !job;
  ui.progress.hidden = !job;
  if (!job) return;
  ui.progress.value = 0;
}

function showProgress(body, params) {
  ui.progress.value = body.progress || 0;
  if (body.status === "queued") {
    const at = body.queue_position ? ` (position ${body.queue_position} in the queue)` : "";
    status(`Queued${at}.`);
  } else if (body.status === "in_progress") {
    if (!body.total) status("Starting (the model may be loading)…");
    else {
      const eta = body.eta_seconds !== null && body.eta_seconds !== undefined ? `, about ${Math.ceil(body.eta_seconds)} s left` : "";
      status(`Step ${body.step} of ${body.total}${eta}.`);
    }
  } else if (body.status === "cancelled" && !body.expires_at) {
    status("Cancelling…");
  }
  if (body.preview) {
    let img = ui.current.querySelector("img.preview");
    if (!img) {
      ui.current.replaceChildren();
      img = document.createElement("img");
      img.className = "preview";
      img.alt = `Preview: ${params.prompt}`;
      const width = params.size ? params.size.split("x")[0] : null;
      img.style.width = width ? `${width}px` : "min(100%, 512px)";
      ui.current.append(img);
    }
    const src = `data:image/png;base64,${body.preview}`;
    if (img.src !== src) img.src = src;
  }
}

async function follow(jobId, params) {
  let last = null;
  try {
    const response = await apiFetch(`/v1/images/jobs/${jobId}/events?preview=true`);
    if (!response.ok) throw await errorFrom(response);
    await readEvents(response, (event, body) => {
      last = body;
      showProgress(body, params);
    });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 0) {
      status(`The live stream broke off (${err.message}); checking the job…`);
    } else throw err;
  }
  // The stream ends with the finished job; if it broke off, poll until the job has finished.
  while (!last || !FINISHED.has(last.status) || (last.status === "cancelled" && !last.expires_at)) {
    await new Promise((r) => setTimeout(r, 1000));
    last = await apiJson(`/v1/images/jobs/${jobId}`);
    showProgress(last, params);
  }
  return last;
}

function summary(entry) {
  const p = entry.params || {};
  const parts = [p.model || "default model", entry.size, entry.steps ? `${entry.steps} steps` : null];
  parts.push(p.cfg_scale !== undefined ? `CFG ${p.cfg_scale}` : null, `seed ${entry.seed}`);
  if (p.scheduler) parts.push(p.scheduler);
  if (entry.edit) parts.push("edit");
  if (p.hires_scale) parts.push(`hires ×${p.hires_scale}`);
  if (entry.upscaled) parts.push(`upscaled ${entry.upscaled}`);
  return parts.filter(Boolean).join(" · ");
}

function downloadLink(entry, text = "Download") {
  const a = document.createElement("a");
  const full = history.fullImage(entry);
  a.href = full || entry.thumb;
  a.download = `localimg-${entry.seed}.${full ? entry.format || "png" : "jpg"}`;
  a.textContent = full ? text : `${text} (thumbnail)`;
  a.className = "button quiet";
  return a;
}

function figure(entry) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.className = "result";
  img.src = history.fullImage(entry) || entry.thumb;
  img.alt = `${entry.params.prompt} — seed ${entry.seed}`;
  const caption = document.createElement("figcaption");
  caption.textContent = summary(entry);
  fig.append(img, caption, downloadLink(entry));
  const full = history.fullImage(entry);
  if (full) fig.append(upscaleRow(full, (body, label) => showUpscaled(entry, body, label), (err) => showError(describe(err))));
  return fig;
}

// An upscale's answer (POST /v1/images/upscale) as a new result, after the one it came from.
async function showUpscaled(entry, body, label) {
  const format = body.output_format || "png";
  const item = (body.data || [])[0];
  if (!item || !item.b64_json) return;
  showError("");
  const made = await history.makeEntry(`data:image/${format};base64,${item.b64_json}`, {
    params: entry.params, seed: entry.seed, size: body.size, steps: entry.steps, format, edit: entry.edit, upscaled: label,
  });
  ui.current.replaceChildren(figure(made));
  entries = [made, ...entries];
  storeHistory();
  renderHistory();
  status(`Upscaled ${label}: ${body.size}.`);
}

async function showResult(job, params) {
  const result = job.result || {};
  const format = result.output_format || "png";
  const made = [];
  for (const item of result.data || []) {
    if (!item.b64_json) continue;
    const dataUrl = `data:image/${format};base64,${item.b64_json}`;
    made.push(await history.makeEntry(dataUrl, {
      params, seed: item.seed, size: result.size, steps: result.steps, format, edit: editor.files.length > 0,
    }));
  }
  ui.current.replaceChildren(...made.map(figure));
  ui.current.dataset.job = job.id; // which job the images shown are from
  if (made.length) {
    lastSeed = made[0].seed;
    ui.seedReuse.disabled = false;
  }
  entries = [...made, ...entries];
  storeHistory();
  renderHistory();
  const ignored = result.ignored && result.ignored.length ? ` (ignored: ${result.ignored.join(", ")})` : "";
  status(`Done: ${made.length} image${made.length === 1 ? "" : "s"}, ${result.size}, seed ${made.map((e) => e.seed).join(", ")}${ignored}.`);
}

async function generate() {
  if (running) return;
  showError("");
  let params;
  try {
    params = readForm();
  } catch (err) {
    showError(err.message);
    return;
  }
  const job = { id: null, cancelled: false };
  setRunning(job);
  status("Sending…");
  try {
    const response = await apiFetch("/v1/images/jobs", await jobRequest(params));
    if (!response.ok) throw await errorFrom(response);
    const created = await response.json();
    job.id = created.id;
    if (job.cancelled) await cancel();
    showProgress(created, params);
    const final = await follow(created.id, params);
    if (final.status === "completed") await showResult(final, params);
    else ui.current.querySelector("img.preview")?.remove();
    if (final.status === "failed") {
      status("The generation failed.");
      showError(`Error: ${final.error ? final.error.message : "the job failed"}`);
    } else if (final.status === "cancelled") status("Cancelled.");
  } catch (err) {
    status("Nothing was generated.");
    ui.current.querySelector("img.preview")?.remove();
    showError(describe(err));
  } finally {
    setRunning(null);
    loadModels();
  }
}

async function cancel() {
  const job = running;
  if (!job) return;
  job.cancelled = true;
  status("Cancelling…");
  if (!job.id) return; // cancelled as soon as the server answers with its id
  try {
    const response = await apiFetch(`/v1/images/jobs/${job.id}`, { method: "DELETE" });
    if (!response.ok) throw await errorFrom(response);
  } catch (err) {
    showError(`The job could not be cancelled. ${describe(err)}`);
  }
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  generate();
});
ui.cancel.addEventListener("click", cancel);
for (const field of [ui.prompt, ui.negative]) {
  field.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      generate();
    }
  });
}

// -- history ---------------------------------------------------------------------------------

function storeHistory() {
  const saved = history.save(entries);
  entries = saved.entries;
  ui.historyNote.textContent = saved.note;
}

function renderHistory() {
  const items = entries.map((entry) => {
    const li = document.createElement("li");
    li.className = "card";
    const img = document.createElement("img");
    img.src = entry.thumb;
    img.alt = `${entry.params.prompt} — seed ${entry.seed}`;
    img.loading = "lazy";
    const text = document.createElement("div");
    text.className = "card-text";
    const prompt = document.createElement("p");
    prompt.className = "card-prompt";
    prompt.textContent = entry.params.prompt;
    const meta = document.createElement("p");
    meta.className = "hint";
    meta.textContent = summary(entry);
    const reuse = document.createElement("button");
    reuse.type = "button";
    reuse.className = "quiet";
    reuse.textContent = "Use these settings";
    reuse.addEventListener("click", () => fillForm(entry));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${entry.params.prompt}`);
    remove.addEventListener("click", () => {
      history.forget(entry.id);
      entries = entries.filter((e) => e.id !== entry.id);
      storeHistory();
      renderHistory();
    });
    const buttons = document.createElement("div");
    buttons.className = "row wrap";
    buttons.append(downloadLink(entry), reuse, remove);
    text.append(prompt, meta, buttons);
    li.append(img, text);
    return li;
  });
  ui.history.replaceChildren(...items);
  if (!entries.length && !ui.historyNote.textContent) ui.historyNote.textContent = "Results appear here and stay after a reload.";
  else if (entries.length && ui.historyNote.textContent.startsWith("Results appear")) ui.historyNote.textContent = "";
}

$("history-clear").addEventListener("click", () => {
  history.clearAll();
  entries = [];
  ui.historyNote.textContent = "";
  renderHistory();
});

updateKeyNote();
if (entries.length) {
  lastSeed = entries[0].seed;
  ui.seedReuse.disabled = false;
}
renderHistory();
loadModels();
