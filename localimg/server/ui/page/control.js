// The ControlNet section: a control image, the ControlNet that reads it (the models folder's
// controlnet/, from GET /controlnet/model_list), a preprocessor and a strength. The page sends
// them as the OpenAI-style fields control_image, control_net, control_preprocess and
// control_strength (a data URL in a JSON body, a file part in a multipart one).

import { apiJson } from "./api.js";

const $ = (id) => document.getElementById(id);

const ui = {
  section: $("control-section"),
  image: $("control-image"),
  net: $("control-net"),
  netsNote: $("control-nets-note"),
  preprocess: $("control-preprocess"),
  strength: $("control-strength"),
  strengthValue: $("control-strength-value"),
  remove: $("control-remove"),
  preview: $("control-preview"),
};

let loaded = false;

// sd-webui-controlnet lists "name [hash]"; the request takes the name.
function bareName(listed) {
  return String(listed).replace(/\s*\[[0-9a-f]+\]$/i, "");
}

async function loadNets() {
  if (loaded) return;
  loaded = true;
  const keep = ui.net.value;
  try {
    const answer = await apiJson("/controlnet/model_list");
    const names = (answer.model_list || []).map(bareName).filter((n) => n && n !== "None");
    ui.net.replaceChildren(new Option("The model's own (its YAML control_net)", ""));
    for (const name of names) ui.net.append(new Option(name, name));
    if (keep && names.includes(keep)) ui.net.value = keep;
    ui.netsNote.textContent = names.length
      ? ""
      : "No ControlNet in the models folder's controlnet/ (localimg models install controlnet-sd15-canny).";
  } catch (err) {
    loaded = false; // try again next time the section opens
    const message = err && err.message ? err.message : String(err);
    ui.netsNote.textContent = `No ControlNet list: ${message} (the AUTOMATIC1111 routes may be off).`;
  }
}

function showStrength() {
  ui.strengthValue.textContent = Number(ui.strength.value).toFixed(2);
}

function showPreview() {
  const file = controlFile();
  ui.preview.replaceChildren();
  ui.remove.hidden = !file;
  if (!file) return;
  const img = document.createElement("img");
  img.alt = `Control image ${file.name}`;
  img.src = URL.createObjectURL(file);
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  ui.preview.append(img);
}

// The control image chosen, or null.
export function controlFile() {
  return ui.image && ui.image.files && ui.image.files.length ? ui.image.files[0] : null;
}

// The control fields of a request (none without a control image).
export function controlParams() {
  if (!controlFile()) return {};
  const params = {};
  if (ui.net.value) params.control_net = ui.net.value;
  if (ui.preprocess.value !== "none") params.control_preprocess = ui.preprocess.value;
  const strength = Number(ui.strength.value);
  if (!Number.isFinite(strength) || strength < 0 || strength > 2) {
    throw new Error("ControlNet strength must be between 0 and 2.");
  }
  params.control_strength = strength;
  return params;
}

// The control image as a data URL, for a JSON body.
export function controlDataUrl() {
  const file = controlFile();
  if (!file) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(String(reader.result)));
    reader.addEventListener("error", () => reject(new Error(`The control image could not be read: ${file.name}`)));
    reader.readAsDataURL(file);
  });
}

if (ui.section) {
  ui.section.addEventListener("toggle", () => { if (ui.section.open) loadNets(); });
  ui.strength.addEventListener("input", showStrength);
  ui.image.addEventListener("change", () => { showPreview(); loadNets(); });
  ui.remove.addEventListener("click", () => { ui.image.value = ""; showPreview(); });
  showStrength();
}
