"""plip_jax.serve over HTTP: the real command on a free localhost port over procedural crops with a
tiny checkpoint (tests/conftest.py served_site; ranked by the IVF index, every list probed):
answers equal to the Python API's exact ranking, every bad input answered with its status and
message, no path outside the gallery ever served, concurrent requests each with their own answer,
a file that disappeared left out and said once, the process alive at the end; the command's faults
as one `error:` line."""
from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plip_jax.tools import search as S
from plip_jax.tools import serve as serve_cli
from plip_jax.tools.gallery_service import MAX_QUERY_CHARS, inside_only
from tests.fixtures.gallery import write_crop
from tests.fixtures.serving import N_CROPS, get_json, post_image, request


@pytest.fixture(scope="module")
def site(served_site):
    """(base URL, crops folder, server process, log folder): the session's server (tests/conftest.py)."""
    return served_site[:4]


@pytest.fixture(scope="module")
def model_dir(served_site) -> Path:
    return served_site[4]


@pytest.fixture(scope="module")
def local(model_dir, site):
    """The Python API's view of the same gallery: (model, gallery) from the server's cache."""
    from plip_jax.api import from_pretrained

    model = from_pretrained(model_dir)
    gallery, _ = inside_only(S.index_folder(model, site[1], progress=False))
    return model, gallery


def _exact(gallery, vec: np.ndarray, k: int, drop: str | None = None) -> list[tuple[str, float]]:
    vec = vec / np.linalg.norm(vec)
    sim = gallery.embeddings @ vec
    order = [int(i) for i in np.lexsort((np.arange(len(sim)), -sim)) if gallery.paths[i] != drop]
    return [(gallery.paths[i], float(sim[i])) for i in order[:k]]


def _pairs(answer: dict) -> list[tuple[str, float]]:
    assert [r["rank"] for r in answer["results"]] == list(range(1, len(answer["results"]) + 1))
    return [(r["path"], r["score"]) for r in answer["results"]]


def _same(got: list, want: list) -> None:
    assert [p for p, _ in got] == [p for p, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=2e-5)


def test_page_info_and_stored_ivf_index(site, model_dir):
    url, crops, _, logs = site
    status, headers, body = request(url, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'id="grid"' in body and b"/static/app.js" in body
    assert request(url, "GET", "/static/app.js")[0] == 200
    status, info = get_json(url, "/api/info")
    assert status == 200
    assert info["gallery_size"] == N_CROPS + 1 and info["skipped_at_indexing"] == 2  # notes.txt, escape.jpg
    assert info["index"] == "ivf" and info["model"] == "tiny-ckpt" and info["dim"] == 32
    stored = list((crops / S.CACHE_DIRNAME).glob("*.ivf.faiss"))
    assert len(stored) == 1 and stored[0].with_name(stored[0].name + ".json").is_file()
    assert "1 symlinks leaving the folder" in (logs / "serve.out").read_text()


def test_text_upload_and_gallery_queries_equal_the_exact_ranking(site, local):
    url, crops, _, _ = site
    model, gallery = local
    for q in ("a woman in a red coat", "a man with a black backpack and blue jeans"):
        status, answer = get_json(url, f"/api/search?q={urllib.parse.quote(q)}&k=7")
        assert status == 200 and answer["query"] == {"kind": "text", "text": q} and answer["ms"] > 0
        _same(_pairs(answer), _exact(gallery, model.encode_texts([q])[0], 7))

    status, answer = post_image(url, (crops / "p1" / "7.jpg").read_bytes(), k="5")
    assert status == 200 and answer["query"]["kind"] == "image"
    _same(_pairs(answer), _exact(gallery, model.encode_images([str(crops / "p1" / "7.jpg")])[0], 5))
    assert answer["results"][0]["path"] == "p1/7.jpg" and answer["results"][0]["score"] > 0.9999

    status, answer = get_json(url, "/api/search/gallery?path=p1/7.jpg&k=5")
    assert status == 200 and "p1/7.jpg" not in [r["path"] for r in answer["results"]]
    i = gallery.paths.index("p1/7.jpg")
    _same(_pairs(answer), _exact(gallery, gallery.embeddings[i], 5, drop="p1/7.jpg"))
    status, answer = get_json(url, "/api/search?q=anyone&k=100")
    assert status == 200 and len(answer["results"]) == N_CROPS + 1  # k above the gallery: all of it


@pytest.mark.parametrize("query, needle", [
    ("q=&k=5", "empty query"),
    ("q=%20%20%20", "empty query"),
    ("k=5", "empty query"),
    (f"q={'a' * (MAX_QUERY_CHARS + 1)}", "query too long"),
    ("q=a%20man&k=0", "k must be in [1, 100], got 0"),
    ("q=a%20man&k=101", "k must be in [1, 100], got 101"),
    ("q=a%20man&k=-3", "k must be in [1, 100], got -3"),
    ("q=a%20man&k=ten", "k must be an integer"),
    ("q=a%20man&k=2.5", "k must be an integer"),
])
def test_bad_text_queries_are_400_with_a_message(site, query, needle):
    status, answer = get_json(site[0], f"/api/search?{query}")
    assert status == 400 and needle in answer["detail"], answer


@pytest.mark.parametrize("target", [
    "/image/../outside/secret.jpg",
    "/image/p0/../../outside/secret.jpg",
    "/image/..%2Foutside%2Fsecret.jpg",
    "/image/%2e%2e/outside/secret.jpg",
    "/image//etc/passwd",
    "/image/%2Fetc%2Fpasswd",
    "/image/escape.jpg",            # a symlink leaving the folder
    "/image/notes.txt",             # in the folder, not an indexed image
    "/image/.plip_search",          # the cache folder
    "/image/p0/404.jpg",
    "/api/search/gallery?path=../outside/secret.jpg",
    "/api/search/gallery?path=escape.jpg",
])
def test_paths_outside_the_gallery_are_404_never_the_file(site, target):
    url, crops, _, _ = site
    secret = (crops.parent / "outside" / "secret.jpg").read_bytes()
    status, headers, body = request(url, "GET", target)
    assert status == 404, (target, status)
    assert headers["content-type"] == "application/json" and secret not in body
    assert "not a gallery image" in json.loads(body)["detail"] or "Not Found" in json.loads(body)["detail"]


def test_a_gallery_image_is_served(site):
    url, crops, _, _ = site
    status, headers, body = request(url, "GET", "/image/p2/8.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body == (crops / "p2" / "8.jpg").read_bytes()


def _png(width: int, height: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_bad_uploads_are_400_or_413_with_a_message(site):
    url, crops, _, _ = site
    jpeg = (crops / "p0" / "0.jpg").read_bytes()
    cases = [
        (post_image(url, b"this is plain text, not a picture"), 400, "not an image"),
        (post_image(url, b""), 400, "empty file"),
        (post_image(url, jpeg[:60]), 400, "not an image"),
        (post_image(url, jpeg[: len(jpeg) // 2]), 400, "not a readable image"),  # a truncated JPEG
        (post_image(url, jpeg, k="0"), 400, "k must be in"),
        (post_image(url, jpeg, k="many"), 400, "k must be an integer"),
        (post_image(url, _png(7000, 7000)), 413, "pixels"),          # a 49-megapixel PNG of a few KB
        (post_image(url, b"\xff" * (9 << 20)), 413, "upload too large"),
    ]
    for (status, answer), want_status, needle in cases:
        assert status == want_status and needle in answer["detail"], (want_status, needle, status, answer)

    from tests.fixtures.serving import multipart

    body, ctype = multipart({"k": "5"}, {"picture": ("a.jpg", jpeg)})
    status, _, out = request(url, "POST", "/api/search/image", body, {"Content-Type": ctype})
    assert status == 400 and "field named 'image'" in json.loads(out)["detail"]
    status, _, out = request(url, "POST", "/api/search/image", b'{"image": 1}', {"Content-Type": "application/json"})
    assert status == 400
    # A 64 MiB upload streamed without Content-Length is cut off at the limit, not read to its end.
    head, tail = body.split(jpeg)
    head = head.replace(b'name="picture"', b'name="image"')
    chunks = iter([head] + [b"\0" * (1 << 20)] * 64 + [tail])
    status, _, out = request(url, "POST", "/api/search/image", headers={"Content-Type": ctype}, chunks=chunks)
    assert status == 413 and "upload too large" in json.loads(out)["detail"]


def test_concurrent_requests_each_get_their_own_answer(site):
    url, crops, _, _ = site
    jobs = [("GET", f"/api/search?q={urllib.parse.quote(q)}&k=6") for q in
            ("a man in a red shirt", "a woman with long hair", "a child", "a person with a blue bag",
             "an old man in a grey coat", "a girl in a yellow dress")]
    jobs += [("GET", f"/api/search/gallery?path=p{i}/{i}.jpg&k=6") for i in range(4)]
    jobs += [("POST", f"p{i}/{i + 6}.jpg") for i in range(3)]

    def ask(job):
        method, target = job
        if method == "POST":
            return post_image(url, (crops / target).read_bytes(), k="6")
        return get_json(url, target)

    want = [ask(j) for j in jobs]
    assert all(s == 200 for s, _ in want)
    order = [i for _ in range(3) for i in range(len(jobs))]
    np.random.default_rng(0).shuffle(order)
    got: dict[int, list] = {}
    lock = threading.Lock()

    def worker(ids):
        for i in ids:
            status, answer = ask(jobs[i])
            with lock:
                got.setdefault(i, []).append((status, answer))

    threads = [threading.Thread(target=worker, args=(order[w::12],)) for w in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(v) for v in got.values()) == len(order)
    for i, answers in got.items():
        for status, answer in answers:
            assert status == 200 and answer["results"] == want[i][1]["results"]
            assert answer["query"] == want[i][1]["query"]


def test_a_file_that_disappeared_is_left_out_and_said_once(site):
    url, crops, proc, logs = site
    status, before = get_json(url, "/api/search/gallery?path=p3/3.jpg&k=4")
    assert before["results"][0]["path"] == "vanishing/gone.jpg"  # the same pixels as the query
    (crops / "vanishing" / "gone.jpg").unlink()
    status, after = get_json(url, "/api/search/gallery?path=p3/3.jpg&k=4")
    assert status == 200 and after["skipped"] == ["vanishing/gone.jpg"]
    paths = [r["path"] for r in after["results"]]
    assert len(paths) == 4 and "vanishing/gone.jpg" not in paths
    assert paths[:3] == [r["path"] for r in before["results"][1:]]  # the next-ranked crop takes its place
    status, again = get_json(url, "/api/search/gallery?path=p3/3.jpg&k=4")
    assert "skipped" not in again and again["results"] == after["results"]
    assert request(url, "GET", "/image/vanishing/gone.jpg")[0] == 404
    assert get_json(url, "/api/info")[1]["missing"] == 1
    log = (logs / "serve.err").read_text()
    assert log.count("vanishing/gone.jpg disappeared since indexing") == 1, log[-2000:]


def test_the_server_is_alive_after_every_bad_request(site):
    url, _, proc, logs = site
    assert proc.poll() is None
    assert get_json(url, "/api/info")[0] == 200
    assert request(url, "GET", "/no/such/page")[0] == 404
    assert "Traceback" not in (logs / "serve.err").read_text()


# ------------------------------------------------------------------------------------------ command
def test_command_faults_are_one_error_line(model_dir, tmp_path, capsys):
    crops = tmp_path / "crops"
    write_crop(crops / "a.jpg", 0)
    (crops / "empty").mkdir()
    (crops / "empty" / "notes.txt").write_text("no image here")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    cases = [
        (["--checkpoint", str(model_dir), "--images", str(crops), "--port", port], "cannot listen on 127.0.0.1"),
        (["--checkpoint", str(model_dir), "--images", str(tmp_path / "nope"), "--port", "0"], "not a directory"),
        (["--checkpoint", str(tmp_path / "nope"), "--images", str(crops), "--port", "0"], "cannot load --checkpoint"),
        (["--checkpoint", str(model_dir), "--images", str(crops), "--port", "70000"], "--port must be in"),
        (["--checkpoint", str(model_dir), "--images", str(crops), "--prot", "80"], "did you mean --port?"),
        (["--checkpoint", str(model_dir), "--images", str(crops / "empty"), "--port", "0", "--no-progress"],
         "no readable images"),
        (["--checkpoint", str(model_dir), "--images", str(crops), "--host", "192.0.2.1", "--port", "0"],
         "cannot listen on 192.0.2.1"),  # an address of no interface here (TEST-NET-1): bind fails, nothing is sent
    ]
    try:
        for argv, needle in cases:
            assert serve_cli.cli(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1, err
    finally:
        taken.close()
