"""imgclf serve: every endpoint and bad input through the ASGI client, micro-batching and the upload
page on a live server on 127.0.0.1, the ONNX backend."""

import os
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="pip install 'imgclf[serve]'")
httpx = pytest.importorskip("httpx")
from conftest import COLORS, make_image  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from imgclf.serve import ServeConfig, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _wait_ready(get, timeout=60):
    t = time.time()
    while time.time() - t < timeout:
        r = get("/health")
        if r.status_code == 200:
            return
        time.sleep(0.05)
    raise TimeoutError("the server never became healthy")


def _png_bomb() -> bytes:
    """A valid PNG header that claims 30000 x 30000 pixels (900 MP): must be refused from the header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def client(small_run):
    with TestClient(create_app(small_run, ServeConfig(max_upload_mb=0.5))) as c:
        _wait_ready(c.get)
        yield c


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("upload")
    return {c: make_image(d / f"{c}.jpg", COLORS[c], size=(50, 40), seed=7).read_bytes() for c in COLORS}


def test_predict_matches_the_classifier(client, small_run, images):
    from imgclf.classifier import Classifier

    r = client.post("/predict", files=[("files", ("red.jpg", images["red"], "image/jpeg"))])
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    want = Classifier(small_run).predict([images["red"]], top_k=3)[0]
    assert p["filename"] == "red.jpg" and p["class"] == want["class"] == "red"
    assert p["probability"] == pytest.approx(want["prob"], abs=1e-5)
    assert [t["class"] for t in p["top_k"]] == [c for c, _ in want["top_k"]]  # default top_k 5, capped at 3 classes
    many = client.post("/predict?top_k=1", files=[("files", (f"{c}.jpg", b, "image/jpeg")) for c, b in images.items()])
    assert [q["class"] for q in many.json()["predictions"]] == list(images)
    assert all(len(q["top_k"]) == 1 for q in many.json()["predictions"])


def test_health_metadata_page_and_schema(client):
    assert client.get("/health").json() == {"status": "ok"}
    m = client.get("/metadata").json()
    assert m["classes"] == ["blue", "green", "red"] and m["input_sizes"] == [72, 64, 80] and m["backend"] == "pytorch"
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and "predict?top_k" in page.text


def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(client, images):
    jpeg = images["blue"]
    cases = {
        "text.jpg": (b"hello, not an image", 415, "not an image"),
        "empty.jpg": (b"", 422, "empty"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], 422, "truncated"),
        "bomb.png": (_png_bomb(), 422, "too large"),
        "big.jpg": (b"\xff" * (600 << 10), 413, "limit"),
    }
    for name, (data, status, words) in cases.items():
        r = client.post("/predict", files=[("files", (name, data, "image/jpeg"))])
        assert r.status_code == status, (name, r.status_code, r.text)
        assert words in r.json()["detail"] and (status == 413 or name in r.json()["detail"])
    assert client.post("/predict").status_code == 422  # no files at all
    assert client.post("/predict?top_k=0", files=[("files", ("a.jpg", jpeg, "image/jpeg"))]).status_code == 422
    r = client.post("/predict", files=[("files", ("blue.jpg", jpeg, "image/jpeg"))])
    assert r.status_code == 200 and r.json()["predictions"][0]["class"] == "blue"


def test_health_is_503_until_the_model_is_loaded(small_run, monkeypatch):
    from imgclf import serve

    gate = threading.Event()
    real = serve.load_backend
    monkeypatch.setattr(serve, "load_backend", lambda *a: (gate.wait(30), real(*a))[1])
    with TestClient(create_app(small_run)) as c:
        assert c.get("/health").status_code == 503 and c.get("/health").json()["status"] == "loading"
        assert c.post("/predict", files=[("files", ("a.jpg", b"x", "image/jpeg"))]).status_code == 503
        gate.set()
        _wait_ready(c.get)
    with TestClient(create_app(small_run / "missing")) as c:  # a broken model says why, and stays 503
        time.sleep(0.2)
        r = c.get("/health")
        assert r.status_code == 503 and "neither a run folder" in r.json()["detail"]


@pytest.fixture(scope="module")
def live(small_run):
    """uvicorn on a free port of 127.0.0.1, in a thread; stops when the module's tests are done."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(small_run, ServeConfig(max_wait_ms=50)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(600):
            try:
                _wait_ready(c.get)
                break
            except httpx.TransportError:
                time.sleep(0.05)
    yield url
    server.should_exit = True
    t.join(10)


def test_concurrent_requests_are_batched(live, images):
    def one(i):
        c = ["red", "green", "blue"][i % 3]
        r = httpx.post(f"{live}/predict", files=[("files", (f"{c}.jpg", images[c], "image/jpeg"))], timeout=30)
        return c, r.status_code, r.json()["predictions"][0]["class"]

    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(one, range(24)))
    assert all(code == 200 and c == pred for c, code, pred in got), got
    sizes = httpx.get(f"{live}/metadata").json()["recent_batch_sizes"]
    assert sum(sizes) >= 24 and max(sizes) > 1, sizes  # 12 clients at once, 50 ms to gather: shared passes


def test_onnx_backend_answers_like_the_run(small_run, images, tmp_path):
    pytest.importorskip("onnxruntime")
    from imgclf.export import export

    res = export(small_run, tmp_path / "e", verify=False)
    with TestClient(create_app(res.path)) as c:
        _wait_ready(c.get)
        assert c.get("/metadata").json()["backend"] == "onnxruntime"
        p = c.post("/predict", files=[("files", ("g.jpg", images["green"], "image/jpeg"))]).json()["predictions"][0]
    from imgclf.classifier import Classifier

    want = Classifier(small_run).predict([images["green"]])[0]
    assert p["class"] == want["class"] and p["probability"] == pytest.approx(want["prob"], abs=1e-4)


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="no chromium here (CI installs it)")
def test_upload_page_in_headless_chromium(live, tmp_path):
    from playwright.sync_api import sync_playwright

    img = make_image(tmp_path / "a_red_one.png", COLORS["red"], size=(60, 60), seed=3, fmt="PNG")
    from conftest import chromium_page

    with sync_playwright() as p:
        browser, page = chromium_page(p, (900, 700))
        errors = page.errors
        page.goto(live + "/")
        page.wait_for_selector("#meta:has-text('3 classes')")
        page.set_input_files("#file", str(img))
        top = page.wait_for_selector("[data-testid=top-class]", timeout=30_000)
        cls, text = top.get_attribute("data-cls"), top.inner_text()
        bars = page.locator(".bar").count()
        page.screenshot(path=os.environ.get("IMGCLF_SHOT", str(tmp_path / "serve-page.png")))
        browser.close()
    assert errors == []
    assert cls == "red" and text.startswith("red ") and bars == 3


def test_cli_serve_refuses_what_it_cannot_serve(tmp_path):
    from imgclf.cli import main

    assert main(["serve", str(tmp_path)]) == 2
    assert main(["serve", str(tmp_path), "--views", "odd"]) == 2
