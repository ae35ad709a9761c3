"""Screenshots of ``matryoshka serve``'s page over the SciFact corpus, at two sizes, same query.

Embeds the 5,183 SciFact abstracts (title + abstract) with the packaged all-MiniLM-L6-v2 once
(``matryoshka embed``, several minutes on a CPU; cached under ``--cache``), builds an index of
them, serves it with the corpus as payload on a free loopback port (every row on the map, so
every result shows on it), and saves the page at each size to ``docs/img/serve-SIZE.png``
(1280x900, a 256-colour PNG), driving Debian's chromium with Playwright::

    python examples/serve_screenshots.py

``--corpus`` defaults to ``../shared/data/scifact/corpus.jsonl`` beside the checkout;
``--embeddings DIR`` reuses a folder that ``matryoshka embed`` already wrote from the same
corpus. Needs the ``dev`` extra (Playwright) and chromium (``MATRYOSHKA_CHROMIUM``, else the one
on the PATH).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
QUERY = "vitamin D supplementation and the risk of bone fractures in older adults"


def _run(*args: str) -> None:
    print("$ matryoshka", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "matryoshka.cli", *args], check=True)


def prepare(corpus: Path, cache: Path, embeddings: Path | None) -> Path:
    """The index folder of the corpus's embeddings (embedded and built once, under ``cache``)."""
    from matryoshka.models.text import minilm_path

    emb = embeddings or cache / "emb"
    if not (emb / "embeddings.npy").is_file():
        _run("embed", str(minilm_path()), "--texts", str(corpus), "--title-column", "title",
             "--out", str(emb), "--quiet")  # fmt: skip
    index = cache / "index"
    if not (index / "manifest.json").is_file():
        _run("index", "build", str(emb), "--out", str(index), "--overwrite", "--quiet")
    return index


def _shrink(path: Path) -> None:
    """Rewrite the PNG with a 256-colour palette (a third of the bytes, no visible change)."""
    try:
        from PIL import Image
    except ImportError:  # the vision extra: without it the PNG stays as chromium wrote it
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def shoot(url: str, sizes: list[int], query: str, out: Path, chromium: str) -> list[Path]:
    """Open the page at each size with ``query`` and save a PNG of the viewport for each."""
    from urllib.parse import urlencode

    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
        page.goto(f"{url}/?{urlencode({'q': query, 'size': sizes[0]})}")
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        for m in sizes:
            page.click(f"#size-marks button[data-size='{m}']")
            page.wait_for_selector(f"#results[data-state='done'][data-size='{m}']",
                                   timeout=120_000)  # fmt: skip
            page.wait_for_selector(f"#map-svg[data-size='{m}'][data-state='idle']",
                                   timeout=120_000)  # fmt: skip
            page.mouse.move(0, 0)
            path = out / f"serve-{m}.png"
            page.screenshot(path=str(path))
            _shrink(path)
            saved.append(path)
            print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)", file=sys.stderr)
        browser.close()
    return saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "serve-screens")
    ap.add_argument("--embeddings", type=Path, help="a `matryoshka embed` folder to reuse")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--query", default=QUERY)
    ap.add_argument("--sizes", default="384,16", help="comma-separated sizes (default 384,16)")
    ap.add_argument("--map-sample", type=int, default=10_000,
                    help="rows on the map (default 10,000: every row of SciFact)")  # fmt: skip
    ap.add_argument("--chromium", default=os.environ.get("MATRYOSHKA_CHROMIUM")
                    or shutil.which("chromium") or "/usr/bin/chromium")  # fmt: skip
    args = ap.parse_args()

    from matryoshka.serve import ServeConfig, ServerThread, build_service, create_app
    from matryoshka.serve.maps import MapCache

    index = prepare(args.corpus, args.cache, args.embeddings)
    config = ServeConfig(model="packaged", index=str(index), payload=str(args.corpus),
                         reload_interval=0, log_level="warning")  # fmt: skip
    service = build_service(config)
    maps = MapCache(config.map_method, args.map_sample, sizes=service.sizes())
    args.out.mkdir(parents=True, exist_ok=True)
    with ServerThread(create_app(service, maps=maps), config) as server:
        sizes = [int(s) for s in args.sizes.split(",")]
        shoot(server.url, sizes, args.query, args.out, args.chromium)


if __name__ == "__main__":
    main()
