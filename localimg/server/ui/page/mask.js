// The input images and the inpainting mask painted over the first one.
//
// Two canvases at the image's own size, one over the other: the picture, and the paint (shown
// half transparent). The mask sent is the paint as white (change) on black (keep), at the
// image's size, as the edits route expects.

export class MaskEditor {
  constructor({ root, imageCanvas, paintCanvas, brush }) {
    this.root = root;
    this.imageCanvas = imageCanvas;
    this.paintCanvas = paintCanvas;
    this.brush = brush;
    this.files = [];
    this.painted = false;
    this.drawing = false;
    this.last = null;
    paintCanvas.addEventListener("pointerdown", (e) => this.start(e));
    paintCanvas.addEventListener("pointermove", (e) => this.move(e));
    for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
      paintCanvas.addEventListener(name, () => this.stop());
    }
  }

  async setFiles(files) {
    this.files = Array.from(files);
    this.clear();
    if (!this.files.length) {
      this.root.hidden = true;
      return;
    }
    const url = URL.createObjectURL(this.files[0]);
    try {
      const image = await new Promise((resolve, reject) => {
        const img = new Image();
        img.onload = () => resolve(img);
        img.onerror = () => reject(new Error(`${this.files[0].name} could not be read as an image`));
        img.src = url;
      });
      for (const canvas of [this.imageCanvas, this.paintCanvas]) {
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
      }
      this.imageCanvas.getContext("2d").drawImage(image, 0, 0);
      this.root.hidden = false;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  point(event) {
    const rect = this.paintCanvas.getBoundingClientRect();
    const sx = this.paintCanvas.width / rect.width;
    const sy = this.paintCanvas.height / rect.height;
    return { x: (event.clientX - rect.left) * sx, y: (event.clientY - rect.top) * sy, scale: sx };
  }

  start(event) {
    event.preventDefault();
    this.paintCanvas.setPointerCapture?.(event.pointerId);
    this.drawing = true;
    this.last = null;
    this.move(event);
  }

  move(event) {
    if (!this.drawing) return;
    const p = this.point(event);
    const ctx = this.paintCanvas.getContext("2d");
    ctx.strokeStyle = ctx.fillStyle = "rgb(255, 40, 90)";
    ctx.lineWidth = Number(this.brush.value) * p.scale;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    if (this.last) {
      ctx.moveTo(this.last.x, this.last.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
    } else {
      ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, Math.PI * 2);
      ctx.fill();
    }
    this.last = p;
    this.painted = true;
  }

  stop() {
    this.drawing = false;
    this.last = null;
  }

  clear() {
    this.paintCanvas.getContext("2d").clearRect(0, 0, this.paintCanvas.width, this.paintCanvas.height);
    this.painted = false;
  }

  invert() {
    const ctx = this.paintCanvas.getContext("2d");
    const { width, height } = this.paintCanvas;
    const data = ctx.getImageData(0, 0, width, height);
    const px = data.data;
    let any = false;
    for (let i = 0; i < px.length; i += 4) {
      const on = px[i + 3] < 128;
      px[i] = 255;
      px[i + 1] = 40;
      px[i + 2] = 90;
      px[i + 3] = on ? 255 : 0;
      any ||= on;
    }
    ctx.putImageData(data, 0, 0);
    this.painted = any;
  }

  // The mask as a PNG blob (white: change), or null when nothing is painted.
  async maskBlob() {
    if (!this.painted || !this.files.length) return null;
    const { width, height } = this.paintCanvas;
    const paint = this.paintCanvas.getContext("2d").getImageData(0, 0, width, height).data;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const out = ctx.createImageData(width, height);
    for (let i = 0; i < paint.length; i += 4) {
      const v = paint[i + 3] >= 128 ? 255 : 0;
      out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
      out.data[i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }
}
