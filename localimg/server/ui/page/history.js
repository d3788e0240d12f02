// The history of results, kept in localStorage across reloads.
//
// Images are large and localStorage holds a few megabytes, so each entry keeps a small JPEG
// thumbnail, and the full image only when it is small; the newest MAX_ENTRIES are kept. When the
// browser refuses to store more, the oldest full images go first, then the oldest entries; the
// full images of this visit stay in memory, so they can still be downloaded until the page closes.

const STORAGE = "localimg.history.v1";
export const MAX_ENTRIES = 40;
const THUMB_SIDE = 256;
const MAX_FULL_CHARS = 400_000; // a full image's data URL kept in storage up to this length

const fullImages = new Map(); // entry id → full data URL, for this visit

export function load() {
  try {
    const entries = JSON.parse(localStorage.getItem(STORAGE) || "[]");
    return Array.isArray(entries) ? entries.filter((e) => e && e.id && e.thumb) : [];
  } catch {
    return [];
  }
}

function isQuotaError(err) {
  return err && (err.name === "QuotaExceededError" || err.code === 22 || err.code === 1014);
}

// Store the entries (newest first); returns a note when some had to be dropped or trimmed.
export function save(entries) {
  let list = entries.slice(0, MAX_ENTRIES);
  let trimmed = 0;
  for (;;) {
    try {
      localStorage.setItem(STORAGE, JSON.stringify(list));
      break;
    } catch (err) {
      if (!isQuotaError(err)) return { entries: list, note: `History is not saved: ${err.message || err}` };
      const withFull = list.map((e, i) => (e.full ? i : -1)).filter((i) => i >= 0);
      if (withFull.length) {
        const i = withFull[withFull.length - 1];
        list = list.map((e, j) => (j === i ? { ...e, full: null } : e));
      } else if (list.length > 1) {
        list = list.slice(0, -1);
      } else {
        return { entries: list, note: "History is not saved: the browser's storage for this page is full." };
      }
      trimmed += 1;
    }
  }
  const note = trimmed
    ? "The browser's storage is full: older results keep only their thumbnail or were removed."
    : "";
  return { entries: list, note };
}

export function fullImage(entry) {
  return fullImages.get(entry.id) || entry.full || null;
}

export function forget(entryId) {
  fullImages.delete(entryId);
}

export function clearAll() {
  fullImages.clear();
  try {
    localStorage.removeItem(STORAGE);
  } catch {
    // nothing stored
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the image could not be decoded"));
    image.src = src;
  });
}

async function thumbnail(dataUrl) {
  const image = await loadImage(dataUrl);
  const scale = Math.min(1, THUMB_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
  if (scale === 1 && dataUrl.length < 60_000) return dataUrl;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(image.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(image.naturalHeight * scale));
  canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.85);
}

// A history entry for one result image: its parameters and a thumbnail.
export async function makeEntry(dataUrl, details) {
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  fullImages.set(id, dataUrl);
  return {
    id,
    created: Date.now(),
    ...details,
    thumb: await thumbnail(dataUrl),
    full: dataUrl.length <= MAX_FULL_CHARS ? dataUrl : null,
  };
}
