"""Synthetic shapes data (studio.demo.shapes): determinism, captions, and the caption-truth matrix."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest

from studio.demo import shapes
from studio.demo.shapes import COLOUR_NAMES, caption_matches, make_batch, make_sample


def test_same_seed_same_sample_and_seeds_differ():
    a, b = make_sample(123), make_sample(123)
    assert np.array_equal(a.image, b.image) and a.caption == b.caption and a.objects == b.objects
    imgs, caps, _ = make_batch(range(40))
    assert imgs.shape == (40, 64, 64, 3) and imgs.dtype == np.uint8
    assert len({c for c in caps}) > 20  # varied captions
    assert len({im.tobytes() for im in imgs}) == 40


def test_attributes_cover_the_vocabulary():
    _, _, samples = make_batch(range(600))
    objs = [o for s in samples for o in s.objects]
    assert {o.colour for o in objs} == set(COLOUR_NAMES)
    assert {o.kind for o in objs} == set(shapes.KINDS)
    assert {o.position for o in objs} == set(shapes.POSITIONS)
    assert {o.fill for o in objs} == set(shapes.FILLS)
    assert {len(s.objects) for s in samples} == {1, 2}
    assert sum(s.background == "white" for s in samples) > 200  # CLIPDraw's canvas is white: keep it common


def test_captions_name_what_is_drawn_and_fit_the_context():
    _, caps, samples = make_batch(range(400))
    for cap, s in zip(caps, samples):
        for o in s.objects:
            if s.query[0, 1] != -1 or len(s.objects) == 2:
                assert o.colour in cap or len(s.objects) == 1
        named = [c for c in COLOUR_NAMES if f"{c} " in cap and f"{c} background" not in cap]
        assert set(named) <= {o.colour for o in s.objects}, cap
    # the demo CLIP's context is 32 tokens: every caption must end (EOT) inside it
    tokens = open_clip.tokenize(caps, context_length=77)
    assert int((tokens != 0).sum(1).max()) <= 32


def test_caption_matches_colour_only_captions():
    _, _, samples = make_batch(range(256))
    m = caption_matches(samples)
    assert m.shape == (256, 256) and m.diagonal().all()
    colour_only = [j for j, s in enumerate(samples)
                   if (s.query[0] == [-1, s.query[0, 1], -1, -1, -1]).all() and s.query[0, 1] >= 0
                   and s.query[1, 1] == -1 and s.query_background == -1]
    assert colour_only
    for j in colour_only:
        colour = COLOUR_NAMES[samples[j].query[0, 1]]
        expect = np.array([len(s.objects) == 1 and s.objects[0].colour == colour for s in samples])
        assert np.array_equal(m[:, j], expect)


def test_eval_mode_is_one_shape():
    s = make_sample(7, two_object_prob=0.0, scribble_prob=0.0)
    assert len(s.objects) == 1 and s.objects[0].kind in shapes.SHAPES


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"seed": 1, "image_size": 4}, {"seed": 1, "two_object_prob": 2.0},
                                    {"seed": 1, "scribble_prob": -0.1}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make_sample(**kwargs)


def test_swap_shape_makes_false_captions_one_word_away():
    _, _, samples = make_batch(range(200))
    rng = np.random.default_rng(0)
    swapped = 0
    for s in samples:
        neg = shapes.swap_shape(s, rng)
        if neg is None:
            assert not any(w in s.caption.split() for w in shapes.SHAPES)
            continue
        swapped += 1
        text, query, bg = neg
        diff = [(a, b) for a, b in zip(s.caption.split(), text.split()) if a != b]
        assert len(diff) == 1 and diff[0][0] in shapes.SHAPES and diff[0][1] in shapes.SHAPES
        assert not caption_matches([s], [(query, bg)])[0, 0]  # false of its own image
    assert swapped > 150
