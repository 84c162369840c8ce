"""Vectorize (pipelines/vectorize.py): pictures the renderer drew itself come back as SVGs that draw them again.

Oracles: PSNR against the picture, the SVG read back by `from_svg` and drawn by resvg (an independent renderer),
the SVG's own elements. Small canvases and few steps keep it fast; the benchmark (benchmarks/vectorize.py) measures
real pictures against vtracer.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.vectorize import VectorizePipeline, layer_sizes, psnr
from studio.render import Path, Scene, from_svg, render, to_uint8

SIZE = 64
NONE = (0.0, 0.0, 0.0, 0.0)


def _circle(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """A closed circle of 4 cubics (k = 4/3·tan(π/8))."""
    k = 4 / 3 * math.tan(math.pi / 8) * r
    pts = []
    for i in range(4):
        a = i * math.pi / 2
        c, s = math.cos(a), math.sin(a)
        pts += [(cx + r * c, cy + r * s), (cx + r * c - k * s, cy + r * s + k * c)]
        a2 = a + math.pi / 2
        c2, s2 = math.cos(a2), math.sin(a2)
        pts.append((cx + r * c2 + k * s2, cy + r * s2 - k * c2))
    return pts


def shapes_picture() -> Image.Image:
    """Three flat shapes on white, drawn by our renderer: a red disc, a blue quadrilateral, a green disc."""
    paths = [Path(_circle(22, 24, 14), closed=True, fill=(0.85, 0.1, 0.1, 1), stroke_width=0, stroke=NONE),
             Path([(30, 34), (56, 40), (50, 60), (26, 54)], degrees=1, closed=True, fill=(0.1, 0.3, 0.9, 1),
                  stroke_width=0, stroke=NONE),
             Path(_circle(48, 16, 9), closed=True, fill=(0.1, 0.7, 0.2, 1), stroke_width=0, stroke=NONE)]
    return Image.fromarray(to_uint8(render(Scene.from_paths(paths, SIZE, SIZE)))[0])


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return shapes_picture()


@pytest.fixture(scope="module")
def three(picture):
    """The picture vectorised with as many paths as it has shapes."""
    return VectorizePipeline()(picture, num_paths=3, num_steps=60, seed=0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float((((a.astype(np.float64) - b.astype(np.float64)) / 255) ** 2).mean())
    return psnr(mse)


def test_known_flat_shapes_come_back_with_that_many_paths(picture, three):
    assert three.scores["num_paths"] <= 3
    assert three.scores["psnr"] >= 35.0, three.scores
    # the score is the image's: measured here again against the picture
    assert _psnr(np.asarray(three.image), np.asarray(picture)) >= 35.0
    assert [n for n, _ in three.layers] == [1, 3]  # LIVE's schedule: one path, then two


def test_more_paths_are_never_worse(picture):
    pipe = VectorizePipeline()
    scores = [pipe(picture, num_paths=n, num_steps=15, seed=3, canvas_size=48).scores["psnr"] for n in (1, 2, 4)]
    assert scores == sorted(scores), scores
    assert scores[-1] > scores[0] + 3


def test_the_svg_reimports_and_resvg_draws_it_like_the_raster(three):
    ours = np.asarray(three.image).astype(np.int16)
    # read back by our importer and drawn again (over white, as the task draws)
    scene = from_svg(three.svg)
    again = to_uint8(render(scene))[0].astype(np.int16)
    assert np.abs(again - ours).max() <= 2
    # drawn by resvg, an independent renderer (composited over white)
    resvg_py = pytest.importorskip("resvg_py")
    png = Image.open(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_string=three.svg)))).convert("RGBA")
    rgba = np.asarray(png, dtype=np.float64) / 255
    theirs = (rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])) * 255
    diff = np.abs(theirs - ours)
    assert diff.mean() < 1.0 and np.quantile(diff, 0.99) < 24, (diff.mean(), diff.max())


def test_the_svg_is_paths_in_drawing_order_none_degenerate(three):
    root = ElementTree.fromstring(three.svg)
    kids = [el.tag.split("}")[1] for el in root]
    assert kids == ["path"] * three.scores["num_paths"]  # no background element, nothing but the shapes
    for el in root:
        d = el.get("d")
        assert d.startswith("M ") and d.rstrip().endswith("Z") and d.count("C ") == 4
        assert float(el.get("fill-opacity")) > 0 and el.get("fill").startswith("#")
        xy = np.array([float(v) for v in d.replace("M", " ").replace("C", " ").replace("Z", " ").split()])
        pts = xy.reshape(-1, 2)
        area = 0.5 * abs((pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]).sum())
        assert area > 1.0


def test_gradient_fills_round_trip(picture):
    out = VectorizePipeline()(picture, num_paths=2, num_steps=10, paint="gradient", canvas_size=48)
    assert out.svg.count("<linearGradient") == out.scores["num_paths"] and "url(#g0)" in out.svg
    scene = from_svg(out.svg)
    assert len(scene.gradients) == out.scores["num_paths"]
    again = to_uint8(render(scene))[0].astype(np.int16)
    assert np.abs(again - np.asarray(out.image).astype(np.int16)).max() <= 2


def test_strokes_mode_paints_open_strokes_over_a_ground(picture):
    out = VectorizePipeline()(picture, num_paths=6, num_steps=15, mode="stroke", canvas_size=48)
    root = ElementTree.fromstring(out.svg)
    paths = list(root)
    assert paths[0].get("d").rstrip().endswith("Z") and paths[0].get("fill") != "none"  # the ground
    strokes = paths[1:]
    assert strokes and all(p.get("fill") == "none" and float(p.get("stroke-width")) > 0 for p in strokes)
    assert out.scores["psnr"] > psnr(float(((np.asarray(picture) / 255 - 1) ** 2).mean()))  # better than blank
    again = to_uint8(render(from_svg(out.svg)))[0].astype(np.int16)
    assert np.abs(again - np.asarray(out.image).astype(np.int16)).max() <= 2


def test_target_psnr_stops_adding_paths_once_met(picture):
    out = VectorizePipeline()(picture, num_paths=32, num_steps=40, target_psnr=25.0, canvas_size=48)
    assert out.scores["psnr"] >= 25.0 and out.scores["num_paths"] < 32
    assert len(out.layers) < len(layer_sizes(32, 32))


def test_stop_keeps_the_best_drawing_so_far(picture):
    gen = VectorizePipeline().iterate(picture, num_paths=3, num_steps=30, canvas_size=48, preview_every=5)
    seen = []
    item = next(gen)
    while not item.done:
        seen.append(item.metrics["psnr"])
        item = gen.send("stop" if item.step == 40 else None)
    assert item.stopped and item.steps_run == 40
    assert item.scores["psnr"] >= max(seen) - 1e-6  # the best drawing, not the last one


def test_clip_term_uses_the_scorer(picture, demo_scorer):
    pipe = VectorizePipeline(demo_scorer)
    plain = pipe(picture, num_paths=1, num_steps=5, canvas_size=32)
    guided = pipe(picture, num_paths=1, num_steps=5, canvas_size=32, clip_weight=5.0, clip_prompt="a red circle")
    assert "clip_score" in guided.scores and "clip_score" not in plain.scores
    assert not np.array_equal(np.asarray(plain.image), np.asarray(guided.image))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height (its data is a stub: the size alone must refuse it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("what", ["zero paths", "too large", "unreadable", "too much work", "bad mode"])
def test_bad_input_is_a_named_error_before_any_work(tmp_path, picture, what, monkeypatch):
    import pipelines.vectorize as vec

    calls = []
    monkeypatch.setattr(vec, "render", lambda *a, **k: calls.append(1))  # no drawing may happen
    image, settings, name = picture, {}, "image"
    if what == "zero paths":
        settings, name = {"num_paths": 0}, "num_paths"
    elif what == "too large":
        (tmp_path / "huge.png").write_bytes(_png_header(9000, 9000))
        image = str(tmp_path / "huge.png")
    elif what == "unreadable":
        (tmp_path / "junk.png").write_bytes(b"not an image at all")
        image = str(tmp_path / "junk.png")
    elif what == "too much work":
        image, settings, name = Image.new("RGB", (1024, 1024), "white"), {"num_paths": 1024, "canvas_size": 1024}, \
            "num_paths"
    else:
        settings, name = {"mode": "pencil"}, "mode"
    with pytest.raises(ValueError, match=f"`{name}`"):
        next(VectorizePipeline().iterate(image, **settings))
    assert not calls


def test_layer_schedule_is_lives_exp2():
    assert layer_sizes(1, 32) == [1]
    assert layer_sizes(64, 16) == [1, 2, 4, 8, 16, 16, 16, 1]
    assert layer_sizes(20, 32) == [1, 2, 4, 8, 5]
    assert all(sum(layer_sizes(n, c)) == n for n in range(1, 300, 7) for c in (1, 16, 32))


def test_same_seed_same_svg(picture):
    a = VectorizePipeline()(picture, num_paths=2, num_steps=5, canvas_size=32, seed=7)
    b = VectorizePipeline()(picture, num_paths=2, num_steps=5, canvas_size=32, seed=7)
    assert a.svg == b.svg and torch.equal(torch.tensor(np.asarray(a.image)), torch.tensor(np.asarray(b.image)))
