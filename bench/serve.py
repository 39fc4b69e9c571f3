"""Person-search serving at scale: exact cosine ranking vs the faiss IVF index of plip_jax.tools,
on random unit vectors with planted neighbours (no images), and the real server under load.

    python bench/serve.py [--n 1000000] [--dim 768] [--out bench/results/serve-DATE.json] [--smoke]

1. N random unit vectors of dimension D (768: PLIP's embedding); Q query vectors, each with 10
   planted neighbours at cosine U(--near) to it (same-person crops), placed at random rows of the
   first --min-size rows so every measured gallery size holds them; everything else is isotropic
   noise, the hardest case for a cell-based index (no clusters for k-means to find).
2. Exact top-10 of every query (ground truth), exact single-query latency (ExactIndex).
3. IVF build time and memory, then per nprobe: recall@10 against exact and single-query latency.
4. The crossover: exact vs IVF single-query p50 at smaller gallery sizes (prefixes of the data).
5. The real server (plip_jax.tools.serve_app under uvicorn, a random model with D-dimensional
   text embeddings) in a child process on 127.0.0.1, once with each index: --clients threads send
   text queries for at most --requests requests or --seconds seconds; queries/s and latency.

Writes one JSON document; the `uptime` load at the start is in it (`loaded` when above 1.5).
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU serving benchmark: no accelerator probing

TARGET_RECALL = 0.95
QUERIES = ["a woman in a red coat and black trousers", "a man with a blue backpack", "a man in a white shirt",
           "a girl with long hair wearing a yellow dress", "a person in a grey hoodie and jeans",
           "an old man with a walking stick", "a woman carrying a black handbag", "a boy in green shorts"]


def percentiles(ms: list[float]) -> dict:
    """p50 / p99 / mean of latencies in milliseconds."""
    a = np.asarray(ms, np.float64)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3), "count": int(a.size)}


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def make_data(n: int, dim: int, queries: int, min_size: int, near: tuple[float, float], seed: int):
    """(gallery (n, dim), queries (q, dim), planted rows (q, 10)): unit float32 rows."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for lo in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - lo), dim), dtype=np.float32)
        x[lo:lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = rng.choice(min_size, (queries, 10), replace=False) if queries * 10 <= min_size else None
    if rows is None:
        raise ValueError(f"--min-size {min_size} is too small for {queries} x 10 planted neighbours")
    for i in range(queries):
        noise = rng.standard_normal((10, dim), dtype=np.float32)
        noise -= np.outer(noise @ q[i], q[i])
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        cos = rng.uniform(*near, size=(10, 1)).astype(np.float32)
        x[rows[i]] = cos * q[i] + np.sqrt(1 - cos ** 2) * noise
    return x, q, rows


def exact_topk(x: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Ground truth: the exact top-k rows of every query (blockwise over the gallery)."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for lo in range(0, len(x), 131072):
        s = q @ x[lo:lo + 131072].T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.arange(lo, lo + s.shape[1])[None].repeat(len(q), 0)], axis=1)
        top = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    return best_i


def single_query(index, q: np.ndarray, k: int = 10, warmup: int = 3) -> tuple[dict, np.ndarray]:
    """Latency of one query at a time (p50/p99) and the returned indices."""
    for v in q[:warmup]:
        index.search(v, k)
    ms, out = [], []
    for v in q:
        t = time.perf_counter()
        idx, _ = index.search(v, k)
        ms.append((time.perf_counter() - t) * 1000)
        out.append(idx)
    return percentiles(ms), np.asarray(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def set_nprobe(index, nprobe: int) -> None:
    index.nprobe = index.index.nprobe = int(nprobe)


def crossing(sizes: list[dict], budget_ms: float) -> int | None:
    """The gallery size where exact p50 reaches `budget_ms` (log-log interpolation between sizes)."""
    pts = [(c["n"], c["exact"]["p50_ms"]) for c in sizes]
    if pts[0][1] >= budget_ms:
        return pts[0][0]
    for (n0, t0), (n1, t1) in zip(pts, pts[1:]):
        if t0 < budget_ms <= t1:
            f = (np.log(budget_ms) - np.log(t0)) / (np.log(t1) - np.log(t0))
            return int(round(float(np.exp(np.log(n0) + f * (np.log(n1) - np.log(n0)))), -3))
    return None


def encoder_latency(dim: int, q: np.ndarray, layers: int = 12) -> dict:
    """Single-caption text encoding p50/p99 of a BERT-base-shaped tower of width `dim` (random weights)."""
    model = random_model(dim, layers=layers)
    from plip_jax.tools.gallery_service import SearchService

    SearchService(model, ".", [], np.zeros((0, dim), np.float32), None, model_name="").warm_up()
    ms = []
    for i in range(max(20, min(60, len(q)))):
        t = time.perf_counter()
        model.encode_texts([QUERIES[i % len(QUERIES)]])
        ms.append((time.perf_counter() - t) * 1000)
    return {"layers": layers, "width": dim, **percentiles(ms)}


# ------------------------------------------------------------------------------------------ server
def random_model(dim: int, layers: int = 1):
    """A randomly initialised PLIP whose text and image embeddings are `dim`-dimensional (`layers`-layer BERT)."""
    import jax
    import jax.numpy as jnp

    from plip_jax.api import PLIPModel
    from plip_jax.models.bert import Bert, BertConfig
    from plip_jax.models.resnet import ModifiedResNet

    heads = dim // 64 if dim % 64 == 0 else 2
    img = dict(layers=[1, 1, 1, 1], width=8, heads=2, output_dim=dim, input_size=[64, 32], pool="max")
    tcfg = BertConfig(num_hidden_layers=layers, hidden_size=dim, num_attention_heads=heads, intermediate_size=4 * dim)
    k1, k2 = jax.random.split(jax.random.key(0))
    rn = ModifiedResNet(layers=(1, 1, 1, 1), width=8, heads=2, output_dim=dim, input_size=(64, 32), pool="max")
    iv = rn.init(k1, jnp.zeros((1, 64, 32, 3)))
    tv = Bert(tcfg).init(k2, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
    variables = {"params": {"image": iv["params"], "text": tv["params"]}, "batch_stats": {"image": iv["batch_stats"]}}
    return PLIPModel({"image": img, "text": tcfg.to_dict(), "recipe": "paper_v2", "max_length": 32}, variables)


def child(args) -> None:
    """The server process: the real app over the saved vectors with the named index, on port 0."""
    from plip_jax.tools.gallery_service import SearchService
    from plip_jax.tools.serve import listen, run_server
    from plip_jax.tools.serve_app import create_app
    from plip_jax.tools.vector_index import ExactIndex, IVFIndex

    x = np.load(args.vectors)
    paths = [f"person{i:07d}.jpg" for i in range(len(x))]
    index = ExactIndex(x) if args.child == "exact" else IVFIndex.load(Path(args.index_file), x, args.nprobe)
    model = random_model(x.shape[1])
    service = SearchService(model, tempfile.gettempdir(), paths, x, index, model_name="random-bench",
                            check_files=False)  # the paths name no files
    service.warm_up()
    sock = listen("127.0.0.1", 0)
    print(f"URL http://127.0.0.1:{sock.getsockname()[1]}/ RSS {rss_bytes()}", flush=True)
    run_server(create_app(service), sock)


def load_server(url: str, clients: int, max_requests: int, max_seconds: float) -> dict:
    """Concurrent text queries against a running server: bounded by count and time."""
    parsed = urllib.parse.urlparse(url)
    lock = threading.Lock()
    state = {"sent": 0, "errors": 0, "ms": []}
    deadline = time.perf_counter() + max_seconds

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        i = w
        while True:
            with lock:
                if state["sent"] >= max_requests or time.perf_counter() > deadline:
                    break
                state["sent"] += 1
            q = urllib.parse.quote(QUERIES[i % len(QUERIES)])
            i += clients
            t = time.perf_counter()
            try:
                conn.request("GET", f"/api/search?q={q}&k=10")
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200 and len(json.loads(body)["results"]) == 10
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
            with lock:
                state["ms"].append((time.perf_counter() - t) * 1000)
                state["errors"] += 0 if ok else 1
        conn.close()

    limit = max_requests
    max_requests = 2 * clients  # a warm-up round, not counted
    warm = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    max_requests = limit
    state.update(sent=0, errors=0, ms=[])
    deadline = time.perf_counter() + max_seconds
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(state["ms"]), "errors": state["errors"], "seconds": round(wall, 2),
            "queries_per_s": round(len(state["ms"]) / wall, 2), **percentiles(state["ms"])}


def serve_and_load(kind: str, vectors: Path, index_file: Path | None, args, nprobe: int) -> dict:
    """Start the child server with `kind`, load it, stop it; the numbers and the server's memory."""
    import psutil

    cmd = [sys.executable, __file__, "--child", kind, "--vectors", str(vectors)]
    if index_file is not None:
        cmd += ["--index-file", str(index_file), "--nprobe", str(nprobe)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        if not line.startswith("URL "):
            raise RuntimeError(f"server did not start: {line}{proc.stderr.read()[-3000:]}")
        url, ready_s = line.split()[1], time.perf_counter() - t0
        out = load_server(url, args.clients, args.requests, args.seconds)
        out.update(server_start_s=round(ready_s, 1), server_rss_bytes=int(psutil.Process(proc.pid).memory_info().rss))
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--near", default="0.5,0.9", help="cosine range of the planted neighbours")
    p.add_argument("--sizes", default="10000,30000,100000,300000", help="gallery sizes for the crossover")
    p.add_argument("--min-size", type=int, default=10000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    p.add_argument("--child", choices=("exact", "ivf"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--vectors", default=None, help=argparse.SUPPRESS)
    p.add_argument("--index-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--nprobe", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.smoke:
        args.n, args.dim, args.queries, args.sizes, args.min_size = 20_000, 64, 30, "2000,5000", 2000
        args.requests, args.seconds, args.clients = 40, 10.0, 4
    import faiss

    from plip_jax.tools import vector_index as vi

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load1 = os.getloadavg()[0]
    doc: dict = {"kind": "serve", "date": datetime.date.today().isoformat(), "smoke": args.smoke,
                 "uptime_at_start": uptime, "load1_at_start": round(load1, 2),
                 "loaded": load1 > 1.5, "note": "taken beside other work (load > 1.5)" if load1 > 1.5 else "alone",
                 "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "python": platform.python_version(), "faiss": faiss.__version__, "numpy": np.__version__,
                          "faiss_omp_threads": faiss.omp_get_max_threads()},
                 "config": {"n": args.n, "dim": args.dim, "queries": args.queries, "planted_per_query": 10,
                            "planted_cosine": args.near, "k": 10, "clients": args.clients,
                            "max_requests": args.requests, "max_seconds": args.seconds, "seed": args.seed,
                            "ivf": f"IVF<nlist>,SQ8 + exact re-scoring of max({vi.MIN_RERANK}, {vi.RERANK}k) "
                                   "candidates",
                            "exact": "plip_jax.evals.retrieval.similarity_topk (numpy matmul + stable top-k)"}}
    t_all = time.perf_counter()
    near = tuple(float(v) for v in args.near.split(","))
    t = time.perf_counter()
    x, q, _ = make_data(args.n, args.dim, args.queries, args.min_size, near, args.seed)
    doc["data_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    truth = exact_topk(x, q)
    doc["ground_truth_s"] = round(time.perf_counter() - t, 1)
    print(f"data {doc['data_s']} s, ground truth {doc['ground_truth_s']} s", flush=True)

    exact = vi.ExactIndex(x)
    lat, found = single_query(exact, q)
    doc["exact"] = {"latency": lat, "recall_at_10": recall(found, truth), "memory_bytes": int(x.nbytes)}
    print("exact", doc["exact"], flush=True)

    rss0 = rss_bytes()
    ivf = vi.IVFIndex.build(x)
    tmp = Path(tempfile.mkdtemp(prefix="plip_serve_bench_"))
    index_file = tmp / "gallery.ivf.faiss"
    ivf.save(index_file, {"digest": "bench"})
    doc["ivf_build"] = {"nlist": ivf.nlist, "nprobe_default": ivf.nprobe, "build_s": round(ivf.build_s, 1),
                        "index_file_bytes": index_file.stat().st_size, "rss_growth_bytes": rss_bytes() - rss0}
    print("ivf build", doc["ivf_build"], flush=True)
    sweep = []
    for frac in (64, 32, 16, 8, 4):
        set_nprobe(ivf, max(1, ivf.nlist // frac))
        lat, found = single_query(ivf, q)
        sweep.append({"probe_fraction": frac, "nprobe": ivf.nprobe, "latency": lat,
                      "recall_at_10": recall(found, truth)})
        print("ivf", sweep[-1], flush=True)
    good = [r for r in sweep if r["recall_at_10"] >= TARGET_RECALL]
    chosen = good[0] if good else sweep[-1]  # the fewest probes that reach the target
    doc["ivf"] = {"sweep": sweep, "target_recall_at_10": TARGET_RECALL, "chosen": chosen,
                  "probe_fraction_in_code": vi.PROBE_FRACTION}
    frac = chosen["probe_fraction"]
    set_nprobe(ivf, chosen["nprobe"])

    encode = encoder_latency(args.dim, q)
    cross = []
    for size in [int(s) for s in args.sizes.split(",")] + [args.n]:
        sub = x[:size]
        t_exact = doc["exact"]["latency"] if size == args.n else single_query(vi.ExactIndex(sub), q)[0]
        small = ivf if size == args.n else vi.IVFIndex.build(sub)
        set_nprobe(small, max(1, small.nlist // frac))
        t_ivf, found = single_query(small, q)
        cross.append({"n": size, "exact": t_exact, "ivf": t_ivf, "ivf_nlist": small.nlist, "ivf_nprobe": small.nprobe,
                      "ivf_recall_at_10": recall(found, truth if size == args.n else exact_topk(sub, q)),
                      "ivf_build_s": round(small.build_s, 2)})
        print("sizes", size, t_exact["p50_ms"], t_ivf["p50_ms"], cross[-1]["ivf_recall_at_10"], flush=True)
        del small
    faster = [c["n"] for c in cross if c["ivf"]["p50_ms"] < c["exact"]["p50_ms"]]
    doc["crossover"] = {
        "rule": "exact while its ranking p50 is below the p50 of encoding the text query with a BERT-base-shaped "
                "tower (PLIP's, random weights): past that size ranking dominates a query and the IVF index pays",
        "text_encoder": encode, "sizes": cross,
        "crossover_n": crossing(cross, encode["p50_ms"]),
        "first_size_where_ivf_p50_is_faster": faster[0] if faster else None,
        "exact_max_in_code": vi.EXACT_MAX}
    print("crossover", doc["crossover"]["crossover_n"], "encoder p50", encode["p50_ms"], flush=True)

    vectors = tmp / "vectors.npy"
    np.save(vectors, x)
    del exact
    doc["server"] = {}
    for kind in ("exact", "ivf"):
        doc["server"][kind] = serve_and_load(kind, vectors, index_file if kind == "ivf" else None, args,
                                             nprobe=ivf.nprobe)
        print("server", kind, doc["server"][kind], flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    doc["total_s"] = round(time.perf_counter() - t_all, 1)
    doc["uptime_at_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out or ROOT / "bench" / "results" / f"serve-{doc['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
