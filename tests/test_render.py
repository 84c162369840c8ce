"""Renderer: geometry (areas), gradients against finite differences, fast path against the brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from studio.render import Path, Scene, Topology, render, render_one, to_image
from studio.render.diffvg_backend import _import_pydiffvg


def random_scene(seed: int, batch: int = 2, paths: int = 6, width: int = 37, height: int = 29, fills: bool = True,
                 dtype: torch.dtype = torch.float32, spread: float = 1.6) -> Scene:
    """Random open/closed, filled/unfilled paths; `spread` > 1 puts control points outside the canvas."""
    g = torch.Generator().manual_seed(seed)
    nseg = torch.randint(1, 4, (paths,), generator=g).tolist()
    closed = (torch.rand(paths, generator=g) < 0.4).tolist()
    filled = (torch.rand(paths, generator=g) < 0.6).tolist() if fills else None
    topo = Topology(nseg, closed, filled)
    size = torch.tensor([width, height], dtype=dtype)
    pts = ((torch.rand(batch, topo.num_points, 2, generator=g, dtype=dtype) - 0.5) * spread + 0.5) * size
    widths = 0.3 + 4 * torch.rand(batch, paths, generator=g, dtype=dtype)
    strokes = torch.rand(batch, paths, 4, generator=g, dtype=dtype)
    fill_colors = torch.rand(batch, paths, 4, generator=g, dtype=dtype) if fills else None
    return Scene(topo, pts, widths, strokes, fill_colors, width=width, height=height)


def alpha_sum(scene: Scene, **kw) -> float:
    return render(scene, **kw)[0, ..., 3].sum().item()


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("stroke_width", [1.0, 3.0, 6.5])
def test_straight_stroke_area_is_width_times_length(stroke_width):
    # a slanted line so no pixel-grid alignment helps; exact area of a round-capped stroke is w*L + pi*(w/2)^2
    a, b = (12.3, 20.7), (171.9, 61.2)
    scene = Scene.from_paths([Path([a, b], degrees=1, stroke_width=stroke_width)], 190, 80, background=None)
    length = math.dist(a, b)
    expected = stroke_width * length + math.pi * (stroke_width / 2) ** 2
    assert alpha_sum(scene) == pytest.approx(expected, rel=0.02)
    assert alpha_sum(scene) == pytest.approx(stroke_width * length, rel=0.02 + math.pi * stroke_width / 4 / length)


def test_filled_square_area():
    sq = [(10.25, 8.6), (50.25, 8.6), (50.25, 48.6), (10.25, 48.6)]
    scene = Scene.from_paths([Path(sq, degrees=1, closed=True, stroke_width=0.0, stroke=(0, 0, 0, 0),
                                   fill=(1, 0, 0, 1))], 64, 64, background=None)
    assert alpha_sum(scene) == pytest.approx(40 * 40, rel=0.005)


def test_four_cubic_circle_area():
    cx, cy, r, k = 40.3, 37.8, 25.0, 0.5522847498307936 * 25.0
    pts = [(cx + r, cy), (cx + r, cy + k), (cx + k, cy + r), (cx, cy + r), (cx - k, cy + r), (cx - r, cy + k),
           (cx - r, cy), (cx - r, cy - k), (cx - k, cy - r), (cx, cy - r), (cx + k, cy - r), (cx + r, cy - k)]
    scene = Scene.from_paths([Path(pts, closed=True, stroke_width=0.0, stroke=(0, 0, 0, 0), fill=(0, 0, 1, 1))],
                             80, 80, background=None)
    assert alpha_sum(scene) == pytest.approx(math.pi * r * r, rel=0.005)


def test_even_odd_leaves_the_pentagram_centre_empty():
    star = [(32 + 25 * math.sin(4 * math.pi * i / 5), 32 - 25 * math.cos(4 * math.pi * i / 5)) for i in range(5)]
    paths = [Path(star, degrees=1, closed=True, stroke_width=0.0, stroke=(0, 0, 0, 0), fill=(0, 0, 0, 1))]
    nonzero = render(Scene.from_paths(paths, 64, 64, background=None))
    evenodd = render(Scene.from_paths(paths, 64, 64, background=None, fill_rule="evenodd"))
    assert nonzero[0, 32, 32, 3] == 1 and evenodd[0, 32, 32, 3] == 0
    assert evenodd[0, 10, 32, 3] == nonzero[0, 10, 32, 3] == 1  # a point of the star is filled under both


def test_painters_order_and_fill_below_stroke():
    sq = lambda x, y: [(x, y), (x + 20, y), (x + 20, y + 20), (x, y + 20)]  # noqa: E731
    red, blue = (1, 0, 0, 1), (0, 0, 1, 1)
    paths = [Path(sq(5, 5), degrees=1, closed=True, stroke_width=0.0, stroke=(0, 0, 0, 0), fill=red),
             Path(sq(15, 15), degrees=1, closed=True, stroke_width=4.0, stroke=(0, 1, 0, 1), fill=blue)]
    img = render(Scene.from_paths(paths, 48, 48))[0]
    assert torch.equal(img[20, 20], torch.tensor([0.0, 0, 1, 1]))  # second square on top of the first
    assert torch.equal(img[15, 25], torch.tensor([0.0, 1, 0, 1]))  # its stroke on top of its own fill
    assert torch.equal(img[8, 8], torch.tensor([1.0, 0, 0, 1]))
    assert torch.equal(img[45, 45], torch.ones(4))  # white background


def test_transparent_background_and_to_image():
    scene = Scene.from_paths([Path([(4, 8), (28, 8)], degrees=1, stroke_width=4, stroke=(1, 0, 0, 0.5))], 32, 16,
                             background=None)
    img = render(scene)
    assert img[0, 0, 0].tolist() == [0, 0, 0, 0]
    assert img[0, 8, 16].tolist() == pytest.approx([0.5, 0, 0, 0.5])  # premultiplied
    rgb = to_image(img)
    assert rgb.shape == (1, 3, 16, 32)
    assert rgb[0, :, 8, 16].tolist() == pytest.approx([1.0, 0.5, 0.5])  # half red over white
    assert rgb[0, :, 0, 0].tolist() == [1, 1, 1]


# ---------------------------------------------------------------------------------------------- fast vs reference
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_reference(seed):
    scene = random_scene(seed)
    fast, ref = render(scene), render(scene, backend="reference")
    assert fast.shape == ref.shape == (2, 29, 37, 4)
    assert (fast - ref).abs().mean() <= 1e-4
    assert (fast - ref).abs().max() <= 1e-4  # same arithmetic per pixel, so far tighter than required


@pytest.mark.parametrize("fill_rule", ["nonzero", "evenodd"])
def test_fast_path_matches_reference_for_large_self_intersecting_fills(fill_rule):
    # few long cubics spanning the canvas: interior tiles, many crossings per row, edges leaving the canvas
    scene = random_scene(11, batch=2, paths=3, width=45, height=40, spread=1.3)
    scene.fill_rule = fill_rule
    scene.topology = Topology(scene.topology.num_segments, scene.topology.closed, (True, True, True))
    fast, ref = render(scene), render(scene, backend="reference")
    assert (fast - ref).abs().mean() <= 1e-4 and (fast - ref).abs().max() <= 1e-4


def test_fast_path_gradients_match_reference():
    scene = random_scene(3, batch=1).requires_grad_()
    weight = torch.rand(1, 29, 37, 4, generator=torch.Generator().manual_seed(0))
    grads = []
    for backend in ("torch", "reference"):
        (render(scene, backend=backend) * weight).sum().backward()
        grads.append([t.grad.clone() for t in scene.tensors()])
        for t in scene.tensors():
            t.grad = None
    for fast, ref in zip(*grads):
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tile,chunk", [(1, 1), (3, 5), (16, 8)])
def test_tiling_parameters_do_not_change_the_image(tile, chunk):
    scene = random_scene(4, batch=1)
    torch.testing.assert_close(render(scene, tile=tile, chunk=chunk), render(scene), atol=1e-5, rtol=0)


def test_batch_equals_single_renders():
    scene = random_scene(5, batch=3)
    batch = render(scene)
    for i in range(3):
        torch.testing.assert_close(batch[i], render_one(scene, i), atol=1e-6, rtol=0)


def test_everything_off_canvas_renders_background_with_zero_gradient():
    scene = Scene.from_paths([Path([(-50, -50), (-40, -60), (-30, -50), (-20, -60)], stroke_width=3)], 16, 16,
                             background=(0.2, 0.3, 0.4))
    scene.requires_grad_()
    img = render(scene)
    assert torch.equal(img, torch.tensor([0.2, 0.3, 0.4, 1.0]).expand(1, 16, 16, 4))
    img.sum().backward()
    assert scene.points.grad.abs().sum() == 0


def test_deterministic_on_cpu():
    scene = random_scene(6).requires_grad_()
    out = []
    for _ in range(2):
        img = render(scene)
        img.pow(2).sum().backward()
        out.append((img.detach(), scene.points.grad.clone()))
        scene.points.grad = None
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_gradients_match_finite_differences(backend):
    # central differences along random directions, per parameter tensor, in float64 (the loss is piecewise smooth;
    # a step of 1e-6 px stays inside one piece for these seeds)
    scene = random_scene(7, batch=1, paths=3, width=14, height=12, dtype=torch.float64, spread=1.2)
    weight = torch.rand(1, 12, 14, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    base = scene.detach()

    def loss(tensors):
        s = Scene(base.topology, *tensors, width=14, height=12, background=base.background)
        return (render(s, backend=backend) * weight).sum()

    tensors = [t.clone().requires_grad_() for t in base.tensors()]
    loss(tensors).backward()
    g = torch.Generator().manual_seed(2)
    for i, name in enumerate(["points", "widths", "stroke_colors", "fill_colors"]):
        for _ in range(2):
            u = torch.randn(tensors[i].shape, generator=g, dtype=torch.float64)
            with torch.no_grad():
                plus = [t + 1e-6 * u if j == i else t for j, t in enumerate(tensors)]
                minus = [t - 1e-6 * u if j == i else t for j, t in enumerate(tensors)]
                numeric = (loss(plus) - loss(minus)).item() / 2e-6
            analytic = (tensors[i].grad * u).sum().item()
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-6), name


def test_optimising_strokes_toward_a_target_reduces_the_loss():
    # the README example, shortened: one stroke learns the shape, width and colour of another
    target = to_image(render(Scene.from_paths([Path([(6, 24), (18, 4), (30, 44), (42, 24)], stroke_width=5,
                                                    stroke=(0.9, 0.1, 0.1, 1))], 48, 48)))
    scene = Scene.from_paths([Path([(10, 10), (20, 20), (30, 30), (40, 40)], stroke_width=2)], 48, 48)
    scene.requires_grad_()
    opt = torch.optim.Adam([{"params": [scene.points], "lr": 1.0},
                            {"params": [scene.widths, scene.stroke_colors], "lr": 0.05}])
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (to_image(render(scene)) - target).pow(2).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            scene.stroke_colors.clamp_(0, 1)
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    assert scene.stroke_colors[0, 0, 0] > 0.6 > scene.stroke_colors[0, 0, 1]  # it turned red


def test_gradients_reach_every_parameter():
    scene = random_scene(8, batch=2).requires_grad_()
    (render(scene) * torch.rand(2, 29, 37, 4)).sum().backward()
    for t in scene.tensors():
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments_raise_value_error():
    scene = random_scene(9, batch=1)
    with pytest.raises(ValueError, match="backend"):
        render(scene, backend="cairo")
    with pytest.raises(ValueError, match="tile"):
        render(scene, tile=0)
    with pytest.raises(ValueError, match="tolerance"):
        render(scene, tolerance=0)
    with pytest.raises(ValueError, match="points"):
        Scene(scene.topology, scene.points[:, :-1], scene.widths, scene.stroke_colors)
    with pytest.raises(ValueError, match="width"):
        Scene(scene.topology, scene.points, scene.widths, scene.stroke_colors, width=0)
    with pytest.raises(ValueError, match="filled"):
        Scene(Topology(scene.topology.num_segments, scene.topology.closed), scene.points, scene.widths,
              scene.stroke_colors, scene.stroke_colors)
    bad = scene.clone()
    bad.points[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        render(bad)
    with pytest.raises(ValueError, match="points"):
        Path([(0, 0), (1, 1), (2, 2)], degrees=3).cubic_points()


def test_diffvg_backend_without_pydiffvg_is_a_clear_error():
    try:
        _import_pydiffvg()
    except ValueError:
        pass
    else:
        pytest.skip("pydiffvg is installed; this checks the error shown without it")
    with pytest.raises(ValueError, match="pydiffvg"):
        render(random_scene(10, batch=1), backend="diffvg")
