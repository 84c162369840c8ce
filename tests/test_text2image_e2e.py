"""End to end: the Text to Image tab on the tiny pipeline, launched on a free port and driven by gradio_client."""

from __future__ import annotations

import pytest
from conftest import launch_local
from t2i_tiny import make_tiny_sd

from pipelines.text2image import Text2ImagePipeline
from pipelines.text2image_models import ModelPreset
from studio.media import read_png_metadata
from studio.tasks import specs
from studio.ui.text2image import EDIT, GENERATE, REFINE, build

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def url(tmp_path_factory, tiny_scorer):
    pipe = make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_tokenizer"))
    t2i = Text2ImagePipeline(pipe, tiny_scorer, model_name="tiny-sd",
                             preset=ModelPreset(num_steps=1, guidance_scale=0.0, size=32, one_step=True))
    demo = build(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, model="tiny-sd", clip_model="tiny-test-vit",
                 specs={GENERATE: specs(t2i.config), REFINE: specs(t2i.refine_config), EDIT: specs(t2i.edit_config)})
    url = launch_local(demo)
    yield url
    demo.close()


def test_generate_refine_edit_and_restore_through_the_api(url):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    # prompt, random seed, then the controls in Text2ImageConfig's order: num_steps, guidance_scale, width,
    # height, num_images, batch_size, seed, scheduler, rerank, negative_prompts
    gallery, files, info, seed, history, progress, preview = client.predict(
        "a red circle", False, 1, 0.0, 32, 32, 2, 2, 5, "default", True, "", api_name="/t2i_generate")
    assert seed == 5 and len(gallery) == len(history) == 2 and "sorted by CLIP score" in info
    assert "done" in progress
    metas = [read_png_metadata(f) for f in files]
    assert [read_png_metadata(g["image"]) for g in gallery] == metas  # the gallery serves the PNGs, not webp
    assert sorted(m["seed"] for m in metas) == [5, 6]
    assert metas[0]["scores"]["clip_score"] >= metas[1]["scores"]["clip_score"]
    # the session's results feed refine (num_steps, reg_weight) and edit (text, strength, proximity, num_steps)
    preview, compare, info, files_out, history, progress = client.predict(2, 0.01, api_name="/t2i_refine")
    assert "→" in info and len(compare) == 2 and len(history) == 3 and len(files_out) == 2
    preview, compare, info, files_out, history, progress = client.predict("a blue square", 1.0, 1.0, 2,
                                                                          api_name="/t2i_edit")
    assert "Directional CLIP" in info and len(history) == 4
    # a downloaded PNG restores the controls: prompt, random seed, the generation controls, ...
    restored = client.predict(handle_file(files[1]), api_name="/t2i_restore")
    assert restored[0] == "a red circle" and restored[1] is False and restored[8] == metas[1]["seed"]
    # bad input comes back as a readable error and the server keeps answering
    with pytest.raises(Exception, match="width"):
        client.predict("a red circle", False, 1, 0.0, 36, 32, 1, 1, 5, "default", True, "", api_name="/t2i_generate")
