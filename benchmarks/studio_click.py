"""A click in the studio as its user sees it: from the pointer going down on the image to the
masks drawn, in chromium (Playwright), with 1 to N objects on the image; and its parts: the
request as the page sees it, the server's handling of it and the predictor's click inside that,
and the page's drawing of the masks. Each is timed twice: with the page's hover preview off
(the click runs the model) and on, where the pointer first rests on the spot (timed: from that
move to the preview drawn) and then clicks there (the click takes the preview's prediction).

The server is ``anyseg serve``'s app in a child process, with a checkpoint in the official
format (by default the SAM 2.1-tiny fixture: random weights). Random weights give speckled
masks, unlike any trained model's, and a mask's encoding and drawing cost follows its shape;
``--object-masks`` (on by default) has the server answer with the SA-V sample annotation's
real object masks (resized to the image) in place of the model's, after the model has
computed its own: the click's compute is the model's, its masks are object-shaped. Usage::

    python benchmarks/studio_click.py [--precision int8] [--objects 1,4,8] [--clicks 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
CHECKPOINT = SHARED / "fixtures" / "sam2.1_hiera_tiny.random.pt"
IMAGE = SHARED / "samples" / "images" / "truck.jpg"
ANNOTATION = SHARED / "samples" / "annotations" / "sav_000001_manual.json"
CHROMIUM = Path("/usr/bin/chromium")

# In the page: when the pointer went down, and each drawing of the masks and prompt request.
HOOKS = """() => {
  const t = window.__bench = {down: null, clicks: [], render: [], request: [], drawn: null,
                              move: null, previews: [], previewed: null};
  window.addEventListener("pointerdown", () => { t.down = performance.now(); }, true);
  window.addEventListener("pointermove", () => { t.move = performance.now(); }, true);
  const drawPreview = window.drawPreview;
  window.drawPreview = function (...args) {
    const out = drawPreview.apply(this, args);
    t.previews.push(performance.now() - t.move);
    if (t.previewed) t.previewed();
    return out;
  };
  const render = window.renderMasks;
  window.renderMasks = function (...args) {
    const start = performance.now();
    const out = render.apply(this, args);
    const end = performance.now();
    t.render.push(end - start);
    if (t.down !== null) {
      t.clicks.push(end - t.down);
      t.down = null;
      if (t.drawn) t.drawn();
    }
    return out;
  };
  const fetch = window.fetch;
  window.fetch = async function (...args) {
    const start = performance.now();
    const response = await fetch.apply(this, args);
    if (String(args[0]).endsWith("/prompts")) {
      await response.clone().arrayBuffer();
      t.request.push(performance.now() - start);
    }
    return response;
  };
}"""


# Resolves once the page has drawn more than ``n`` clicks' masks.
DRAWN = """n => new Promise(resolve => {
  const t = window.__bench;
  if (t.clicks.length > n) resolve(); else t.drawn = () => { t.drawn = null; resolve(); };
})"""
# Resolves once the page has drawn more than ``n`` previews.
PREVIEWED = """n => new Promise(resolve => {
  const t = window.__bench;
  if (t.previews.length > n) resolve(); else t.previewed = () => { t.previewed = null; resolve(); };
})"""


def object_masks(height: int, width: int) -> list:
    """The SA-V sample annotation's object masks (one frame's objects, the largest first),
    resized to ``height`` x ``width`` (nearest)."""
    import numpy as np

    from anyseg.io.masks import decode_rle

    frames = json.loads(ANNOTATION.read_text())["masklet"]
    masks = [decode_rle(rle) for rle in frames[len(frames) // 2] if rle is not None]
    masks = sorted((m for m in masks if m.any()), key=lambda m: -int(m.sum()))
    h, w = masks[0].shape
    return [np.ascontiguousarray(m[np.arange(height) * h // height][:, np.arange(width) * w // width]) for m in masks]


def serve(args: argparse.Namespace) -> None:
    """The child: the studio on ``args.port``, writing each click's server-side times to
    ``args.times`` (JSON lines)."""
    import numpy as np
    import uvicorn

    from anyseg.predictors.image import ImagePredictor
    from anyseg.server import sessions
    from anyseg.server.app import ServerSettings, create_app

    predict, add_prompt, preview = ImagePredictor.predict, sessions.ImageSession.add_prompt, sessions.ImageSession.preview
    last: dict = {}
    shapes: dict = {}

    def timed_predict(self, *a, **kw):
        start = time.perf_counter()
        out = predict(self, *a, **kw)
        last["predict_ms"] = 1000 * (time.perf_counter() - start)
        if args.object_masks:
            k, h, w = out.masks.shape
            if (h, w) not in shapes:
                shapes[(h, w)] = np.stack(object_masks(h, w))
            pool = shapes[(h, w)]
            start = last.get("n", 0) % (len(pool) - k + 1)
            out = dataclasses.replace(out, masks=pool[start:start + k])  # a view: no copy in the handler's time
        return out

    def timed(handler, kind):
        def run(self, *a, **kw):
            last["predict_ms"] = 0.0  # unless the model runs
            start = time.perf_counter()
            out = handler(self, *a, **kw)
            last["handler_ms"] = 1000 * (time.perf_counter() - start)
            last["n"] = last.get("n", 0) + (kind == "prompt")
            with open(args.times, "a") as f:
                f.write(json.dumps({"kind": kind} | {k: v for k, v in last.items() if k != "n"}) + "\n")
            return out
        return run

    ImagePredictor.predict = timed_predict
    sessions.ImageSession.add_prompt = timed(add_prompt, "prompt")
    sessions.ImageSession.preview = timed(preview, "preview")
    settings = ServerSettings(checkpoint=str(args.checkpoint), data_dir=Path(args.data_dir), precision=args.precision)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--objects", default="1,4,8", help="object counts at which clicks are timed")
    parser.add_argument("--clicks", type=int, default=3, help="timed clicks per object")
    parser.add_argument("--object-masks", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--times", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    for path in (args.checkpoint, args.image, ANNOTATION, CHROMIUM):
        if not path.exists():
            sys.exit(f"{path} is missing")
    from tempfile import TemporaryDirectory

    from playwright.sync_api import sync_playwright

    counts = sorted({int(n) for n in args.objects.split(",")})
    with TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.jsonl"
        child = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(args.port), "--data-dir", tmp,
                                  "--times", str(times), "--checkpoint", str(args.checkpoint),
                                  "--precision", args.precision, "--object-masks" if args.object_masks else "--no-object-masks"])
        try:
            url = f"http://127.0.0.1:{args.port}/"
            for _ in range(600):
                try:
                    if json.load(urllib.request.urlopen(url + "api/status"))["model"]["state"] == "ready":
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(url)
                page.wait_for_selector("#model-pill.ready")
                page.set_input_files("#file-input", str(args.image))
                page.wait_for_selector("#canvas-wrap:not([hidden])")
                page.evaluate(HOOKS)
                box = page.locator("#prompt-canvas").bounding_box()
                rows, seen, previewed = {}, 0, 0
                for n in range(1, counts[-1] + 1):
                    if n > 1:
                        page.keyboard.press("o")
                        page.wait_for_selector(f"#objects li >> nth={n - 1}")
                    row = rows[n] = {}
                    for mode in ("click", "hover"):
                        on = page.evaluate("preview.on")
                        if on != (mode == "hover"):
                            page.keyboard.press("h")
                        for k in range(args.clicks):
                            fx = 0.1 + 0.8 * n / (counts[-1] + 1) + (0.02 if mode == "hover" else 0)
                            fy = 0.3 + 0.4 * k / max(1, args.clicks - 1)
                            x, y = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
                            if mode == "hover":
                                page.mouse.move(x, y)
                                page.evaluate(PREVIEWED, previewed)
                                previewed += 1
                                time.sleep(0.3)  # the pointer rests, then clicks there
                                page.mouse.down()  # where it rests: no move
                                page.mouse.up()
                            else:
                                page.mouse.click(x, y)
                            page.evaluate(DRAWN, seen)  # waits in the page, not polling it (polls take CPU from the click)
                            seen += 1
                            time.sleep(0.3)
                        if n not in counts:
                            continue
                        t = page.evaluate("window.__bench")
                        server = [s for s in map(json.loads, times.read_text().splitlines()) if s["kind"] == "prompt"]
                        series = [("click_to_drawn_ms", t["clicks"]), ("request_ms", t["request"]),
                                  ("draw_ms", t["render"]), ("server_handler_ms", [s["handler_ms"] for s in server]),
                                  ("predict_ms", [s["predict_ms"] for s in server])]
                        if mode == "hover":
                            series.insert(0, ("hover_to_preview_ms", t["previews"]))
                        row[mode] = {key: statistics.median(values[-args.clicks:]) for key, values in series}
                        print(f"{n} object(s), {mode}: " + ", ".join(f"{k} {v:.1f}" for k, v in row[mode].items()),
                              flush=True)
                    if n not in counts:
                        del rows[n]
                browser.close()
        finally:
            child.terminate()
            child.wait()
    print("written:", write_results("studio_click", {
        "checkpoint": args.checkpoint.name, "precision": args.precision, "image": args.image.name,
        "object_masks": args.object_masks, "clicks": args.clicks, "objects": rows}))


if __name__ == "__main__":
    main()
