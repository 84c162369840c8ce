"""End to end: the Text to Image tab on the tiny pipeline, launched on a free port and driven by gradio_client."""

from __future__ import annotations

import pytest

from pipelines.text2image import ModelPreset, Text2ImagePipeline
from studio.media import read_png_metadata
from studio.ui.text2image import build
from conftest import launch_local
from t2i_tiny import make_tiny_sd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def url(tmp_path_factory, tiny_scorer):
    pipe = make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_tokenizer"))
    t2i = Text2ImagePipeline(pipe, tiny_scorer, model_name="tiny-sd",
                             preset=ModelPreset(steps=1, guidance_scale=0.0, size=32, one_step=True))
    demo = build(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, defaults=t2i.defaults())
    url = launch_local(demo)
    yield url
    demo.close()


def test_generate_refine_edit_and_restore_through_the_api(url):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    gallery, files, info, seed, history = client.predict("a red circle", "", 1, 0.0, 32, 32, 2, 2, 5, False,
                                                         "default", True, api_name="/t2i_generate")
    assert seed == 5 and len(gallery) == len(history) == 2 and "sorted by CLIP score" in info
    metas = [read_png_metadata(f) for f in files]
    assert [read_png_metadata(g["image"]) for g in gallery] == metas  # the gallery serves the PNGs, not webp
    assert sorted(m["seed"] for m in metas) == [5, 6]
    assert metas[0]["clip_score"] >= metas[1]["clip_score"]
    # the session's results feed refine and edit
    preview, compare, info, history = client.predict(2, 0.01, api_name="/t2i_refine")
    assert "→" in info and len(compare) == 2 and len(history) == 3
    preview, compare, info, history = client.predict("a blue square", 1.0, 2, api_name="/t2i_edit")
    assert "Directional CLIP" in info and len(history) == 4
    # a downloaded PNG restores the controls
    restored = client.predict(handle_file(files[1]), api_name="/t2i_restore")
    assert restored[0] == "a red circle" and restored[2] == metas[1]["seed"] and restored[3] is False
    # bad input comes back as a readable error and the server keeps answering
    with pytest.raises(Exception, match="width"):
        client.predict("a red circle", "", 1, 0.0, 36, 32, 1, 1, 5, False, "default", True, api_name="/t2i_generate")
