"""Run-protocol cases for the Text to Image tasks (see tests/test_run_protocol.py): the tiny seeded Stable Diffusion
of tests/t2i_tiny.py set up as a one-step model (refine needs one), two steps each, every step previewing."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

PROMPT = "a red circle"


@functools.cache
def _tiny_sd():
    from t2i_tiny import make_tiny_sd

    return make_tiny_sd(Path(tempfile.mkdtemp(prefix="t2i-case-tokenizer-")))


def session(scorer):
    from pipelines.text2image_core import Text2ImageSession
    from pipelines.text2image_models import ModelPreset

    return Text2ImageSession(_tiny_sd(), scorer, model_name="tiny-sd",
                             preset=ModelPreset(num_steps=1, guidance_scale=0.0, size=32, one_step=True))


def _pipeline(scorer, name="text2image"):
    """The registered task's own class on a session of the tiny model."""
    from pipelines.registry import get_task

    return get_task(name).pipeline(session(scorer))


def text2image(scorer):
    # one-step model, two batches of one image: a step (and a preview) per batch
    return _pipeline(scorer), {"prompt": PROMPT}, {"num_images": 2, "batch_size": 1, "seed": 3}


def text2image_refine(scorer):
    return _pipeline(scorer, "text2image-refine"), {"prompt": PROMPT}, {"num_steps": 2, "seed": 3}


def text2image_edit(scorer):
    pipe = _pipeline(scorer, "text2image-edit")
    latents = _pipeline(scorer)(PROMPT, num_images=1, seed=3).latents[0]  # the latent comes from a tiny generation
    return pipe, {"latents": latents, "source_prompt": PROMPT, "edit_prompt": "a blue square"}, {"num_steps": 2}


def photo():
    """A 32 x 32 start image: one of the demo shape scenes (studio/demo)."""
    from PIL import Image

    from studio.demo.shapes import make_sample

    return Image.fromarray(make_sample(0, image_size=32).image)


def half_mask():
    """The right half of a 32 x 32 image, white (repaint) on black."""
    from PIL import Image

    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (16, 0, 32, 32))
    return mask


def text2image_img2img(scorer):
    # 4 steps at strength 0.5: two denoising steps, each previewing
    return (_pipeline(scorer, "text2image-img2img"), {"image": photo(), "prompt": PROMPT},
            {"num_steps": 4, "strength": 0.5, "seed": 3})


def text2image_inpaint(scorer):
    return (_pipeline(scorer, "text2image-inpaint"), {"image": photo(), "prompt": "a blue square", "mask": half_mask()},
            {"num_steps": 2, "seed": 3})


CASES = {"text2image": text2image, "text2image-refine": text2image_refine, "text2image-edit": text2image_edit,
         "text2image-img2img": text2image_img2img, "text2image-inpaint": text2image_inpaint}
FILES = {"text2image": {"png"}, "text2image-refine": {"png", "video"}, "text2image-edit": {"png", "video"},
         "text2image-img2img": {"png"}, "text2image-inpaint": {"png"}}
