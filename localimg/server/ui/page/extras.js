// The LoRA and embedding picker under the prompt: lists the models folder's loras/ and the
// embeddings the A1111 routes' current model uses (GET /sdapi/v1/loras, /sdapi/v1/embeddings)
// and inserts `<lora:name:1>` or the embedding's name into the prompt at the cursor.

import { apiJson } from "./api.js";

const $ = (id) => document.getElementById(id);

function insert(textarea, text) {
  const start = textarea.selectionStart ?? textarea.value.length;
  const end = textarea.selectionEnd ?? start;
  const before = textarea.value.slice(0, start);
  const after = textarea.value.slice(end);
  const lead = before && !/\s$/.test(before) ? " " : "";
  const tail = after && !/^\s/.test(after) ? " " : "";
  textarea.value = before + lead + text + tail + after;
  const cursor = (before + lead + text).length;
  textarea.focus();
  textarea.setSelectionRange(cursor, cursor);
  textarea.dispatchEvent(new Event("input", { bubbles: true }));
}

function chips(title, names, toText, prompt) {
  const group = document.createElement("div");
  group.className = "field";
  const heading = document.createElement("p");
  heading.className = "hint";
  heading.textContent = names.length ? title : `${title}: none in the models folder`;
  const row = document.createElement("div");
  row.className = "row wrap";
  for (const name of names) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet";
    button.textContent = name;
    button.title = `Insert ${toText(name)}`;
    button.addEventListener("click", () => insert(prompt, toText(name)));
    row.append(button);
  }
  group.append(heading, row);
  return group;
}

async function fill(panel, prompt) {
  panel.replaceChildren(Object.assign(document.createElement("p"), { className: "hint", textContent: "Loading…" }));
  try {
    const [loras, embeddings] = await Promise.all([apiJson("/sdapi/v1/loras"), apiJson("/sdapi/v1/embeddings")]);
    panel.replaceChildren(
      chips("LoRAs", loras.map((l) => l.name), (n) => `<lora:${n}:1>`, prompt),
      chips("Embeddings", Object.keys(embeddings.loaded || {}), (n) => n, prompt),
    );
  } catch (err) {
    const message = err && err.message ? err.message : String(err);
    panel.replaceChildren(Object.assign(document.createElement("p"), {
      className: "hint", textContent: `No list: ${message} (the AUTOMATIC1111 routes may be off)`,
    }));
  }
}

const button = $("extras-button");
const panel = $("extras");
if (button && panel) {
  button.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    button.setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) fill(panel, $("prompt"));
  });
}
