"""CLIPDraw pipeline: input checks, determinism, options, streaming/stop, outputs; behaviour with the demo CLIP.

Tiny canvases and a handful of steps; the behavioural test judges the drawing with the pixel oracle
(`studio.demo.oracle`), which does not use CLIP.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pipelines.clipdraw import CLIPDrawConfig, CLIPDrawPipeline, parse_palette, random_strokes
from studio.demo.oracle import measure
from studio.render import from_svg

TINY = dict(num_strokes=6, num_steps=3, canvas_size=32, num_augs=2)



@pytest.fixture(scope="module")
def pipe(vit):
    return CLIPDrawPipeline(vit)


@pytest.mark.parametrize("kwargs, name", [
    (dict(prompt=""), "prompt"),
    (dict(prompt="   "), "prompt"),
    (dict(prompt=None), "prompt"),
    (dict(num_strokes=5000), "num_strokes"),
    (dict(num_strokes=-1), "num_strokes"),
    (dict(num_strokes=0), "num_strokes"),  # zero is only allowed when an SVG supplies paths
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=2.5), "num_steps"),
    (dict(canvas_size=8), "canvas_size"),
    (dict(canvas_size=100_000), "canvas_size"),
    (dict(max_stroke_width=0.5), "max_stroke_width"),
    (dict(colors="rainbow"), "colors"),
    (dict(colors=["#12345"]), "colors"),
    (dict(seed=-3), "seed"),
    (dict(negative_prompts=["ugly"], negative_weight=[0.3, 0.3]), "negative_weight"),
    (dict(init_svg="this is not an svg"), "init_svg"),
    (dict(init_svg="<svg xmlns='http://www.w3.org/2000/svg'><text>hi</text></svg>"), "init_svg"),
    (dict(filled="yes"), "filled"),
])
def test_bad_input_raises_naming_the_argument(pipe, kwargs, name):
    args = {"prompt": "a red circle", **TINY, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        pipe(**args)


def test_same_seed_same_svg_and_other_seed_differs(pipe):
    a = pipe("a red circle", seed=3, **TINY)
    b = pipe("a red circle", seed=3, **TINY)
    c = pipe("a red circle", seed=4, **TINY)
    assert a.svg == b.svg
    assert a.svg != c.svg
    assert a.seed == 3


def test_output_fields_and_files(pipe, tmp_path):
    out = pipe("a blue star", negative_prompts=["a badly drawn sketch"], preview_every=1, **TINY)
    assert out.image.size == (32, 32) and out.image.mode == "RGB"
    assert len(out.frames) == 2 + TINY["num_steps"]  # the start, one per preview, and the result
    assert np.array_equal(out.frames[-1], np.asarray(out.image))
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in out.frames)
    assert len(out.losses) == out.steps_run == TINY["num_steps"] and not out.stopped
    assert 0.0 <= out.scores["clip_score"] <= 100.0
    assert set(out.timings) >= {"setup_s", "optimise_s", "total_s", "per_step_s"}
    scene = from_svg(out.svg)  # the SVG reads back with every path
    assert scene.num_paths == TINY["num_strokes"] and (scene.width, scene.height) == (32, 32)
    paths = out.save(tmp_path, video="gif")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert paths["video"].suffix == ".gif"


def test_canvas_other_than_the_clip_input_size(pipe):
    out = pipe("a red circle", **{**TINY, "canvas_size": 48, "num_steps": 2})
    assert out.image.size == (48, 48)


def test_callback_streams_and_false_stops_early(pipe):
    seen = []

    def callback(step, total, preview):
        seen.append((step, total, preview.size))
        return False if step >= 2 else None

    out = pipe("a red circle", callback=callback, preview_every=1, **{**TINY, "num_steps": 6})
    assert seen == [(1, 6, (32, 32)), (2, 6, (32, 32))]
    assert out.stopped and out.steps_run == 2 and len(out.losses) == 2


def test_iterate_stop_returns_the_drawing_so_far(pipe):
    gen = pipe.iterate("a red circle", preview_every=1, **{**TINY, "num_steps": 5})
    first = next(gen)
    assert not first.done and first.step == 1
    out = gen.send("stop")
    assert out.done and out.stopped and out.steps_run == 1
    assert from_svg(out.svg).num_paths == TINY["num_strokes"]


def test_black_mode_and_palette_draw_only_those_colours(pipe):
    black = pipe("a cat", colors="black", **TINY)
    assert set(re.findall(r'stroke="(#[0-9a-f]{6})"', black.svg)) == {"#000000"}
    pal = ["#d62828", "#1d4ed8"]
    out = pipe("a cat", colors=pal, **TINY)
    assert set(re.findall(r'stroke="(#[0-9a-f]{6})"', out.svg)) <= set(pal)
    assert parse_palette("primary").shape == (4, 3) and parse_palette("full") is None


def test_filled_shapes_are_closed_and_filled(pipe):
    out = pipe("a red circle", filled=True, **TINY)
    scene = from_svg(out.svg)
    assert all(scene.topology.closed)
    assert scene.fill_colors is not None and scene.topology.filled is not None and all(scene.topology.filled)
    assert out.svg.count('fill="none"') == 0


def test_start_from_svg_keeps_its_paths_and_adds_new_ones(pipe):
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
           '<path d="M 8 8 L 56 56" stroke="#ff0000" stroke-width="4" fill="none"/>'
           '<circle cx="32" cy="32" r="10" stroke="#0000ff" fill="none"/></svg>')
    n_in = from_svg(svg).num_paths
    out = pipe("a red circle", init_svg=svg, **{**TINY, "num_strokes": 3})
    scene = from_svg(out.svg)
    assert scene.num_paths == n_in + 3
    # the SVG's line was scaled from 64 to the 32-pixel canvas and moved little in 3 steps of lr 1
    assert torch.allclose(scene.points[0, 0], torch.tensor([4.0, 4.0]), atol=4.0)
    only_svg = pipe("a red circle", init_svg=svg, **{**TINY, "num_strokes": 0})
    assert from_svg(only_svg.svg).num_paths == n_in


def test_lr_schedule_follows_the_notebook(pipe, monkeypatch):
    """Points lr 1.0, then 0.4 from 50 % and 0.1 from 75 % of the steps; widths 0.1 on diffvg's half-widths (0.2 on
    our full widths), colours 0.01."""
    seen = []
    orig = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    pipe("a red circle", **{**TINY, "num_steps": 8})
    assert [lrs[0] for lrs in seen] == [1.0] * 4 + [0.4] * 2 + [0.1] * 2
    assert seen[0][1:] == [0.2, 0.01]


def test_random_strokes_follow_the_notebook_walk():
    cfg = CLIPDrawConfig()
    topo, pts = random_strokes(200, 224, torch.Generator().manual_seed(0), cfg)
    assert set(topo.num_segments) == {1, 2, 3} and not any(topo.closed)
    assert pts.shape == (1, topo.num_points, 2)
    # consecutive points of one path differ by at most radius/2 of the canvas per axis
    start = 0
    for n in topo.points_per_path:
        d = (pts[0, start + 1:start + n] - pts[0, start:start + n - 1]).abs()
        assert float(d.max()) <= 0.5 * cfg.radius * 224 + 1e-4
        start += n


def test_red_prompt_draws_red_and_the_clip_loss_falls(demo_scorer):
    """With the demo CLIP, "a red scribble" turns random colourful strokes predominantly red (pixel oracle)."""
    pipe = CLIPDrawPipeline(demo_scorer)
    out = pipe("a red scribble", num_strokes=16, num_steps=100, canvas_size=64, seed=0)  # red 0.73-0.95, seeds 0-4
    m = measure(np.asarray(out.image))
    assert m.dominant_colour == "red", m.colour_fractions
    assert m.colour_fractions["red"] > 0.5, m.colour_fractions
    start = measure(out.frames[0])
    assert m.colour_fractions["red"] > start.colour_fractions.get("red", 0.0) + 0.2
    assert out.scores["clip_score"] > out.scores["clip_score_init"] + 5
    assert np.mean(out.losses[-10:]) < np.mean(out.losses[:10]) - 0.05


def test_the_result_is_the_lowest_loss_drawing_of_the_run_stopped_or_not(pipe):
    """Issue 11: CLIPDraw returned the last state, stopped or not; the result is the best so far."""
    out = pipe("a red circle", **{**TINY, "num_steps": 6})
    assert out.scores["loss"] <= min(out.losses) + 1e-9
    assert 0 <= out.scores["best_step"] <= 6
    gen = pipe.iterate("a red circle", **{**TINY, "num_steps": 6})
    assert [next(gen).step, gen.send(None).step, gen.send(None).step] == [1, 2, 3]
    stopped = gen.send("stop")
    assert stopped.stopped and stopped.steps_run == 3
    assert stopped.scores["loss"] <= min(stopped.losses) + 1e-9 and stopped.scores["best_step"] <= 3


def test_an_svg_with_a_clipping_viewport_starts_scaled_with_its_clip(pipe):
    """The SVG is drawn on the canvas as the same document at the canvas's size would be: its nested viewport's
    clip scales with it (the rescaling once moved points and gradients but left clip rectangles behind)."""
    from studio.render import render, to_image

    def doc(size: int) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 32 32">'
                '<rect width="32" height="32" fill="#ffffff"/>'
                '<svg x="4" y="4" width="12" height="12"><rect x="-8" y="-8" width="40" height="40" fill="#1d4ed8"/>'
                '</svg><path d="M 20 6 L 28 26" stroke="#d62828" stroke-width="2" fill="none"/></svg>')

    source = from_svg(doc(32))
    assert source.topology.groups and source.topology.groups[0][3] is not None  # the viewport clips
    out = pipe("a red circle", init_svg=doc(32), **{**TINY, "num_strokes": 0, "canvas_size": 64, "num_steps": 1})
    expected = to_image(render(from_svg(doc(64)))).detach()
    first = torch.from_numpy(out.frames[0]).permute(2, 0, 1)[None].float() / 255
    assert (first - expected).abs().amax(1).gt(0.05).float().mean() < 0.01


def test_strokes_start_at_the_notebooks_drawn_width(pipe):
    """The notebook's width 1 and clamp [1, 50] are diffvg half-widths: drawn 2 px wide, clamped to [2, 100] px, as
    here (our renderer's widths are full widths; issue 29). One step of lr 0.2 moves a width by about 0.2."""
    from pipelines.clipdraw import CLIPDrawConfig

    cfg = CLIPDrawConfig()
    assert (cfg.init_width, cfg.min_stroke_width, cfg.max_stroke_width, cfg.lr_widths) == (2.0, 2.0, 100.0, 0.2)
    out = pipe("a red circle", num_strokes=6, num_steps=1, canvas_size=32, num_augs=1)
    widths = from_svg(out.svg).widths
    assert widths.min() >= 2.0 - 1e-4 and widths.max() <= 2.0 + 0.2 + 1e-4


def test_the_demo_clip_names_the_prompt_words_it_does_not_know(demo_scorer, pipe):
    """Issue 29: with the demo CLIP "a cat on a sofa" scored above "a red circle"; the notice now says which words
    of a prompt it never saw (its training captions' vocabulary), and says nothing for a prompt in its vocabulary."""
    run = dict(num_strokes=2, num_steps=1, canvas_size=32, num_augs=1)
    cat = CLIPDrawPipeline(demo_scorer)("a cat on a sofa", **run)
    assert "does not know 'cat', 'sofa'" in cat.notice
    red = CLIPDrawPipeline(demo_scorer)("A red circle on the left", **run)
    assert "does not know" not in (red.notice or "")
    assert "does not know" not in (pipe("a cat on a sofa", **run).notice or "")  # not the demo model: no vocabulary
