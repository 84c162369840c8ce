import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.lens import CLIPLensPipeline, parse_labels


@pytest.fixture()
def lens(tiny_scorer):
    return CLIPLensPipeline(tiny_scorer)


def _img(seed=0, size=40):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_parse_labels():
    assert parse_labels("cat, dog\nbird,, cat \n") == ["cat", "dog", "bird"]
    with pytest.raises(ValueError, match="`labels`"):
        parse_labels(" , \n ")


def test_classify_returns_all_labels_sorted_summing_to_one(lens):
    out = lens.classify(_img(), "a cat, a dog, a red circle, a car")
    assert sorted(out.labels) == sorted(["a cat", "a dog", "a red circle", "a car"])
    assert out.probs == sorted(out.probs, reverse=True)
    assert abs(sum(out.probs) - 1.0) < 1e-5
    # The order is the scorer's own ranking of the ensembled prompts.
    p = lens.scorer.rank(torch.from_numpy(np.asarray(_img(), dtype=np.float32) / 255).permute(2, 0, 1)[None],
                         out.labels, "curated")[0]
    assert torch.allclose(p, torch.tensor(out.probs), atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_classify_accepts_grayscale_rgba_palette(lens, mode):
    out = lens.classify(_img().convert(mode), "a, b")
    assert len(out.labels) == 2


def test_classify_bad_inputs(lens, tmp_path):
    with pytest.raises(ValueError, match="`labels`"):
        lens.classify(_img(), "")
    with pytest.raises(ValueError, match="`image` is missing"):
        lens.classify(None, "cat")
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="`image` could not be read"):
        lens.classify(str(bad), "cat")
    with pytest.raises(ValueError, match="at least 16"):
        lens.classify(Image.new("RGB", (1, 1)), "cat")


def test_search_and_arithmetic_rank_whole_gallery(lens):
    gallery = [_img(i) for i in range(4)]
    out = lens.search(gallery, "a cat")
    assert sorted(out.order) == [0, 1, 2, 3] and out.scores == sorted(out.scores, reverse=True)
    # The query image itself with a zero-weight edit is its own nearest neighbour.
    same = lens.arithmetic(gallery, gallery[2], minus="dog", plus="cat", weight=0.0)
    assert same.order[0] == 2 and abs(same.scores[0] - 100.0) < 1e-3
    moved = lens.arithmetic(gallery, gallery[2], minus="dog", plus="cat", weight=1.0)
    assert sorted(moved.order) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="`minus` and `plus`"):
        lens.arithmetic(gallery, gallery[0], "", " ")
    with pytest.raises(ValueError, match="`images`"):
        lens.search([], "cat")
    with pytest.raises(ValueError, match="`query`"):
        lens.search(gallery, "  ")
