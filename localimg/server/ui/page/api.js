// The server's API as the page uses it: the API key, errors in words, the job event stream.

const KEY_STORAGE = "localimg.apiKey";

let askForKey = async () => null; // set by the page: opens the key dialog, resolves to a key or null

export function setKeyPrompt(fn) {
  askForKey = fn;
}

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function saveKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage refused (private mode): the key lives until the page is closed
  }
  memoryKey = key || "";
}

let memoryKey = storedKey();

export function currentKey() {
  return memoryKey;
}

export class ApiError extends Error {
  constructor(message, status, param) {
    super(message);
    this.status = status;
    this.param = param || null;
  }
}

// The server's message in words: OpenAI's {"error": {"message"}}, else the body's text.
export async function errorFrom(response) {
  let message = "";
  let param = null;
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error === "object") {
      message = body.error.message || "";
      param = body.error.param || null;
    } else if (body && typeof body.error === "string") {
      message = body.error;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    message = text.trim().slice(0, 500);
  }
  if (!message) message = response.statusText || "no details";
  const retry = response.headers.get("Retry-After");
  if (retry && response.status === 429) message += ` (try again in ${retry} s)`;
  return new ApiError(message, response.status, param);
}

// fetch() with the API key; a 401 asks for a key (once per answer) and tries again with it.
export async function apiFetch(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = new Headers(options.headers || {});
    if (memoryKey) headers.set("Authorization", `Bearer ${memoryKey}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(`could not reach the server (${err && err.message ? err.message : err})`, 0);
    }
    if (response.status !== 401 || attempt >= 3) return response;
    const problem = await errorFrom(response.clone());
    const key = await askForKey(memoryKey ? `The key was refused: ${problem.message}` : problem.message);
    if (!key) return response;
    saveKey(key);
  }
}

export async function apiJson(path, options = {}) {
  const response = await apiFetch(path, options);
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// Server-Sent Events read with fetch (EventSource cannot send the Authorization header).
export async function readEvents(response, onEvent, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const abort = () => reader.cancel().catch(() => {});
  if (signal) signal.addEventListener("abort", abort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of frame.split("\n")) {
          if (line.startsWith(":")) continue; // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const content = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = content;
          else if (field === "data") data.push(content);
        }
        if (data.length) onEvent(event, JSON.parse(data.join("\n")));
      }
    }
  } finally {
    if (signal) signal.removeEventListener("abort", abort);
  }
}
