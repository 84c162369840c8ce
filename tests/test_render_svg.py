"""Renderer SVG I/O: round trip, agreement with an independent rasteriser (resvg), refusal of hostile input."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_render import random_scene

from studio.render import from_svg, render, to_svg
from studio.render.svg_read import MAX_COMMANDS, MAX_SVG_CHARS

resvg_py = pytest.importorskip("resvg_py")


def resvg(svg: str) -> np.ndarray:
    """(H, W, 4) straight RGBA in [0, 1] from resvg."""
    png = resvg_py.svg_to_bytes(svg_string=svg)
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGBA")).astype(np.float32) / 255


def ours(scene) -> np.ndarray:
    return render(scene)[0].detach().numpy()


def test_the_package_exports_the_writer_and_the_reader():
    import studio.render as render_pkg
    from studio.render import svg_read, svg_write

    assert render_pkg.to_svg is svg_write.to_svg and render_pkg.from_svg is svg_read.from_svg
    assert {"to_svg", "from_svg"} <= set(render_pkg.__all__)
    assert not hasattr(svg_write, "from_svg") and not hasattr(svg_read, "to_svg")  # one job per module


# ---------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("seed", [0, 1])
def test_svg_round_trip_preserves_the_scene(seed):
    scene = random_scene(seed, batch=2, width=64, height=48)
    scene.background = (0.9, 0.8, 0.7, 1.0)
    back = from_svg(to_svg(scene, index=1))
    one = scene.select(1)
    assert back.topology == one.topology and (back.width, back.height) == (64, 48)
    torch.testing.assert_close(back.points, one.points, atol=1e-4, rtol=0)  # written with 4 decimals
    torch.testing.assert_close(back.widths, one.widths, atol=1e-4, rtol=0)
    torch.testing.assert_close(back.stroke_colors[..., :3], one.stroke_colors[..., :3], atol=0.5 / 255, rtol=0)
    torch.testing.assert_close(back.stroke_colors[..., 3], one.stroke_colors[..., 3], atol=1e-4, rtol=0)
    filled = torch.tensor(one.topology.filled)
    torch.testing.assert_close(back.fill_colors[0, filled, :3], one.fill_colors[0, filled, :3], atol=0.5 / 255, rtol=0)
    assert back.background == pytest.approx((0.9, 0.8, 0.7, 1.0), abs=0.5 / 255)
    assert (render(back) - render(one)).abs().mean() < 2e-3


def test_svg_round_trip_keeps_transparent_background_and_even_odd():
    scene = random_scene(3, batch=1)
    scene.background, scene.fill_rule = None, "evenodd"
    back = from_svg(to_svg(scene))
    assert back.background is None and back.fill_rule == "evenodd"


# ---------------------------------------------------------------------------------------------- vs resvg
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raster_agrees_with_resvg(seed):
    scene = random_scene(seed, batch=1, width=64, height=48)  # open/closed, filled, curves leaving the canvas
    diff = np.abs(resvg(to_svg(scene))[..., :3] - ours(scene)[..., :3])
    assert diff.mean() < 0.02, diff.mean()
    assert (diff > 0.25).mean() < 0.01  # no region drawn differently: only antialiasing along edges


def test_reading_handwritten_svg_matches_resvg():
    # every path command, absolute and relative, groups with inherited style, transforms, basic shapes
    svg = """<svg xmlns="http://www.w3.org/2000/svg" width="80" height="60" viewBox="0 0 160 120">
      <rect width="160" height="120" fill="white"/>
      <g stroke="navy" stroke-width="3" fill="none" transform="translate(5 4)">
        <path d="M10 10 L50 12 l10 20 H80 v15 h-10 V70 Z"/>
        <path d="M10 100 Q30 60 50 100 T90 100" style="stroke:#c03020;stroke-opacity:0.7"/>
        <path d="m100 20 c10 -15 30 -15 40 0 s 0 30 -20 30 C 110 50 100 40 100 20 z" fill="rgb(40,160,60)"/>
        <path d="M110 80 a 15 10 30 1 0 30 10" stroke-width="5"/>
      </g>
      <circle cx="30" cy="60" r="12" fill="orange" opacity="0.8"/>
      <ellipse cx="140" cy="105" rx="14" ry="8" fill="#36c" transform="rotate(-20 140 105)"/>
      <polygon points="60,80 75,110 45,110" fill="purple" stroke="black"/>
      <polyline points="5,115 20,105 35,115" stroke="green" stroke-width="2" fill="none"/>
      <line x1="150" y1="5" x2="120" y2="40" stroke="red" stroke-width="4"/>
    </svg>"""
    scene = from_svg(svg)
    assert (scene.width, scene.height) == (80, 60)
    reference = resvg(svg)
    img = ours(scene)
    diff = np.abs(reference[..., :3] - (img[..., :3] + (1 - img[..., 3:])))  # ours has no background rect here
    assert (reference[..., :3] < 0.9).any(-1).mean() > 0.15  # a real drawing, not a blank page
    assert diff.mean() < 0.02, diff.mean()


def test_arc_circle_area():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><path d="M12 32 A20 20 0 0 1 52 32 '
           'A20 20 0 0 1 12 32 Z" fill="black"/></svg>')
    scene = from_svg(svg)
    assert render(scene)[0, ..., 3].sum().item() == pytest.approx(math.pi * 400, rel=0.005)


# ---------------------------------------------------------------------------------------------- hostile input
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE svg [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
 <!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><desc>&i;</desc><path d="M0 0 L5 5"/></svg>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><desc>&xxe;</desc><path d="M0 0 L5 5"/></svg>"""

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'
       "{}</svg>")


@pytest.mark.parametrize("text,match", [
    (BILLION_LAUGHS, "DTD|entit"),
    (EXTERNAL_ENTITY, "DTD|entit"),
    (SVG.format('<image href="http://example.com/x.png" width="5" height="5"/>'), "external reference"),
    (SVG.format('<use xlink:href="file:///etc/passwd#x"/>'), "external reference"),
    (SVG.format('<path d="M0 0 L1e300 5"/>'), "magnitude"),
    (SVG.format('<path d="M0 0 L5 5" transform="scale(1e5)"/><path d="M0 0 L50 50" transform="scale(1e5)"/>'),
     "coordinates"),
    ('<svg xmlns="http://www.w3.org/2000/svg" width="50000" height="10"><path d="M0 0 L5 5"/></svg>', "canvas"),
    ('<svg xmlns="http://www.w3.org/2000/svg" width="1e9" height="10"><path d="M0 0 L5 5"/></svg>', "width"),
    (SVG.format("<g>" * 100 + '<path d="M0 0 L5 5"/>' + "</g>" * 100), "nests"),
    (SVG.format('<path d="M0 0 L5 5" fill="url(#grad)"/>'), "references nothing"),
    (SVG.format('<text x="1" y="5">hi</text>'), "text"),
    ("<html><body/></html>", "root"),
    ("<svg", "parse"),
    (SVG.format('<path d="M0 0 L5 5 X 3"/>'), "character"),
    (SVG.format(""), "no paths"),
])
def test_hostile_or_unsupported_svg_is_refused(text, match):
    with pytest.raises(ValueError, match=match):
        from_svg(text)


def test_million_path_commands_are_refused():
    huge = SVG.format('<path d="M0 0' + " l1 1" * 1_000_000 + '"/>')
    assert len(huge) > MAX_SVG_CHARS
    with pytest.raises(ValueError, match="characters"):
        from_svg(huge)
    # compact enough to pass the size cap, still too many commands
    many = SVG.format('<path d="M0 0' + "l1 1" * (MAX_COMMANDS + 10) + '"/>')
    assert len(many) <= MAX_SVG_CHARS
    with pytest.raises(ValueError, match="commands"):
        from_svg(many)
    implicit = SVG.format('<path d="M0 0 L' + " 1 1" * (4 * MAX_COMMANDS + 10) + '"/>')  # one letter, many lines
    assert len(implicit) <= MAX_SVG_CHARS
    with pytest.raises(ValueError, match="numbers"):
        from_svg(implicit)


@pytest.mark.parametrize("attack", [
    lambda n: f'<svg xmlns="http://www.w3.org/2000/svg" width="{"1" * n}x" height="8"/>',
    lambda n: ('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><path d="M0 0L1 1" '
               f'transform="{"a" * n}"/></svg>'),
    lambda n: ('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><path d="M0 0L1 1" '
               f'fill="rgb({" " * n}x"/></svg>'),
])
def test_crafted_attributes_are_refused_in_linear_time(attack):
    """Issue 17: quadratic regular expressions froze the server (20k digits: 21 s). Ten times the input may
    take about ten times as long, never a hundred (a generous factor of 40 between 4k and 40k characters)."""
    import time

    def cost(n: int) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            with pytest.raises(ValueError, match="SVG"):
                from_svg(attack(n))
            best = min(best, time.perf_counter() - t0)
        return best

    small, large = cost(4_000), cost(40_000)
    assert large < 40 * max(small, 1e-4)


def test_compact_arc_flags_are_read_in_linear_time():
    """The arc flag scanner (issue 26) reads one character per flag: a long run of compact arcs with a bad
    character at its end is refused after one pass."""
    import time

    def cost(n: int) -> float:
        text = SVG.format('<path d="M0 0' + "a1 1 0 011 1" * n + 'x"/>')
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            with pytest.raises(ValueError, match="SVG"):
                from_svg(text)
            best = min(best, time.perf_counter() - t0)
        return best

    small, large = cost(2_000), cost(20_000)
    assert large < 40 * max(small, 1e-4)
