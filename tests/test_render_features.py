"""Renderer features of issue 14: caps, joins, dashes, compound paths with per-path fill rules, gradient paints.

Each feature is drawn by us and, from the SVG `to_svg` writes for the same scene, by resvg (an independent
renderer), and compared pixel by pixel at the document's size: the fraction of pixels whose colour differs by more
than `TOL` (on any channel) must stay under `MAX_FRACTION` (antialiasing along edges differs by less than that;
a cap, join, dash or hole drawn differently changes whole runs of pixels). Exact areas, the fast path against
the brute-force reference, and gradients against finite differences complete the checks.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from studio.render import Gradient, Path, PathStyle, Scene, Subpath, Topology, from_svg, render, to_svg

resvg_py = pytest.importorskip("resvg_py")

TOL = 0.25  # a pixel "differs" when one channel differs by more than a quarter of the range
MAX_FRACTION = 0.01  # ... and at most 1 % of the pixels may differ


def resvg(svg: str) -> np.ndarray:
    png = resvg_py.svg_to_bytes(svg_string=svg)
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGBA")).astype(np.float32) / 255


def differing_fraction(scene: Scene) -> float:
    ref = resvg(to_svg(scene))[..., :3]
    ours = render(scene)[0].detach().numpy()[..., :3]
    assert ref.shape == ours.shape == (scene.height, scene.width, 3)
    return float((np.abs(ref - ours).max(-1) > TOL).mean())


def circle(cx: float, cy: float, r: float, reverse: bool = False) -> list[tuple[float, float]]:
    k = 0.5522847498307936 * r
    pts = [(cx + r, cy), (cx + r, cy + k), (cx + k, cy + r), (cx, cy + r), (cx - k, cy + r), (cx - r, cy + k),
           (cx - r, cy), (cx - r, cy - k), (cx - k, cy - r), (cx, cy - r), (cx + k, cy - r), (cx + r, cy - k)]
    return [pts[0]] + pts[1:][::-1] if reverse else pts


ZIGZAG = [(10, 50), (30, 15), (50, 50), (70, 12), (90, 48)]
WAVE = [(10, 62), (40, 75), (60, 55), (90, 70)]


def drawn_fraction(scene: Scene) -> float:
    return float((render(scene)[0, ..., :3] < 0.9).any(-1).float().mean())


# ---------------------------------------------------------------------------------------------- caps and joins
@pytest.mark.parametrize("cap", ["butt", "round", "square"])
@pytest.mark.parametrize("join", ["miter", "round", "bevel"])
def test_caps_and_joins_match_resvg(cap, join):
    scene = Scene.from_paths([
        Path(ZIGZAG, degrees=1, stroke_width=9, cap=cap, join=join, stroke=(0.1, 0.2, 0.8, 1)),
        Path(WAVE, stroke_width=6, cap=cap, join=join, stroke=(0.8, 0.2, 0.1, 0.7)),
        Path([(15, 8), (85, 8), (85, 30), (15, 30)], degrees=1, closed=True, stroke_width=4, cap=cap, join=join,
             stroke=(0, 0.5, 0, 1)),
    ], 100, 80)
    assert drawn_fraction(scene) > 0.1
    assert differing_fraction(scene) < MAX_FRACTION


def test_cap_and_join_styles_change_the_drawing():
    """Each style draws its own shape: the tests above could not pass with one style drawn for all."""
    def img(**kw):
        return render(Scene.from_paths([Path(ZIGZAG, degrees=1, stroke_width=9, **kw)], 100, 80))[0]

    base = img(cap="butt", join="miter")
    for kw in ({"cap": "round", "join": "miter"}, {"cap": "square", "join": "miter"},
               {"cap": "butt", "join": "round"}, {"cap": "butt", "join": "bevel"}):
        assert (img(**kw) - base).abs().amax(-1).gt(0.5).sum() >= 8, kw


def test_miter_limit_turns_sharp_miters_into_bevels():
    sharp = [(10, 70), (50, 10), (90, 70)]  # about 67 degrees between the segments: miter ratio 1.8

    def scene(limit):
        return Scene.from_paths([Path(sharp, degrees=1, stroke_width=10, cap="butt", join="miter",
                                      miter_limit=limit)], 100, 80)

    tip = render(scene(4.0))[0, 3, 50, 0]  # the miter tip above the apex
    assert tip < 0.1 and render(scene(1.5))[0, 3, 50, 0] == 1.0  # white there once the limit bevels it
    bevel = render(Scene.from_paths([Path(sharp, degrees=1, stroke_width=10, cap="butt", join="bevel")], 100, 80))
    torch.testing.assert_close(render(scene(1.5)), bevel)
    for limit in (1.5, 4.0):
        assert differing_fraction(scene(limit)) < MAX_FRACTION


def test_butt_and_square_cap_areas_are_exact():
    a, b, w = (12.3, 20.7), (171.9, 61.2), 6.0
    length = math.dist(a, b)
    for cap, extra in (("butt", 0.0), ("square", w)):
        scene = Scene.from_paths([Path([a, b], degrees=1, stroke_width=w, cap=cap)], 190, 80, background=None)
        assert render(scene)[0, ..., 3].sum().item() == pytest.approx(w * (length + extra), rel=0.003), cap


# ---------------------------------------------------------------------------------------------- dashes
@pytest.mark.parametrize("cap", ["butt", "round", "square"])
def test_dashes_match_resvg(cap):
    scene = Scene.from_paths([
        Path(ZIGZAG, degrees=1, stroke_width=5, cap=cap, join="miter", dash=(8, 4), dash_offset=3,
             stroke=(0.1, 0.2, 0.8, 1)),
        # zero-length dashes draw dots with round caps (resvg aligns square ones with the axes, we with the path)
        Path(WAVE, stroke_width=4, cap=cap, dash=(0 if cap == "round" else 0.5, 7), stroke=(0.8, 0.2, 0.1, 1)),
        Path([(10, 76), (90, 78)], degrees=1, stroke_width=3, cap=cap, dash=(5, 6, 2), dash_offset=-4,
             stroke=(0, 0.5, 0, 1)),  # odd count: repeated (5 6 2 5 6 2); negative offset
        Path(circle(50, 35, 9), closed=True, stroke_width=2.5, cap=cap, dash=(3, 2), stroke=(0.5, 0, 0.5, 1)),
    ], 100, 84)
    assert drawn_fraction(scene) > 0.05
    assert differing_fraction(scene) < MAX_FRACTION


def test_dashed_butt_stroke_area_is_the_dashes_length():
    # a 160 px line, pattern 10 on 6 off from offset 4: dashes cover [0,6], [12,22], ... clipped to the line
    a, b, w = (10.0, 20.5), (170.0, 20.5), 4.0
    on = sum(max(0.0, min(s + 10, 160) - max(s, 0)) for s in range(-4, 170, 16))
    scene = Scene.from_paths([Path([a, b], degrees=1, stroke_width=w, cap="butt", dash=(10, 6), dash_offset=4)],
                             180, 40, background=None)
    assert render(scene)[0, ..., 3].sum().item() == pytest.approx(w * on, rel=1e-3)
    # the offset moves the dashes: the first pixel column is off with offset 12 (4 px into the gap)
    shifted = Scene.from_paths([Path([a, b], degrees=1, stroke_width=w, cap="butt", dash=(10, 6), dash_offset=12)],
                               180, 40, background=None)
    assert render(scene)[0, 20, 11, 3] == 1 and render(shifted)[0, 20, 11, 3] == 0


# ---------------------------------------------------------------------------------------------- compound paths
@pytest.mark.parametrize("rule,reverse", [("nonzero", True), ("evenodd", False), ("evenodd", True)])
def test_a_subpath_cuts_a_hole(rule, reverse):
    ring = Path(circle(40, 40, 30), closed=True, subpaths=[Subpath(circle(40, 40, 15, reverse), closed=True)],
                fill=(0.9, 0.5, 0.1, 1), stroke_width=0, stroke=(0, 0, 0, 0), fill_rule=rule)
    scene = Scene.from_paths([ring], 80, 80, background=None)
    assert scene.num_paths == 1 and scene.topology.num_subpaths == 2
    img = render(scene)[0]
    assert img[40, 40, 3] == 0 and img[40, 62, 3] == 1  # the centre is a hole, the ring is filled
    assert img[..., 3].sum().item() == pytest.approx(math.pi * (30 ** 2 - 15 ** 2), rel=0.005)
    scene.background = (1.0, 1.0, 1.0, 1.0)
    assert differing_fraction(scene) < MAX_FRACTION


def test_nonzero_fills_a_same_direction_inner_subpath():
    disc = Path(circle(40, 40, 30), closed=True, subpaths=[Subpath(circle(40, 40, 15), closed=True)],
                fill=(0, 0, 0, 1), stroke_width=0, stroke=(0, 0, 0, 0), fill_rule="nonzero")
    img = render(Scene.from_paths([disc], 80, 80, background=None))[0]
    assert img[40, 40, 3] == 1


def test_fill_rule_is_per_path():
    star = [(25 + 20 * math.sin(4 * math.pi * i / 5), 25 - 20 * math.cos(4 * math.pi * i / 5)) for i in range(5)]
    moved = [(x + 50, y) for x, y in star]
    paths = [Path(star, degrees=1, closed=True, fill=(0, 0, 0.8, 1), stroke_width=1.5, cap="butt", join="miter",
                  fill_rule="evenodd"),
             Path(moved, degrees=1, closed=True, fill=(0, 0.6, 0, 1), stroke_width=1.5, cap="butt", join="miter",
                  fill_rule="nonzero")]
    scene = Scene.from_paths(paths, 100, 50)
    img = render(scene)[0]
    assert img[25, 25].tolist() == [1, 1, 1, 1] and img[25, 75].tolist() == pytest.approx([0, 0.6, 0, 1])
    assert differing_fraction(scene) < MAX_FRACTION


def _box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _rotated(pts, angle: float, cx: float = 32, cy: float = 32) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy)) for x, y in pts]


SEAMS = {  # one filled path whose subpaths share or overlap an edge: fill on both sides of it, so no seam
    "abutting halves": [_box(8.3, 8.3, 30.7, 52.6), _box(30.7, 8.3, 55.2, 52.6)],
    "overlapping, same direction": [_box(8.3, 8.3, 36.7, 52.6), _box(24.2, 8.3, 55.2, 52.6)],
    "slanted abutting halves": [_rotated(_box(12.3, 12.3, 32.4, 51.6), 0.37),
                                _rotated(_box(32.4, 12.3, 51.2, 51.6), 0.37)],
    "four quarters": [_box(8.6, 8.6, 31.3, 31.3), _box(31.3, 8.6, 55.4, 31.3), _box(8.6, 31.3, 31.3, 55.4),
                      _box(31.3, 31.3, 55.4, 55.4)],
}


@pytest.mark.parametrize("name", sorted(SEAMS))
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_shared_edges_inside_one_fill_draw_no_seam(name, backend):
    """Issue 26: the edge between two pieces of one fill has fill on both sides, so it is no boundary: no pixel
    inside the union is lighter than the fill (the old nearest-edge coverage drew a one-pixel line there)."""
    first, *rest = SEAMS[name]
    path = Path(first, degrees=1, closed=True, subpaths=[Subpath(p, 1, True) for p in rest], fill=(0, 0, 0, 1),
                stroke_width=0, stroke=(0, 0, 0, 0))
    whole = Path([(x, y) for x, y in _union_outline(name)], degrees=1, closed=True, fill=(0, 0, 0, 1),
                 stroke_width=0, stroke=(0, 0, 0, 0))
    alpha = render(Scene.from_paths([path], 64, 64, background=None), backend=backend)[0, ..., 3]
    solid = render(Scene.from_paths([whole], 64, 64, background=None), backend=backend)[0, ..., 3]
    interior = solid == 1  # every pixel the single outline covers fully (to float rounding of coincident edges)
    assert interior.sum() > 1000 and float(alpha[interior].min()) > 1 - 1e-5
    # only the few pixels where a shared edge meets the outline may differ (by the corner's share of a pixel)
    assert (alpha - solid).abs().max() < 0.5 and int(((alpha - solid).abs() > 1e-4).sum()) <= 8
    assert float(alpha.sum()) == pytest.approx(float(solid.sum()), abs=1.5)
    scene = Scene.from_paths([path], 64, 64)
    assert differing_fraction(scene) < MAX_FRACTION


def _union_outline(name: str) -> list[tuple[float, float]]:
    return {"abutting halves": _box(8.3, 8.3, 55.2, 52.6), "overlapping, same direction": _box(8.3, 8.3, 55.2, 52.6),
            "slanted abutting halves": _rotated(_box(12.3, 12.3, 51.2, 51.6), 0.37),
            "four quarters": _box(8.6, 8.6, 55.4, 55.4)}[name]


def test_seam_free_fills_keep_their_gradients():
    """Gradients of a fill whose pieces overlap (an edge inside the fill) and leave a thin gap (two boundaries
    inside one pixel's filter) against finite differences, both backends. (Exactly abutting pieces are a kink of
    the image as a function of the points: moving one edge apart opens a gap, moving it over changes nothing.)"""
    pieces = [_rotated(_box(10.3, 6.2, 16.4, 17.6), 0.2, 12, 12), _rotated(_box(15.1, 7.9, 21.1, 15.3), 0.2, 12, 12),
              _box(2.2, 3.17, 9.9, 20.4)]  # the third is 0.4 px from the first: a gap thinner than a pixel
    path = Path(pieces[0], degrees=1, closed=True, subpaths=[Subpath(p, 1, True) for p in pieces[1:]],
                fill=(0.2, 0.4, 0.9, 1), stroke_width=0, stroke=(0, 0, 0, 0))
    scene = Scene.from_paths([path], 24, 24, dtype=torch.float64)
    for backend in ("torch", "reference"):
        _fd_check(scene, ["points", "fill_colors"], backend=backend)
    torch.testing.assert_close(render(scene), render(scene, backend="reference"), atol=1e-6, rtol=0)


def test_compound_stroke_caps_every_subpath():
    scene = Scene.from_paths([Path([(10, 10), (60, 10)], degrees=1, subpaths=[Subpath([(10, 30), (60, 40)], 1)],
                                   stroke_width=6, cap="square", dash=(9, 3), stroke=(0.2, 0.2, 0.2, 1))], 70, 50)
    assert differing_fraction(scene) < MAX_FRACTION


# ---------------------------------------------------------------------------------------------- gradients
STOPS = [(0.0, (1, 0, 0, 1)), (0.4, (0, 0.8, 0, 0.5)), (0.4, (0.9, 0.9, 0, 1)), (1.0, (0, 0, 1, 1))]
SQUARE = [(0, 0), (80, 0), (80, 60), (0, 60)]


@pytest.mark.parametrize("spread", ["pad", "reflect", "repeat"])
def test_linear_gradient_matches_resvg(spread):
    g = Gradient.make("linear", STOPS, (20, 10, 45, 30), transform=(1, 0.2, -0.3, 1, 5, 0), spread=spread)
    scene = Scene.from_paths([Path(SQUARE, degrees=1, closed=True, fill=g, stroke_width=0, stroke=(0, 0, 0, 0))],
                             80, 60)
    assert differing_fraction(scene) < MAX_FRACTION
    img = render(scene)[0]
    assert img[..., :3].reshape(-1, 3).std(0).min() > 0.1  # a real gradient, not one colour


@pytest.mark.parametrize("spread", ["pad", "reflect", "repeat"])
@pytest.mark.parametrize("focal", [(40, 30, 0), (46, 34, 3)])
def test_radial_gradient_with_focal_point_matches_resvg(spread, focal):
    g = Gradient.make("radial", STOPS, (40, 30, 16, *focal), transform=(1.2, 0.2, 0, 0.8, -6, 4), spread=spread)
    scene = Scene.from_paths([Path(SQUARE, degrees=1, closed=True, fill=g, stroke_width=0, stroke=(0, 0, 0, 0))],
                             80, 60)
    assert differing_fraction(scene) < MAX_FRACTION


def test_gradient_fill_and_stroke_on_an_icon_with_a_hole():
    fill = Gradient.make("linear", STOPS, (10, 10, 70, 50), spread="reflect")
    stroke = Gradient.make("radial", [(0, (0.2, 0.2, 0.2, 1)), (1, (0.9, 0.3, 0.6, 1))], (40, 30, 30, 40, 30, 0))
    icon = Path(circle(40, 30, 25), closed=True, subpaths=[Subpath(circle(40, 30, 10), closed=True)], fill=fill,
                fill_rule="evenodd", fill_opacity=0.8, stroke=stroke, stroke_width=5, cap="butt", join="miter",
                dash=(12, 4))
    scene = Scene.from_paths([icon], 80, 60)
    style = scene.topology.style(0)
    assert [scene.gradients[k].kind for k in (style.fill_paint, style.stroke_paint)] == ["linear", "radial"]
    assert differing_fraction(scene) < MAX_FRACTION


def test_gradient_scenes_batch_and_move_between_devices():
    g = Gradient.make("linear", STOPS, (0, 0, 80, 60))
    one = Scene.from_paths([Path(SQUARE, degrees=1, closed=True, fill=g, stroke_width=0, stroke=(0, 0, 0, 0))],
                           80, 60)
    other = one.clone()
    other.gradients[0].colors[0, 0] = torch.tensor([0.0, 0, 0, 1])
    batch = Scene.stack([one, other])
    out = render(batch)
    torch.testing.assert_close(out[0], render(one)[0])
    torch.testing.assert_close(out[1], render(other)[0])
    assert not torch.equal(out[0], out[1])
    assert render(batch.select(1).to(dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------------------------- fast path vs reference
def styled_scene(seed: int, batch: int = 2, width: int = 41, height: int = 33, dtype=torch.float32) -> Scene:
    """Random compound paths with every cap, join, dash and paint, control points partly off the canvas."""
    g = torch.Generator().manual_seed(seed)
    paths = 5
    counts = torch.randint(1, 3, (paths,), generator=g).tolist()
    nseg = torch.randint(1, 4, (sum(counts),), generator=g).tolist()
    closed = (torch.rand(sum(counts), generator=g) < 0.5).tolist()
    filled = (torch.rand(paths, generator=g) < 0.6).tolist()
    styles, gradients = [], []
    for p in range(paths):
        r = torch.rand(6, generator=g).tolist()
        fill_paint = stroke_paint = None
        if r[4] < 0.4:
            fill_paint = len(gradients)
            gradients.append("radial" if r[5] < 0.5 else "linear")
        if r[5] < 0.3:
            stroke_paint = len(gradients)
            gradients.append("linear")
        styles.append(PathStyle(cap=("butt", "round", "square")[int(3 * r[0])],
                                join=("miter", "round", "bevel")[int(3 * r[1])], miter_limit=1 + 4 * r[2],
                                dash=(3 + 4 * r[3], 2.5) if r[3] < 0.5 else (), dash_offset=10 * r[2] - 5,
                                fill_rule=("nonzero", "evenodd")[p % 2], fill_paint=fill_paint,
                                stroke_paint=stroke_paint))
    topo = Topology(nseg, closed, filled, counts, styles)
    size = torch.tensor([width, height], dtype=dtype)
    pts = ((torch.rand(batch, topo.num_points, 2, generator=g, dtype=dtype) - 0.5) * 1.4 + 0.5) * size
    widths = 0.5 + 5 * torch.rand(batch, paths, generator=g, dtype=dtype)
    strokes = torch.rand(batch, paths, 4, generator=g, dtype=dtype)
    fills = torch.rand(batch, paths, 4, generator=g, dtype=dtype)
    grads = []
    for kind in gradients:
        ns = 3
        offs = torch.sort(torch.rand(batch, ns, generator=g, dtype=dtype), 1).values
        cols = torch.rand(batch, ns, 4, generator=g, dtype=dtype)
        geom = torch.rand(batch, 4 if kind == "linear" else 6, generator=g, dtype=dtype) * 30
        if kind == "radial":
            geom[:, 2] += 10  # radius
            geom[:, 3:5] = geom[:, :2] + 2  # focal point inside
            geom[:, 5] = 1
        tf = torch.tensor([[1.0, 0.2, 3.0], [-0.1, 0.9, 1.0]], dtype=dtype).expand(batch, 2, 3).clone()
        grads.append(Gradient(kind, offs, cols, geom, tf, spread=("pad", "reflect", "repeat")[len(grads) % 3]))
    return Scene(topo, pts, widths, strokes, fills, width=width, height=height, gradients=tuple(grads))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_reference_with_every_style(seed):
    scene = styled_scene(seed)
    fast, ref = render(scene), render(scene, backend="reference")
    assert (fast - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("tile,chunk", [(1, 1), (5, 3), (16, 8)])
def test_styled_tiling_parameters_do_not_change_the_image(tile, chunk):
    scene = styled_scene(3, batch=1)
    torch.testing.assert_close(render(scene, tile=tile, chunk=chunk), render(scene), atol=1e-5, rtol=0)


def test_styled_gradients_of_fast_path_match_reference():
    scene = styled_scene(4, batch=1).requires_grad_()
    weight = torch.rand(1, 33, 41, 4, generator=torch.Generator().manual_seed(0))
    grads = []
    for backend in ("torch", "reference"):
        (render(scene, backend=backend) * weight).sum().backward()
        grads.append([t.grad.clone() for t in scene.tensors()])
        for t in scene.tensors():
            t.grad = None
    for fast, ref in zip(*grads):
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
    assert all(g.abs().sum() > 0 for g in grads[0][:3])


def test_round_solid_scenes_keep_the_fast_path(monkeypatch):
    """CLIPDraw and CLIPasso scenes (no styles given) are round and solid: the distance-only stroke, as before, and
    none of the styled work (arclengths, caps, joins, dashes, gradients) is done for them."""
    import studio.render.tiled as tiled

    def forbidden(*args, **kwargs):
        raise AssertionError("styled work on a round, solid scene")

    for name in ("styled_coverage", "stroke_geometry", "edge_pad", "layer_colors"):
        monkeypatch.setattr(tiled, name, forbidden)
    scene = Scene.from_paths([Path(WAVE, stroke_width=3), Path(ZIGZAG, degrees=1, stroke_width=2)], 100, 80)
    assert render(scene)[0, ..., 0].lt(0.5).any()
    topo = Topology((1, 2), (False, False))
    assert topo.round_solid and topo.styles is None
    assert Topology((1, 2), (False, False), styles=(PathStyle(), PathStyle())).styles is None
    assert not Topology((1,), (False,), styles=(PathStyle(cap="butt"),)).round_solid


# ---------------------------------------------------------------------------------------------- finite differences
def _fd_check(scene: Scene, names: list[str], seed: int = 0, backend: str = "torch", eps: float = 1e-6):
    """Directional derivatives of a weighted image sum: autograd against central differences, float64."""
    base = scene.detach()
    h, w = base.height, base.width
    weight = torch.rand(1, h, w, 4, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    tensors = [t.clone().requires_grad_() for t in base.tensors()]
    all_names = ["points", "widths", "stroke_colors"] + (["fill_colors"] if base.fill_colors is not None else []) \
        + [f"g{k}.{n}" for k in range(len(base.gradients)) for n in ("offsets", "colors", "geometry", "transform")] \
        + (["dash_offsets"] if base.dash_offsets is not None else [])

    def build(ts):
        it = iter(ts)
        pts, wid, sc = next(it), next(it), next(it)
        fc = next(it) if base.fill_colors is not None else None
        grads = tuple(Gradient(g.kind, next(it), next(it), next(it), next(it), g.spread) for g in base.gradients)
        return Scene(base.topology, pts, wid, sc, fc, width=w, height=h, background=base.background,
                     gradients=grads, dash_offsets=next(it, None))

    def loss(ts):
        return (render(build(ts), backend=backend) * weight).sum()

    loss(tensors).backward()
    g = torch.Generator().manual_seed(seed + 2)
    for name in names:
        i = all_names.index(name)
        u = torch.randn(tensors[i].shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            plus = [t + eps * u if j == i else t for j, t in enumerate(tensors)]
            minus = [t - eps * u if j == i else t for j, t in enumerate(tensors)]
            numeric = (loss(plus) - loss(minus)).item() / (2 * eps)
        analytic = (tensors[i].grad * u).sum().item()
        assert abs(analytic) > 1e-3, name  # the direction does move the image
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("cap,join", [("butt", "miter"), ("square", "bevel"), ("butt", "round"), ("round", "miter")])
def test_cap_and_join_gradients_match_finite_differences(cap, join):
    scene = Scene.from_paths([Path([(3.3, 11.2), (9.7, 3.1), (15.2, 10.6), (19.9, 4.3)], degrees=1, stroke_width=3.1,
                                   cap=cap, join=join, miter_limit=3)], 24, 16, dtype=torch.float64)
    _fd_check(scene, ["points", "widths"])


@pytest.mark.parametrize("cap", ["butt", "round", "square"])
def test_dash_gradients_match_finite_differences(cap):
    scene = Scene.from_paths([Path([(2.3, 4.2), (12.7, 14.1), (20.2, 3.6), (28.9, 12.3)], stroke_width=2.7, cap=cap,
                                   join="miter", dash=(3.3, 2.1, 1.2, 1.9), dash_offset=1.7)], 32, 18,
                             dtype=torch.float64)
    _fd_check(scene, ["points", "widths"])


@pytest.mark.parametrize("cap", ["butt", "round", "square"])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_dash_offset_gradients_match_finite_differences(cap, backend):
    """With `Scene.dash_offsets` the offset is a tensor: moving it slides the dashes along the path, including the
    first and last dash where the subpath's ends cut them (two subpaths, one closed)."""
    scene = Scene.from_paths([
        Path([(2.3, 4.2), (12.7, 14.1), (20.2, 3.6), (28.9, 12.3)], stroke_width=2.7, cap=cap, join="miter",
             dash=(3.3, 2.1, 1.2, 1.9), dash_offset=1.7,
             subpaths=[Subpath([(4.1, 15.2), (14.3, 16.1), (9.2, 11.7)], degrees=1, closed=True)]),
        Path([(18.4, 15.9), (30.1, 16.3)], degrees=1, stroke_width=2.1, cap=cap, dash=(2.6, 1.7), dash_offset=-0.8),
    ], 32, 18, dtype=torch.float64).with_dash_offsets()
    assert scene.dash_offsets.tolist() == [[1.7, -0.8]]
    _fd_check(scene, ["dash_offsets", "points"], backend=backend)


def test_dash_offsets_tensor_draws_as_the_style_and_round_trips():
    paths = [Path(ZIGZAG, degrees=1, stroke_width=5, cap="butt", join="miter", dash=(8, 4), dash_offset=3),
             Path(WAVE, stroke_width=3, cap="round", dash=(5, 6, 2), dash_offset=-4)]
    plain = Scene.from_paths(paths, 100, 80)
    scene = plain.with_dash_offsets()
    torch.testing.assert_close(render(scene), render(plain))
    assert scene.tensors()[-1] is scene.dash_offsets and len(scene.tensors()) == len(plain.tensors()) + 1
    moved = replace(scene, dash_offsets=torch.tensor([[7.5, 1.0]]))
    assert (render(moved) - render(scene)).abs().amax(-1).gt(TOL).float().mean() > 0.01
    back = from_svg(to_svg(moved))
    assert [back.topology.style(p).dash_offset for p in range(2)] == pytest.approx([7.5, 1.0])
    assert differing_fraction(moved) < MAX_FRACTION
    both = Scene.stack([moved, scene])
    torch.testing.assert_close(render(both)[0], render(moved)[0])
    with pytest.raises(ValueError, match="dash_offsets"):
        replace(scene, dash_offsets=torch.zeros(1, 3))


def test_gradient_stop_gradients_match_finite_differences():
    lin = Gradient.make("linear", [(0.1, (0.9, 0.1, 0.2, 1)), (0.55, (0.1, 0.7, 0.3, 0.6)), (0.9, (0.2, 0.1, 0.8, 1))],
                        (2.3, 3.1, 17.7, 12.4), spread="reflect", dtype=torch.float64)
    rad = Gradient.make("radial", [(0.0, (1, 1, 0, 1)), (0.7, (0.1, 0.2, 0.9, 0.8))], (10.2, 7.9, 6.3, 11.1, 8.4, 0.5),
                        transform=(1, 0.1, 0.05, 0.9, 0.3, 0.2), spread="repeat", dtype=torch.float64)
    scene = Scene.from_paths([Path([(1, 1), (19, 1), (19, 15), (1, 15)], degrees=1, closed=True, fill=lin,
                                   stroke=rad, stroke_width=3.3, cap="butt", join="miter")], 20, 16,
                             dtype=torch.float64)
    _fd_check(scene, ["g0.offsets", "g0.colors", "g0.geometry", "g1.offsets", "g1.colors", "g1.geometry",
                      "g1.transform"])


def test_optimiser_recolours_a_gradient():
    target = Gradient.make("linear", [(0, (0.1, 0.8, 0.2, 1)), (1, (0.9, 0.1, 0.7, 1))], (2, 0, 30, 0))
    start = Gradient.make("linear", [(0, (0.5, 0.5, 0.5, 1)), (1, (0.5, 0.5, 0.5, 1))], (2, 0, 30, 0))
    sq = [(2, 2), (30, 2), (30, 22), (2, 22)]
    goal = render(Scene.from_paths([Path(sq, degrees=1, closed=True, fill=target, stroke_width=0,
                                         stroke=(0, 0, 0, 0))], 32, 24))
    scene = Scene.from_paths([Path(sq, degrees=1, closed=True, fill=start, stroke_width=0, stroke=(0, 0, 0, 0))],
                             32, 24)
    colors = scene.gradients[0].colors.requires_grad_()
    opt = torch.optim.Adam([colors], lr=0.03)
    for _ in range(100):
        opt.zero_grad()
        loss = (render(scene) - goal).pow(2).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            colors.clamp_(0, 1)  # as the pipelines keep colours valid (alpha above 1 would also fit the target)
    assert loss.item() < 1e-4
    torch.testing.assert_close(colors.detach()[0, :, :3], target.colors[0, :, :3], atol=0.1, rtol=0)  # from 0.5


# ---------------------------------------------------------------------------------------------- SVG round trip
def _importer_reads_styles() -> bool:
    scene = Scene.from_paths([Path([(1, 1), (9, 9)], degrees=1, cap="butt", dash=(2, 1))], 10, 10)
    try:
        back = from_svg(to_svg(scene))
    except ValueError:
        return False
    return back.topology.style(0).dash == (2.0, 1.0)


needs_importer = pytest.mark.skipif(not _importer_reads_styles(),
                                    reason="from_svg does not read styles yet (the importer is built on wt-svgread)")


@needs_importer
@pytest.mark.parametrize("seed", range(4))
def test_random_styled_scenes_survive_to_svg_and_from_svg(seed):
    scene = styled_scene(10 + seed, batch=1, width=48, height=40)
    scene.background = (1.0, 1.0, 1.0, 1.0)
    back = from_svg(to_svg(scene))
    assert back.num_paths == scene.num_paths and back.topology.subpath_counts == scene.topology.subpath_counts
    for p in range(scene.num_paths):
        a, b = back.topology.style(p), scene.topology.style(p)
        assert (a.cap, a.join) == (b.cap, b.join)
        assert a.dash == pytest.approx(b.dash, abs=1e-4)  # lengths are written with 4 decimals
        if b.dash:
            assert a.dash_offset == pytest.approx(b.dash_offset, abs=1e-4)
        if scene.topology.filled[p]:
            assert back.path_fill_rule(p) == scene.path_fill_rule(p)
        assert (a.fill_paint is None) == (b.fill_paint is None or not scene.topology.filled[p])
        assert (a.stroke_paint is None) == (b.stroke_paint is None)
    diff = (render(back) - render(scene)).abs()
    assert diff.mean() < 2e-3 and (diff.amax(-1) > TOL).float().mean() < MAX_FRACTION


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw,match", [
    ({"cap": "flat"}, "cap"), ({"join": "arcs"}, "join"), ({"miter_limit": 0.5}, "miter_limit"),
    ({"dash": (1, -2)}, "dash"), ({"dash_offset": float("nan")}, "dash_offset"), ({"fill_rule": "odd"}, "fill_rule"),
    ({"fill_paint": -1}, "fill_paint"),
])
def test_bad_styles_are_refused_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        PathStyle(**kw)


def test_bad_gradients_and_paint_indices_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Gradient.make("conic", STOPS, (0, 0, 1, 1))
    with pytest.raises(ValueError, match="spread"):
        Gradient.make("linear", STOPS, (0, 0, 1, 1), spread="mirror")
    with pytest.raises(ValueError, match="geometry"):
        Gradient.make("radial", STOPS, (0, 0, 1, 1))
    topo = Topology((1,), (False,), styles=(PathStyle(stroke_paint=0),))
    with pytest.raises(ValueError, match="stroke_paint"):
        Scene(topo, torch.zeros(1, 4, 2), torch.ones(1, 1), torch.ones(1, 1, 4))
    with pytest.raises(ValueError, match="subpaths"):
        Topology((1, 1), (False, False), subpaths=(3,))
    assert PathStyle(dash=(1, 2, 3)).dash == (1, 2, 3, 1, 2, 3) and PathStyle(dash=(0, 0)).dash == ()


def test_diffvg_backend_refuses_what_it_cannot_draw():
    scene = Scene.from_paths([Path(ZIGZAG, degrees=1, cap="butt")], 100, 80)
    with pytest.raises(ValueError, match="diffvg.*caps"):
        render(scene, backend="diffvg")


# ---------------------------------------------------------------------------------------------- group opacity
def _overlapping(opacity_paths: float = 1.0) -> list[Path]:
    return [Path([(10, 10), (50, 10), (50, 50), (10, 50)], degrees=1, closed=True, fill=(0.9, 0.1, 0.1, 1),
                 fill_opacity=opacity_paths, stroke_width=3, stroke=(0.1, 0.1, 0.1, 1), cap="butt", join="miter"),
            Path(circle(50, 45, 20), closed=True, fill=(0.1, 0.3, 0.9, 1), fill_opacity=opacity_paths,
                 stroke_width=0, stroke=(0, 0, 0, 0)),
            Path([(5, 70), (90, 20)], degrees=1, stroke_width=6, stroke=(0.1, 0.7, 0.2, 1), cap="square")]


@pytest.mark.parametrize("groups", [[(0, 2, 0.5)], [(0, 3, 0.6), (1, 3, 0.5)], [(0, 1, 0.7), (1, 3, 0.4)]])
def test_group_opacity_is_one_layer_and_matches_resvg(groups):
    scene = Scene.from_paths(_overlapping(), 100, 80, groups=groups)
    assert differing_fraction(scene) < MAX_FRACTION
    assert f'<g opacity="{groups[0][2]:g}">' in to_svg(scene)
    for backend in ("torch", "reference"):
        torch.testing.assert_close(render(scene, backend=backend), render(scene), atol=1e-4, rtol=0)


def test_group_opacity_differs_from_opacity_on_each_path():
    """Where the square and the circle overlap, the group shows only the circle (at half opacity); halving each
    path's opacity instead lets the square show through."""
    group = render(Scene.from_paths(_overlapping(), 100, 80, groups=[(0, 2, 0.5)]))[0]
    each = render(Scene.from_paths(_overlapping(0.5)[:2] + _overlapping()[2:], 100, 80))[0]
    inside_both = group[40, 40]
    assert inside_both.tolist() == pytest.approx([0.55, 0.65, 0.95, 1], abs=1e-3)  # blue at 0.5 over white
    assert (inside_both - each[40, 40]).abs().max() > 0.1
    torch.testing.assert_close(group[5, 80], each[5, 80])  # outside both shapes


def test_group_opacity_gradients_match_finite_differences():
    paths = [Path(circle(20.3, 22.1, 12.2), closed=True, fill=(0.9, 0.1, 0.1, 1), stroke_width=2.3,
                  stroke=(0.1, 0.1, 0.1, 1)),
             Path(circle(29.7, 26.4, 10.1), closed=True, fill=(0.1, 0.3, 0.9, 0.8), stroke_width=0,
                  stroke=(0, 0, 0, 0))]
    scene = Scene.from_paths(paths, 44, 40, groups=[(0, 2, 0.6)], dtype=torch.float64)
    _fd_check(scene, ["points", "widths", "fill_colors"])


def test_groups_must_nest():
    with pytest.raises(ValueError, match="overlap"):
        Topology((1, 1, 1), (False,) * 3, groups=((0, 2, 0.5), (1, 3, 0.5)))
    with pytest.raises(ValueError, match="groups"):
        Topology((1,), (False,), groups=((0, 2, 0.5),))


# ---------------------------------------------------------------------------------------------- group clips
@pytest.mark.parametrize("groups", [[(0, 2, 1.0, (20.5, 15.25, 70.0, 60.0))], [(0, 3, 0.6, (5, 5, 95, 50)),
                                                                           (1, 3, 0.5, (40.3, 0, 100, 80))]])
def test_group_clip_rectangles_match_resvg(groups):
    scene = Scene.from_paths(_overlapping(), 100, 80, groups=groups)
    assert differing_fraction(scene) < MAX_FRACTION
    assert 'overflow="hidden"' in to_svg(scene)
    unclipped = Scene.from_paths(_overlapping(), 100, 80, groups=[g[:3] for g in groups])
    assert (render(unclipped) - render(scene)).abs().amax(-1).gt(TOL).float().mean() > 0.05  # the clip matters
    torch.testing.assert_close(render(scene, backend="reference"), render(scene), atol=1e-4, rtol=0)


def test_clip_mask_is_the_pixel_area_inside_the_rectangle():
    scene = Scene.from_paths([Path([(0, 0), (20, 0), (20, 10), (0, 10)], degrees=1, closed=True, fill=(0, 0, 0, 1),
                                   stroke_width=0, stroke=(0, 0, 0, 0))], 20, 10, background=None,
                             groups=[(0, 1, 1.0, (2.25, 1.5, 12.0, 8.0))])
    alpha = render(scene)[0, ..., 3]
    assert alpha.sum().item() == pytest.approx((12 - 2.25) * (8 - 1.5), abs=1e-4)
    assert alpha[4, 2].item() == pytest.approx(0.75) and alpha[1, 5].item() == pytest.approx(0.5)


def test_clipped_group_gradients_match_finite_differences():
    paths = [Path(circle(20.3, 22.1, 12.2), closed=True, fill=(0.9, 0.1, 0.1, 1), stroke_width=2.3,
                  stroke=(0.1, 0.1, 0.1, 1)),
             Path(circle(29.7, 26.4, 10.1), closed=True, fill=(0.1, 0.3, 0.9, 0.8), stroke_width=0,
                  stroke=(0, 0, 0, 0))]
    scene = Scene.from_paths(paths, 44, 40, groups=[(0, 2, 0.6, (12.3, 10.7, 33.4, 38.0))], dtype=torch.float64)
    _fd_check(scene, ["points", "widths", "fill_colors"])


@pytest.mark.parametrize("clip", [(1, 2, 3), (0, 0, -1, 4), (0, 0, float("inf"), 1), "abcd"])
def test_bad_group_clips_are_refused(clip):
    with pytest.raises(ValueError, match="clip"):
        Topology((1,), (False,), groups=((0, 1, 0.5, clip),))



def test_render_work_counts_a_canvas_per_group():
    from studio.render.cost import render_work

    plain = Scene.from_paths(_overlapping(), 100, 80)
    grouped = Scene.from_paths(_overlapping(), 100, 80, groups=[(0, 3, 0.6, (5, 5, 95, 50)), (1, 3, 0.5)])
    assert render_work(grouped) - render_work(plain) == 2 * 25 * 20  # two layers of 25 x 20 tiles of 4 px


def test_group_layers_drawn_on_a_crop_equal_the_full_canvas():
    """A group's layer is drawn on the canvas window its paths can reach and padded back: with opacity 1 and no
    clip it must equal drawing the same paths without the group (gradient paints, miter tips, paths leaving the
    canvas, a batch of two)."""
    lin = Gradient.make("linear", [(0, (0.9, 0.1, 0.2, 1)), (1, (0.1, 0.3, 0.9, 0.7))], (20, 10, 60, 40))
    paths = [Path([(-6, 10), (30, 4), (12, 30)], degrees=1, closed=True, fill=lin, stroke_width=5,
                  stroke=(0.1, 0.1, 0.1, 1), cap="butt", join="miter", miter_limit=10),
             Path(circle(70, 50, 12), closed=True, fill=(0.2, 0.7, 0.3, 0.8), stroke_width=0, stroke=(0, 0, 0, 0)),
             Path(WAVE, stroke_width=4, cap="square", stroke=(0.8, 0.2, 0.1, 1))]
    plain = Scene.from_paths(paths, 100, 80)
    plain = Scene.stack([plain, replace(plain, points=plain.points + 3.5)])
    grouped = replace(plain, topology=replace(plain.topology, groups=((0, 2, 1.0), (1, 2, 1.0), (2, 3, 1.0))))
    torch.testing.assert_close(render(grouped), render(plain), atol=1e-4, rtol=0)  # float32 rounding of the shift


def test_resized_scales_points_lengths_gradients_and_clips():
    """`Scene.resized` equals importing the same document onto the larger canvas (a viewBox does the scaling)."""
    body = ('<defs><linearGradient id="g" x1="0" x2="1"><stop offset="0" stop-color="gold"/><stop offset="1" '
            'stop-color="navy"/></linearGradient></defs><svg x="5" y="4" width="30" height="20"><circle cx="20" '
            'cy="10" r="14" fill="url(#g)" stroke="black" stroke-width="2"/></svg><path d="M4 34 L46 30" '
            'stroke="crimson" stroke-width="3" stroke-dasharray="5 2" stroke-dashoffset="1.5"/>')
    ns = 'xmlns="http://www.w3.org/2000/svg"'
    small = from_svg(f'<svg {ns} width="50" height="40">{body}</svg>').with_dash_offsets()
    big = from_svg(f'<svg {ns} width="100" height="80" viewBox="0 0 50 40">{body}</svg>')
    resized = small.resized(100, 80)
    assert resized.topology.groups == big.topology.groups and resized.topology.styles == big.topology.styles
    assert resized.dash_offsets.tolist() == [[0.0, 3.0]]
    diff = (render(resized) - render(big)).abs()
    assert diff.amax().item() < 1e-3
    with pytest.raises(ValueError, match="width"):
        small.resized(0, 10)
