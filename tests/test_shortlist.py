import numpy as np
import pandas as pd

from workflow.shortlist import build_shortlist, shortlist_recall, topk_inner_product


def test_topk_matches_brute_force():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 8)).astype(np.float32)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    idx, sim = topk_inner_product(q, g, 7)
    brute = np.argsort(-(q @ g.T), axis=1)[:, :7]
    assert (idx == brute).all()
    assert np.allclose(sim, np.take_along_axis(q @ g.T, brute, 1), atol=1e-5)


def test_gallery_shortlist_excludes_self_and_caps_k():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(4, 3)).astype(np.float32)
    idx, _ = topk_inner_product(g, g, 10, exclude_self=True)
    assert idx.shape == (4, 3)
    assert not (idx == np.arange(4)[:, None]).any()


def test_build_shortlist_and_recall():
    meta = pd.DataFrame(
        {
            "image_id": ["g1", "g2", "g3", "q1", "q2"],
            "identity": ["a", "b", "c", "", ""],
            "split": ["database"] * 3 + ["query"] * 2,
        }
    )
    emb = np.eye(5, 3, dtype=np.float32)
    emb[3] = [1, 0.1, 0]  # q1 closest to g1
    emb[4] = [0, 0, 1]  # q2 closest to g3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = build_shortlist(meta, meta["image_id"].to_numpy(), emb, k_query=1, k_gallery=2)
    q = pairs[pairs["kind"] == "query"]
    assert q.set_index("query")["candidate"].to_dict() == {"q1": "g1", "q2": "g3"}
    assert (pairs["kind"] == "gallery").sum() == 6
    solution = pd.DataFrame({"image_id": ["q1", "q2"], "identity": ["a", "b"], "new": ["False", "False"]})
    rec = shortlist_recall(pairs, meta, solution)
    assert rec == {"k": 1, "known_queries": 2, "recall": 0.5}


# -------------------------------------------------------------------------- faiss on the job's GPU (issue 10)


class FakeGpuFaiss:
    """A faiss with GPU symbols whose GPU index is a CPU one underneath (records where indexes were built)."""

    def __init__(self, gpus: int):
        import faiss

        self._faiss, self.gpus, self.built = faiss, gpus, []

    def get_num_gpus(self):
        return self.gpus

    class StandardGpuResources:
        pass

    class GpuIndexFlatConfig:
        device = -1

    def GpuIndexFlatIP(self, resources, dim, config):  # noqa: N802 - faiss's name
        assert isinstance(resources, FakeGpuFaiss.StandardGpuResources)
        self.built.append(f"gpu{config.device}")
        return self._faiss.IndexFlatIP(dim)

    def IndexFlatIP(self, dim):  # noqa: N802
        self.built.append("cpu")
        return self._faiss.IndexFlatIP(dim)


def test_faiss_falls_back_to_the_cpu_index_without_gpu_support(caplog):
    import faiss

    from workflow.faiss_search import flat_ip_index, gpu_available

    rng = np.random.default_rng(2)
    g, q = rng.normal(size=(30, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    assert not gpu_available(faiss), "this test machine's faiss is CPU-only"
    assert flat_ip_index(6, "cuda")[1] == "cpu"
    cpu = topk_inner_product(q, g, 5, device="cpu")
    with caplog.at_level("WARNING"):
        cuda = topk_inner_product(q, g, 5, device="cuda")
    assert "no GPU support (install faiss-gpu)" in caplog.text
    assert (cuda[0] == cpu[0]).all() and np.allclose(cuda[1], cpu[1])
    fake = FakeGpuFaiss(gpus=0)  # GPU symbols but no GPU visible: the CPU index
    topk_inner_product(q, g, 5, device="cuda", faiss=fake)
    assert fake.built == ["cpu"]


def test_faiss_uses_the_gpu_index_on_a_gpu_job():
    from workflow.faiss_search import flat_ip_index

    rng = np.random.default_rng(3)
    g, q = rng.normal(size=(30, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    fake = FakeGpuFaiss(gpus=1)
    assert flat_ip_index(6, "cuda:0", faiss=fake)[1] == "cuda:0"
    idx, sim = topk_inner_product(g, g, 3, exclude_self=True, device="auto", faiss=fake)
    ref = topk_inner_product(g, g, 3, exclude_self=True, device="cpu")
    assert (idx == ref[0]).all() and np.allclose(sim, ref[1])
    topk_inner_product(q, g, 3, device="cpu", faiss=fake)  # a CPU job never touches the GPU
    assert fake.built == ["gpu0", "gpu0", "cpu"]
