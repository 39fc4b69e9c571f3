"""plip_jax.tools.vector_index: the IVF path equals the exact path where it is exhaustive (every list
probed), finds planted neighbours with few probes, is stored beside the embedding cache and rebuilt
when the embeddings change; auto picks exact up to the crossover."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plip_jax.tools import vector_index as vi


def _unit(rng, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivf_equals_exact_when_every_list_is_probed():
    rng = np.random.default_rng(0)
    x, q = _unit(rng, 3000, 32), _unit(rng, 25, 32)
    exact = vi.ExactIndex(x)
    ivf = vi.IVFIndex.build(x, nlist=16, nprobe=16)
    for k in (1, 10, 40):
        for v in q:
            (ei, es), (ai, as_) = exact.search(v, k), ivf.search(v, k)
            np.testing.assert_array_equal(ai, ei)
            np.testing.assert_allclose(as_, es, rtol=0, atol=1e-6)
    assert len(ivf.search(q[0], 5000)[0]) == 3000  # k past the gallery: all of it


def test_ivf_finds_planted_neighbours_with_few_probes():
    rng = np.random.default_rng(1)
    x, q = _unit(rng, 20000, 64), _unit(rng, 20, 64)
    for i, v in enumerate(q):  # 10 neighbours per query at cosine 0.7-0.95, the rest noise
        noise = _unit(rng, 10, 64)
        noise -= np.outer(noise @ v, v)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        cos = rng.uniform(0.7, 0.95, (10, 1)).astype(np.float32)
        x[i * 10:(i + 1) * 10] = cos * v + np.sqrt(1 - cos ** 2) * noise
    ivf = vi.IVFIndex.build(x)
    assert ivf.nprobe == ivf.nlist // vi.PROBE_FRACTION < ivf.nlist
    found = [set(ivf.search(v, 10)[0].tolist()) for v in q]
    assert np.mean([len(f & set(range(i * 10, i * 10 + 10))) / 10 for i, f in enumerate(found)]) >= 0.95


def test_index_is_stored_beside_the_cache_and_rebuilt_when_the_embeddings_change(tmp_path: Path):
    rng = np.random.default_rng(2)
    x = _unit(rng, 500, 16)
    paths = [f"p/{i}.jpg" for i in range(len(x))]
    cache = tmp_path / ".plip_search" / "abc.npz"
    cache.parent.mkdir()
    cache.write_bytes(b"embedding cache")
    said: list[str] = []

    first = vi.open_index(x, paths, "ivf", cache_file=cache, log=said.append)
    stored = vi.index_path(cache)
    assert stored == tmp_path / ".plip_search" / "abc.ivf.faiss" and stored.is_file()
    assert isinstance(first, vi.IVFIndex) and said[0].startswith("building")

    again = vi.open_index(x, paths, "ivf", cache_file=cache, log=said.append)
    assert said[-1].startswith("loaded") and again.nprobe == first.nprobe
    v = x[7]
    np.testing.assert_array_equal(again.search(v, 5)[0], first.search(v, 5)[0])

    changed = x.copy()
    changed[3] = x[4]
    said.clear()
    vi.open_index(changed, paths, "ivf", cache_file=cache, log=said.append)
    assert "stale" in said[0] and said[1].startswith("building")
    said.clear()
    vi.open_index(x, paths[::-1], "ivf", cache_file=cache, log=said.append)  # same vectors, other files
    assert "stale" in said[0]

    stored.write_bytes(b"garbage")
    said.clear()
    vi.open_index(x, paths[::-1], "ivf", cache_file=cache, log=said.append)
    assert said[0].startswith("warning: ignoring unreadable IVF index")
    assert vi.open_index(x, paths[::-1], "ivf", cache_file=cache, log=said.append).kind == "ivf"
    assert said[-1].startswith("loaded")

    cache.unlink()  # no embedding cache: nothing is stored (and nothing stale is read)
    stored.unlink()
    vi.open_index(x, paths, "ivf", cache_file=cache, log=said.append)
    assert not stored.exists()


@pytest.mark.parametrize("kind, n, want", [("auto", vi.EXACT_MAX, "exact"), ("auto", vi.EXACT_MAX + 1, "ivf"),
                                           ("exact", 10**7, "exact"), ("ivf", 10, "ivf")])
def test_auto_is_exact_up_to_the_crossover(kind, n, want):
    assert vi.choose_kind(kind, n) == want
    with pytest.raises(ValueError, match="unknown index kind"):
        vi.choose_kind("hnsw", n)
