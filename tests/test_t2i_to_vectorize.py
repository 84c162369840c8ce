"""Text to Image → Vectorize in one click (issue 25): "Vectorize selected" puts the selected result into Vector
Sketch's Picture → SVG upload and selects that tab and sub-tab; a Vectorize run there makes the SVG of it."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image
from t2i_tiny import make_tiny_sd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app_with_tiny_t2i(tiny_configs, tmp_path_factory):
    from studio import app

    folder = tmp_path_factory.mktemp("t2i") / "tiny-sd"
    make_tiny_sd(folder.parent / "tok").save_pretrained(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_T2I_MODEL", str(folder))
        demo = app.build_app(clip="tiny-test-vit", device="cpu")
    yield demo
    demo.close()


def test_vectorize_selected_fills_picture_to_svg_and_selects_it(app_with_tiny_t2i, tmp_path):
    from pipelines.vectorize import VectorizePipeline
    from studio.ui.vector_sketch import SKETCH_TAB, VECTORIZE_TAB

    demo = app_with_tiny_t2i
    (event,) = [f for f in demo.fns.values() if f.api_name == "t2i_vectorize"]
    (run,) = [f for f in demo.fns.values() if f.api_name == "sketch_vectorize"]
    picture, seen, outer, inner = event.outputs
    assert picture in run.inputs  # the box the Vectorize button reads
    assert isinstance(outer, gr.Tabs) and isinstance(inner, gr.Tabs) and isinstance(seen, gr.Image)
    tab_ids = {b.id for b in demo.blocks.values() if isinstance(b, gr.Tab)}
    assert {SKETCH_TAB, VECTORIZE_TAB} <= tab_ids

    red, blue = tmp_path / "0.png", tmp_path / "1.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(red)
    Image.new("RGB", (32, 32), (30, 30, 220)).save(blue)
    records = [{"path": str(red)}, {"path": str(blue)}]
    path, shown, to_sketch, to_vectorize = event.fn(records, 1)
    assert path == str(blue) and shown["value"] == str(blue) and shown["visible"]
    assert to_sketch.selected == SKETCH_TAB and to_vectorize.selected == VECTORIZE_TAB
    # and the picture it sent becomes an SVG of it there
    out = VectorizePipeline()(path, num_paths=1, num_steps=20, canvas_size=32)
    assert out.svg.count("<path") == 1 and out.scores["psnr"] > 30
    with pytest.raises(gr.Error, match="Generate an image first"):
        event.fn([], 0)
    with pytest.raises(gr.Error, match="No result number 3"):
        event.fn(records, 2)
