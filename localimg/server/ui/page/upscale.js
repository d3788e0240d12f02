// Upscaling on the page: the "Hires fix" group of the form (the hires_* fields of a generation)
// and the Upscale buttons under a result (POST /v1/images/upscale, x2 or x4, with an upscaler
// from GET /v1/upscalers). An upscaled image comes back as a new result.

import { apiFetch, apiJson, errorFrom } from "./api.js";

const $ = (id) => document.getElementById(id);

const ui = {
  section: $("hires-section"),
  enabled: $("hires-enabled"),
  scale: $("hires-scale"),
  upscaler: $("hires-upscaler"),
  steps: $("hires-steps"),
  denoise: $("hires-denoise"),
  note: $("hires-note"),
};

let names = null; // the server's upscalers, once listed
let listing = null;

// The upscalers the server has (lanczos, bicubic, nearest, upscale_models/ files).
export function upscalerNames() {
  if (names) return Promise.resolve(names);
  if (!listing) {
    listing = apiJson("/v1/upscalers")
      .then((body) => {
        names = (body.data || []).map((entry) => entry.id);
        return names;
      })
      .catch((err) => {
        listing = null; // try again next time
        throw err;
      });
  }
  return listing;
}

function fillSelect(select, list, keep) {
  for (const name of list) {
    if (![...select.options].some((o) => o.value === name)) select.append(new Option(name, name));
  }
  if (keep && list.includes(keep)) select.value = keep;
}

async function loadHiresUpscalers() {
  try {
    fillSelect(ui.upscaler, await upscalerNames(), ui.upscaler.value);
    ui.note.textContent = "";
  } catch (err) {
    ui.note.textContent = `No upscaler list: ${err && err.message ? err.message : err}`;
  }
}

function numberOf(input, label, low, high, { integer = false, above = false } = {}) {
  const text = input.value.trim();
  if (!text) return null;
  const value = Number(text);
  const inRange = Number.isFinite(value) && (above ? value > low : value >= low) && value <= high;
  if (!inRange || (integer && !Number.isInteger(value))) {
    const range = above ? `above ${low} and at most ${high}` : `between ${low} and ${high}`;
    throw new Error(`Hires ${label} must be ${integer ? "a whole number " : ""}${range}.`);
  }
  return value;
}

// The hires fields of a generation (none unless the group's checkbox is on).
export function hiresParams() {
  if (!ui.enabled || !ui.enabled.checked) return {};
  const params = {};
  const scale = numberOf(ui.scale, "scale", 1, 8);
  params.hires_scale = scale === null ? 2 : scale;
  if (ui.upscaler.value) params.hires_upscaler = ui.upscaler.value;
  const steps = numberOf(ui.steps, "steps", 0, 500, { integer: true });
  if (steps !== null) params.hires_steps = steps;
  const denoise = numberOf(ui.denoise, "denoise", 0, 1, { above: true });
  if (denoise !== null) params.hires_denoise = denoise;
  return params;
}

// A data URL as a Blob (fetch() of a data: URL is outside the page's connect-src).
function blobOf(dataUrl) {
  const [header, payload] = dataUrl.split(",", 2);
  const type = (header.match(/^data:([^;,]+)/) || [null, "image/png"])[1];
  const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

// The hires group as a result's settings had it ("Use these settings").
export function fillHires(params) {
  if (!ui.enabled) return;
  ui.enabled.checked = Boolean(params.hires_scale);
  ui.scale.value = params.hires_scale ?? 2;
  ui.steps.value = params.hires_steps ?? "";
  ui.denoise.value = params.hires_denoise ?? "";
  const upscaler = params.hires_upscaler || "";
  if (upscaler && ![...ui.upscaler.options].some((o) => o.value === upscaler)) {
    ui.upscaler.append(new Option(upscaler, upscaler));
  }
  ui.upscaler.value = upscaler;
}

async function upscale(source, upscaler, scale) {
  const blob = blobOf(source);
  const form = new FormData();
  form.append("image", blob, `image.${(blob.type.split("/")[1] || "png")}`);
  form.append("model", upscaler);
  form.append("scale", String(scale));
  form.append("response_format", "b64_json");
  const response = await apiFetch("/v1/images/upscale", { method: "POST", body: form });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// The Upscale row under a result: an upscaler picker and x2 / x4 buttons. `source` is the
// result's full image (a data URL); `done(body, label)` receives the answer of the upscale.
export function upscaleRow(source, done, failed) {
  const row = document.createElement("div");
  row.className = "row wrap upscale-row";
  const picker = document.createElement("select");
  picker.className = "upscale-upscaler";
  picker.setAttribute("aria-label", "Upscaler");
  picker.append(new Option("lanczos", "lanczos"));
  upscalerNames().then((list) => fillSelect(picker, list, "lanczos")).catch(() => {});
  row.append(picker);
  for (const scale of [2, 4]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet";
    button.textContent = `Upscale ×${scale}`;
    button.addEventListener("click", async () => {
      const buttons = row.querySelectorAll("button");
      buttons.forEach((b) => { b.disabled = true; });
      try {
        done(await upscale(source, picker.value, scale), `×${scale} ${picker.value}`);
      } catch (err) {
        failed(err);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
    row.append(button);
  }
  return row;
}

if (ui.section) {
  ui.section.addEventListener("toggle", () => { if (ui.section.open) loadHiresUpscalers(); });
  ui.enabled.addEventListener("change", () => { if (ui.enabled.checked) loadHiresUpscalers(); });
}
