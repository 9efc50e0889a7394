"""Stage 9: a run or an exported model behind HTTP: `imgclf serve RUN_OR_MODEL` (FastAPI + uvicorn).

    POST /predict   multipart, one or more `files`: JSON with class, probability and top-k per image
    GET  /health    200 once the model is loaded and warmed up, 503 before
    GET  /metadata  classes, model, input sizes, views, batching settings
    GET  /          an upload page (drag and drop, preview, top-k bars); /docs and /openapi.json

Concurrent requests are micro-batched: the first image waits at most `max_wait_ms` for others,
and up to `max_batch` images go through the model in one forward pass, which on a CPU costs far
less per image than one pass each (BENCHMARKS.md, "Serving"). The model runs on one thread of
its own; decoding runs in the request threads, so the two overlap.

Bad input never hurts the server: an upload over `max_upload_mb` is 413, a file that is not an
image 415, an empty, truncated or decompression-bomb image 422, each with a one-line reason; the
process keeps serving.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import DecodeError, ImgclfError


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32  # images in one forward pass; 32 keeps fastcnn's p99 under a few batches' time
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_upload_mb: float = 20.0  # per request; a 12 MP JPEG is ~5 MB
    max_files: int = 64  # images in one request
    top_k: int = 5  # default top-k in answers (capped at the number of classes)
    views: str = "all"  # a run's test-time views: all (its metrics' scoring) | mirror | none

    def validate(self) -> "ServeConfig":
        from .classifier import VIEWS

        if self.views not in VIEWS:
            raise ImgclfError(f"--views must be one of {', '.join(VIEWS)}, got '{self.views}'")
        if self.max_batch < 1 or self.max_files < 1 or self.top_k < 1:
            raise ImgclfError("--max-batch, --max-files and --top-k must be at least 1")
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0:
            raise ImgclfError("--max-wait-ms must be >= 0 and --max-upload-mb > 0")
        return self


def model_kind(path: Path | str) -> tuple[str, Path]:
    """("run", folder) or ("onnx", model.onnx) for what `serve` was given; a clear error otherwise."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return "run", path
    onnx_file = path / "model.onnx" if path.is_dir() else path
    if onnx_file.suffix == ".onnx" and onnx_file.is_file():
        if not (onnx_file.parent / "model.json").is_file():
            raise ImgclfError(f"{onnx_file} has no model.json beside it; export it with `imgclf export`")
        return "onnx", onnx_file
    raise ImgclfError(f"{path} is neither a run folder (model.safetensors) nor an exported model (model.onnx)")


def load_backend(path: Path | str, views: str = "all"):
    """A run folder -> Classifier (torch); an exported model (model.onnx, or its folder) ->
    OnnxClassifier fed by imgclf's own decoder, so the pixels are the run's either way."""
    kind, path = model_kind(path)
    if kind == "run":
        from .classifier import Classifier

        return Classifier(path, views=views)
    try:
        from .onnx_predict import OnnxClassifier
    except ImportError:
        raise ImgclfError("serving an ONNX model needs onnxruntime: pip install 'imgclf[export]'") from None
    from .decode import decode_image

    return OnnxClassifier(path, decode_fn=decode_image)


class MicroBatcher:
    """Gathers images from concurrent requests into batches for one model thread."""

    def __init__(self, predict_views, max_batch: int, max_wait_s: float):
        self.predict_views, self.max_batch, self.max_wait_s = predict_views, max_batch, max_wait_s
        self.queue: asyncio.Queue | None = None
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="imgclf-model")
        self.batches: list[int] = []  # sizes of the batches run, for /metadata and the benchmarks
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.model_thread.shutdown(wait=False)

    async def predict(self, views: list[np.ndarray]) -> np.ndarray:
        """One image's views -> its probabilities, computed in a shared batch."""
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((views, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(items) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            live = [(v, f) for v, f in items if not f.cancelled()]  # a client that went away
            if not live:
                continue
            stacked = [np.stack(v) for v in zip(*(v for v, _ in live))]
            try:
                probs = await loop.run_in_executor(self.model_thread, self.predict_views, stacked)
            except Exception as e:  # a model failure answers these requests with 500, then carries on
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches.append(len(live))
            del self.batches[:-1000]
            for (_, f), p in zip(live, probs):
                if not f.done():
                    f.set_result(p)


def create_app(model: Path | str, cfg: ServeConfig = ServeConfig()):
    """The FastAPI app; the model loads (and warms up) in a thread once the app starts."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    cfg.validate()
    max_bytes = int(cfg.max_upload_mb * (1 << 20))
    state: dict = {"backend": None, "error": None, "batcher": None, "started": time.time()}

    def load():
        try:
            backend = load_backend(model, cfg.views)
            for _ in range(2):  # warm-up: first passes allocate and pick kernels
                backend.predict_views([np.zeros((1, s, s, 3), np.uint8) for s in backend.sizes])
            state["backend"] = backend
        except Exception as e:  # shown by /health; the server stays up to say so
            state["error"] = str(e)

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=load, name="imgclf-load", daemon=True).start()
        batcher = MicroBatcher(lambda views: state["backend"].predict_views(views), cfg.max_batch,
                               cfg.max_wait_ms / 1000)
        batcher.start()
        state["batcher"] = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="imgclf", description="Image classification with a model trained by imgclf.",
                  lifespan=lifespan)

    def ready():
        b = state["backend"]
        if b is None:
            raise HTTPException(503, state["error"] or "the model is loading")
        return b, state["batcher"]

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        n = request.headers.get("content-length")
        if request.method == "POST" and n and n.isdigit() and int(n) > max_bytes + 65536:  # + multipart framing
            return JSONResponse({"detail": f"upload of {int(n) / (1 << 20):.1f} MB is over the "
                                           f"{cfg.max_upload_mb:g} MB limit"}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health():
        if state["backend"] is None:
            return JSONResponse({"status": "error" if state["error"] else "loading", "detail": state["error"]},
                                status_code=503)
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        b, _ = ready()
        info = getattr(b, "meta", None) or getattr(b, "info", {})
        return {"classes": b.classes, "model": info.get("model"), "input_sizes": b.sizes,
                "mirror": getattr(b, "mirror", info.get("mirror")), "source": str(model),
                "backend": "onnxruntime" if hasattr(b, "session") else "pytorch", "config": asdict(cfg),
                "recent_batch_sizes": state["batcher"].batches[-20:]}

    @app.post("/predict")
    async def predict(files: list[UploadFile] = File(..., description="one or more image files"),
                      top_k: int = Query(cfg.top_k, ge=1, description="classes to list per image")):
        b, batcher = ready()
        if len(files) > cfg.max_files:
            raise HTTPException(413, f"{len(files)} files in one request; at most {cfg.max_files}")
        decoded, total = [], 0
        for f in files:
            data = await f.read(max_bytes + 1)
            total += len(data)
            if total > max_bytes:
                raise HTTPException(413, f"{f.filename}: upload over the {cfg.max_upload_mb:g} MB limit")
            try:
                decoded.append(await run_in_threadpool(b.decode, data))
            except DecodeError as e:
                raise HTTPException(415 if "not an image" in str(e) else 422, f"{f.filename}: {e}") from None
        probs = await asyncio.gather(*(batcher.predict(v) for v in decoded))
        k = min(top_k, len(b.classes))
        out = []
        for f, p in zip(files, probs):
            d = b.describe(np.asarray(p), f.filename or "", k)
            out.append({"filename": d["path"], "class": d["class"], "probability": d["prob"],
                        "top_k": [{"class": c, "probability": q} for c, q in d["top_k"]]})
        return {"predictions": out}

    @app.get("/", response_class=HTMLResponse)
    def page():
        return UPLOAD_PAGE

    return app


def serve(model: Path | str, host: str = "127.0.0.1", port: int = 8000, cfg: ServeConfig = ServeConfig()) -> None:
    """Run the server until Ctrl-C (uvicorn, one process: the model thread uses the cores)."""
    import importlib.util

    cfg.validate()
    if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "multipart")):
        raise ImgclfError("imgclf serve needs FastAPI, uvicorn and python-multipart: pip install 'imgclf[serve]'")
    import uvicorn

    kind, path = model_kind(model)  # checked before the port is taken, so a typo fails at once
    from .progress import console

    console.print(f"serving {path} ({'PyTorch' if kind == 'run' else 'onnxruntime'}): the upload page is "
                  f"http://{host}:{port}/, the API http://{host}:{port}/docs", highlight=False, soft_wrap=True)
    uvicorn.run(create_app(model, cfg), host=host, port=port, log_level="info", access_log=False)


UPLOAD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>imgclf</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 15px/1.4 system-ui, sans-serif; max-width: 760px; margin: 2em auto; padding: 0 1em; color: #222; }
#drop { border: 2px dashed #999; border-radius: 10px; padding: 2em; text-align: center; cursor: pointer; }
#drop.over { background: #eef5ff; border-color: #36c; }
.item { display: flex; gap: 1em; margin: 1em 0; align-items: flex-start; }
.item img { width: 128px; height: 128px; object-fit: cover; border-radius: 6px; background: #eee; }
.bars { flex: 1; }
.bar { display: flex; align-items: center; gap: .5em; margin: 3px 0; }
.bar .name { width: 9em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar .track { flex: 1; background: #eee; border-radius: 4px; height: 14px; }
.bar .fill { background: #36c; height: 14px; border-radius: 4px; }
.bar .pct { width: 4em; text-align: right; }
.top { font-weight: 600; }
.error { color: #b00; }
small { color: #666; }
</style></head><body>
<h1>imgclf</h1>
<p id="meta"><small>loading model information...</small></p>
<div id="drop">Drop images here, or click to choose<input id="file" type="file" accept="image/*" multiple hidden></div>
<div id="results"></div>
<script>
const drop = document.getElementById('drop'), input = document.getElementById('file');
const results = document.getElementById('results');
fetch('metadata').then(r => r.json()).then(m => {
  document.getElementById('meta').innerHTML = '<small>' + (m.model || 'model') + ': ' +
    (m.classes || []).length + ' classes (' + (m.classes || []).slice(0, 8).join(', ') +
    ((m.classes || []).length > 8 ? ', ...' : '') + ')</small>';
}).catch(() => {});
drop.onclick = () => input.click();
drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over'); classify(e.dataTransfer.files); };
input.onchange = () => classify(input.files);
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
async function classify(files) {
  for (const f of files) {
    const item = el('div', 'item'), img = el('img'), bars = el('div', 'bars');
    img.src = URL.createObjectURL(f); img.alt = f.name;
    bars.appendChild(el('div', '', f.name + ': classifying...'));
    item.append(img, bars); results.prepend(item);
    const body = new FormData(); body.append('files', f);
    try {
      const r = await fetch('predict?top_k=5', { method: 'POST', body });
      const j = await r.json();
      bars.innerHTML = '';
      if (!r.ok) { bars.appendChild(el('div', 'error', j.detail || ('error ' + r.status))); continue; }
      const p = j.predictions[0];
      const head = el('div', 'top', p['class'] + ' ' + (100 * p.probability).toFixed(1) + '%');
      head.dataset.testid = 'top-class'; head.dataset.cls = p['class'];
      bars.append(head, el('small', '', f.name));
      for (const t of p.top_k) {
        const row = el('div', 'bar'), track = el('div', 'track'), fill = el('div', 'fill');
        fill.style.width = (100 * t.probability).toFixed(1) + '%'; track.appendChild(fill);
        row.append(el('span', 'name', t['class']), track, el('span', 'pct', (100 * t.probability).toFixed(1) + '%'));
        bars.appendChild(row);
      }
    } catch (e) { bars.innerHTML = ''; bars.appendChild(el('div', 'error', String(e))); }
  }
}
</script></body></html>
"""
