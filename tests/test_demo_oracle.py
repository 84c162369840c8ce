"""The pixel oracle (studio.demo.oracle) on images whose content is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.demo.oracle import background_colour, centroid, edge_map, foreground_mask, measure, position_name
from studio.demo.shapes import make_sample


def _canvas(bg=(255, 255, 255)):
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[:] = bg
    return img


def test_red_square_on_the_left():
    img = _canvas()
    img[24:40, 6:22] = (220, 30, 30)  # 16x16 square, centre x = 14 / 64
    m = measure(img)
    assert m.dominant_colour == "red" and m.position == "left"
    assert m.foreground_fraction == pytest.approx(256 / 4096)
    assert m.centroid == pytest.approx((14 / 64, 32 / 64))
    assert m.bbox == pytest.approx((6 / 64, 24 / 64, 22 / 64, 40 / 64))
    assert np.allclose(m.background, 1.0)


def test_tensor_chw_float_input_and_dark_background():
    img = _canvas((10, 10, 10))
    img[44:60, 24:40] = (30, 80, 220)  # blue, bottom
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    m = measure(t)
    assert m.dominant_colour == "blue" and m.position == "bottom"
    assert background_colour(t) == pytest.approx(np.full(3, 10 / 255))


def test_thin_stroke_keeps_its_hue_and_black_strokes_are_black():
    img = _canvas()
    img[10:54, 31] = (255, 190, 190)  # a pale (half-mixed) red hairline
    assert measure(img).dominant_colour == "red"
    img = _canvas()
    img[10:54, 30:33] = (5, 5, 5)
    m = measure(img)
    assert m.dominant_colour == "black" and m.position == "centre"


def test_empty_canvas_and_edges():
    m = measure(_canvas())
    assert m.foreground_fraction == 0 and m.dominant_colour is None and m.centroid is None
    img = _canvas()
    img[20:44, 20:44] = (40, 165, 55)
    edges = edge_map(img)
    assert edges[20, 30] and edges[43, 30] and not edges[32, 32] and not edges[5, 5]
    assert foreground_mask(img).sum() == 24 * 24


def test_oracle_reads_synthetic_filled_shapes():
    """On filled shapes on white, the oracle's colour and position agree with the generator's labels."""
    n, right_colour, right_pos = 0, 0, 0
    seed = 0
    while n < 100:
        s = make_sample(3_000_000 + seed, two_object_prob=0.0, scribble_prob=0.0)
        seed += 1
        o = s.objects[0]
        if o.fill != "filled" or s.background != "white":
            continue
        m = measure(s.image)
        n += 1
        right_colour += m.dominant_colour == o.colour
        right_pos += m.position == o.position
    assert right_colour == n and right_pos >= 0.97 * n


def test_position_name_and_bad_inputs():
    assert [position_name(p) for p in [(0.1, 0.5), (0.9, 0.4), (0.5, 0.1), (0.45, 0.95), (0.55, 0.5)]] == [
        "left", "right", "top", "bottom", "centre"]
    assert centroid(np.zeros((4, 4), bool)) is None
    with pytest.raises(ValueError, match="image"):
        measure(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="image"):
        measure(np.full((8, 8, 3), 2.0))
    with pytest.raises(ValueError, match="threshold"):
        foreground_mask(_canvas(), threshold=0.0)


def test_shape_oracle_names_the_demo_shapes():
    """`shape_name` on one-shape demo images (seeds unseen by any training): every filled shape is named right,
    outlines mostly (hairline outlines of small shapes break up; measured 95% of all, 84% of small outlines)."""
    from studio.demo.oracle import shape_name, shape_scores

    filled, outlined = [], []
    for seed in range(2_100_000_000, 2_100_000_120):
        sample = make_sample(seed, two_object_prob=0, scribble_prob=0)
        obj = sample.objects[0]
        (filled if obj.fill == "filled" else outlined).append(shape_name(sample.image) == obj.kind)
    assert len(filled) > 40 and all(filled)
    assert np.mean(outlined) >= 0.85
    assert shape_name(_canvas()) is None and shape_scores(_canvas()) == {}
    img = _canvas()
    img[16:48, 16:48] = (35, 75, 215)
    scores = shape_scores(img)
    assert max(scores, key=scores.get) == "square" and scores["square"] > 0.95 > scores["circle"]
