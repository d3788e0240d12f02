"""Screenshots of the web page at desktop (1280x800) and phone (390x844) widths.

    .venv/bin/python scripts/screenshot_page.py                 # a server on the tests' tiny model
    .venv/bin/python scripts/screenshot_page.py --url http://127.0.0.1:8080 --model sd15

Without --url it starts a server on the tiny random model the tests build (its pictures are
noise-like, but real results of the page). It makes one image, then saves
docs/screenshots/page-desktop.png and page-phone.png (the phone one of the whole page; palette
PNGs, to stay small). Uses Debian's
chromium (/usr/bin/chromium) through Playwright, like the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from tests.server.web_page_support import chromium, page_server  # noqa: E402
from tests.server_support import write_model  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@contextlib.contextmanager
def tiny_server() -> Iterator[str]:
    from tests.tiny_models import tiny_sd_path

    with tempfile.TemporaryDirectory(prefix="localimg-shot-") as folder:
        root = Path(folder)
        (root / "models").mkdir()
        write_model(root / "models", "tiny", tiny_sd_path())
        with page_server(root, root / "models") as server:
            yield server.url


def save_small(png: bytes, path: Path) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def shoot(url: str, model: str | None, size: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(url + "/")
        page.locator("#model option").first.wait_for(state="attached", timeout=120_000)
        if model:
            page.select_option("#model", model)
        width, height = size.split("x")
        page.get_by_label("Prompt", exact=True).fill(PROMPT)
        page.fill("#negative", "blurry")
        page.fill("#width", width)
        page.fill("#height", height)
        page.fill("#seed", "42")
        for _ in range(2):  # two results: one shown, both in the history
            page.get_by_role("button", name="Generate").click()
            page.locator("#status-text", has_text="Done").wait_for(timeout=600_000)
            page.fill("#seed", "43")
        page.get_by_label("Prompt", exact=True).fill(PROMPT)
        for name, (w, h) in SIZES.items():
            page.set_viewport_size({"width": w, "height": h})
            page.locator("#prompt").evaluate("e => e.blur()")
            page.evaluate("window.scrollTo(0, 0)")
            path = out / f"page-{name}.png"
            # The phone's column is long: the whole page, so the result shows below the form.
            shot = page.screenshot(full_page=name == "phone")
            print(f"{path}: {save_small(shot, path) // 1024} KiB")
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running localimg serve (default: start a tiny one)")
    parser.add_argument("--model", help="the model to pick (default: the first)")
    parser.add_argument("--size", default="256x256", help="the image size to make")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if args.url:
        shoot(args.url.rstrip("/"), args.model, args.size, args.out)
        return
    with tiny_server() as url:
        shoot(url, args.model, args.size, args.out)


if __name__ == "__main__":
    main()
