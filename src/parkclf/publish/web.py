"""The in-browser page (``web/``): the files it needs at run time, in one list that the app serves at /web/, the
tests serve offline and ``parkclf deploy --static-space`` publishes.

The page runs the checkpoint's int8 ONNX export with transformers.js and onnxruntime-web (wasm), from this server
only: its npm packages come from the registry (``cd web && npm ci``), and no CDN is asked at run time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import UsageError

ROOT = Path(__file__).resolve().parents[3]
WEB_DIR = ROOT / "web"
PAGE = ["index.html", "app.js", "preprocess.js"]
RUNTIME = ["node_modules/@huggingface/transformers/dist/transformers.web.js",
           "node_modules/onnxruntime-web/dist/ort.webgpu.bundle.min.mjs",
           "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs",
           "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm"]
MODEL = ["config.json", "preprocessor_config.json", "onnx/model_quantized.onnx"]
MODEL_PATH = "model"  # where the page's <meta name="parks-model"> looks, beside index.html


def site_files(model_dir: str | Path, web_dir: str | Path = WEB_DIR) -> dict[str, Path]:
    """Path on the site -> local file, for the page, its runtime and the model beside it."""
    web_dir, model_dir = Path(web_dir), Path(model_dir)
    files = {name: web_dir / name for name in PAGE + RUNTIME}
    files.update({f"{MODEL_PATH}/{name}": model_dir / name for name in MODEL})
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        hint = " Run `cd web && npm ci` first." if any("node_modules" in m for m in missing) else ""
        if any(".onnx" in m for m in missing):
            hint += " Export the model first: `parkclf export MODEL --photos ...`."
        raise UsageError(f"The in-browser page needs {', '.join(missing)}.{hint}")
    return files


def available(model_dir: str | Path, web_dir: str | Path = WEB_DIR) -> bool:
    try:
        site_files(model_dir, web_dir)
        return True
    except UsageError:
        return False


def link_tree(files: dict[str, Path], root: str | Path) -> Path:
    """A folder of symbolic links laid out as the site: what a static file server serves."""
    root = Path(root)
    for name, path in files.items():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(path.resolve())
    return root


def mount(model_dir: str | Path, web_dir: str | Path = WEB_DIR, path: str = "/web"):
    """A Starlette route serving the page at ``path`` (for ``launch(app_kwargs={"routes": [...]})``)."""
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    root = link_tree(site_files(model_dir, web_dir), tempfile.mkdtemp(prefix="parkclf-web-"))
    return Mount(path, app=StaticFiles(directory=root, html=True, follow_symlink=True), name="web")
