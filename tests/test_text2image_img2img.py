"""img2img and inpainting/outpainting (issue 24) on the tiny seeded Stable Diffusion of tests/t2i_tiny.py: the ends of
`strength` are exact (0: the image through the VAE; 1: text-to-image from the seed), every pixel outside an
inpainting mask is the input's, each image reproduces from its own seed, the weights are the session's own, and bad
input is refused by name before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from t2i_tiny import make_tiny_sd

from pipelines.text2image import Text2ImagePipeline
from pipelines.text2image_core import Text2ImageSession, image_tensor
from pipelines.text2image_img2img import Text2ImageImg2ImgConfig, Text2ImageImg2ImgPipeline
from pipelines.text2image_inpaint import Text2ImageInpaintPipeline, crop_box, feather, load_mask
from pipelines.text2image_models import ModelPreset
from studio.images import to_pil

PROMPT = "a blue square"
TINY = ModelPreset(num_steps=1, guidance_scale=0.0, size=32, one_step=True)


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_scorer):
    pipe = make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_tokenizer"))
    return Text2ImageSession(pipe, tiny_scorer, model_name="tiny-sd", preset=TINY)


@pytest.fixture(scope="module")
def i2i(session):
    return Text2ImageImg2ImgPipeline(session)


@pytest.fixture(scope="module")
def inpaint(session):
    return Text2ImageInpaintPipeline(session)


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    arr = np.zeros((32, 40, 3), np.uint8)  # not square: width and height must not be swapped anywhere
    arr[..., 0] = 200
    arr[8:24, 8:24] = rng.integers(0, 255, (16, 16, 3))
    return Image.fromarray(arr)


def pixels(im) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


def right_half(width=40, height=32) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[:, width // 2:] = True
    return mask


# ------------------------------------------------------------------------------------------------ img2img
def test_img2img_uses_the_sessions_weights(session, i2i, inpaint):
    for kind in ("image2image", "inpainting"):
        variant = session.variant(kind)
        assert variant is session.variant(kind)  # made once
        for name in ("unet", "vae", "text_encoder", "tokenizer"):
            assert getattr(variant, name) is getattr(session.pipe, name), (kind, name)


def test_strength_0_is_the_vae_round_trip(session, i2i, photo):
    out = i2i(photo, PROMPT, strength=0.0, num_images=2)
    with torch.no_grad():
        expected = to_pil(session.decode(session.encode(image_tensor([photo])))[0])
    assert [im.size for im in out.images] == [photo.size] * 2
    assert all(np.array_equal(pixels(im), pixels(expected)) for im in out.images)
    assert out.source is not None and np.array_equal(pixels(out.source), pixels(photo))


def test_strength_1_equals_text_to_image_from_that_seed(session, i2i, photo):
    t2i = Text2ImagePipeline(session)
    for steps in (1, 3):
        ours = i2i(photo, PROMPT, strength=1.0, num_steps=steps, seed=11, num_images=2, batch_size=1)
        for k in range(2):
            plain = t2i(PROMPT, num_steps=steps, seed=11 + k, num_images=1, width=40, height=32, rerank=False)
            assert np.array_equal(pixels(ours.images[k]), pixels(plain.images[0])), (steps, k)


def test_each_img2img_image_reproduces_from_its_own_seed_and_steps_follow_strength(i2i, photo):
    items = list(i2i.iter_img2img(photo, PROMPT, strength=0.5, num_steps=4, seed=20, num_images=3, batch_size=2))
    progress, out = items[:-1], items[-1]
    assert [p.step for p in progress] == list(range(1, 5)) and progress[-1].total == 4  # 2 batches x int(4 x 0.5)
    assert out.seeds == [20, 21, 22] and out.latents.shape == (3, 4, 16, 20)
    alone = i2i(photo, PROMPT, strength=0.5, num_steps=4, seed=22)
    assert np.array_equal(pixels(alone.images[0]), pixels(out.images[2]))
    other = i2i(photo, PROMPT, strength=0.75, num_steps=4, seed=22)
    assert not np.array_equal(pixels(other.images[0]), pixels(out.images[2]))


@pytest.mark.parametrize("settings,match", [
    ({"strength": 1.5}, r"`strength` must be a number in \[0, 1\], got 1.5"),
    ({"strength": -0.1}, "`strength`"),
    ({"strength": 0.2, "num_steps": 2}, "`strength` x `num_steps` must make at least one denoising step"),
    ({"negative_prompts": "dark", "guidance_scale": 0.0}, "`negative_prompts`"),
])
def test_img2img_bad_settings_are_named_before_any_work(i2i, photo, settings, match, monkeypatch):
    monkeypatch.setattr(i2i.session, "encode", lambda *a: pytest.fail("work began"))
    with pytest.raises(ValueError, match=match):
        i2i(photo, PROMPT, **settings)


def test_an_image_whose_sides_are_not_multiples_of_8_is_resized_and_says_so(i2i):
    out = i2i(Image.new("RGB", (37, 30), (200, 0, 0)), PROMPT, strength=0.0)
    assert out.images[0].size == (32, 24) and "resized from 37×30 to 32×24" in out.notice


def test_img2img_config_follows_the_model_family():
    turbo, sd15 = Text2ImageImg2ImgConfig.for_model("stabilityai/sd-turbo"), Text2ImageImg2ImgConfig.for_model("x/sd")
    assert (turbo.num_steps, turbo.strength, turbo.guidance_scale) == (2, 0.5, 0.0)
    assert (sd15.num_steps, sd15.strength, sd15.guidance_scale) == (25, 0.75, 7.5)


# ------------------------------------------------------------------------------------------------ inpaint
@pytest.mark.parametrize("settings", [
    {},  # mask_blur 4 (the default)
    {"mask_blur": 0},
    {"mask_blur": 9, "num_steps": 3, "guidance_scale": 2.0, "negative_prompts": "dark"},
    {"padding": 8, "num_steps": 2},
    {"strength": 0.5, "num_steps": 4},
])
def test_every_pixel_outside_the_mask_is_the_inputs(inpaint, photo, settings):
    mask = right_half()
    out = inpaint(photo, PROMPT, mask, seed=3, **settings)
    result, source = pixels(out.images[0]), pixels(photo)
    assert result.shape == source.shape
    assert np.array_equal(result[~mask], source[~mask])
    assert np.abs(result[mask] - source[mask]).mean() > 5  # the masked half was repainted
    assert out.alpha.max() > 0.9 and (out.alpha[~mask] == 0).all()


def test_each_inpainted_image_reproduces_from_its_own_seed(inpaint, photo):
    items = list(inpaint.iter_inpaint(photo, PROMPT, right_half(), num_steps=2, seed=5, num_images=3, batch_size=2))
    progress, out = items[:-1], items[-1]
    assert [p.step for p in progress] == [1, 2, 3, 4] and all(p.preview is not None for p in progress[1::2])
    alone = inpaint(photo, PROMPT, right_half(), num_steps=2, seed=7)
    assert np.array_equal(pixels(alone.images[0]), pixels(out.images[2]))


def test_outpainting_extends_the_canvas_and_keeps_the_original_area(inpaint, photo):
    out = inpaint(photo, PROMPT, None, outpaint_left=8, outpaint_bottom=16, num_steps=2)
    result = pixels(out.images[0])
    assert result.shape == (32 + 16, 40 + 8, 3)
    assert np.array_equal(result[:32, 8:], pixels(photo))
    new = np.ones(result.shape[:2], bool)
    new[:32, 8:] = False
    assert np.array_equal(np.asarray(out.mask) > 0, new)
    # with a mask as well: its area and the new one are repainted, the rest kept
    both = inpaint(photo, PROMPT, right_half(), outpaint_top=8, num_steps=2, mask_blur=0)
    kept = np.zeros((40, 40), bool)
    kept[8:, :20] = True
    assert np.array_equal(pixels(both.images[0])[kept], pixels(photo)[:, :20].reshape(-1, 3))


def test_a_painted_layer_is_a_mask_where_it_is_opaque(tmp_path):
    layer = Image.new("RGBA", (40, 32), (0, 0, 0, 0))
    layer.paste((255, 40, 40, 255), (20, 0, 40, 32))  # a red brush stroke on a transparent layer
    layer.save(tmp_path / "layer.png")
    assert np.array_equal(load_mask(tmp_path / "layer.png"), right_half())
    grey = Image.fromarray((right_half() * 255).astype(np.uint8))
    assert np.array_equal(load_mask(grey), right_half()) and np.array_equal(load_mask(right_half() * 1.0), right_half())


def test_feather_stays_inside_the_mask():
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    alpha = feather(mask, 6)
    assert (alpha[~mask] == 0).all() and alpha[32, 32] > 0.99
    assert 0 < alpha[16, 32] < alpha[20, 32] < alpha[28, 32]  # ramps up inward from the edge


def test_crop_box_grows_by_the_padding_to_multiples_of_8():
    mask = np.zeros((64, 96), bool)
    mask[30:34, 40:45] = True
    assert crop_box(mask, 8, 8) == (32, 22, 56, 46)
    assert crop_box(mask, 200, 8) == (0, 0, 96, 64)


@pytest.mark.parametrize("mask,settings,match", [
    (np.zeros((32, 40), bool), {}, "`mask` is empty"),
    (np.ones((32, 40), bool), {}, "`mask` covers the whole image"),
    (np.ones((32, 32), bool), {}, r"`mask` must have the image's size, 40×32, got 32×32"),
    (None, {}, "`mask` is missing"),
    ("right", {"outpaint_left": 1000}, r"outpainting makes the canvas 1040×32, past the model's limit of 1024"),
    ("right", {"outpaint_top": 4}, "`outpaint_top` must be a multiple of 8, got 4"),
    ("right", {"strength": 1.2}, r"`strength` must be a number in \[0, 1\]"),
    ("right", {"strength": 0.0}, "`strength` x `num_steps` must make at least one denoising step"),
    ("right", {"mask_blur": 65}, "`mask_blur`"),
    (b"not an image", {}, "`mask` could not be read as an image"),
])
def test_inpaint_bad_input_is_named_before_any_work(inpaint, photo, mask, settings, match, monkeypatch):
    monkeypatch.setattr(inpaint.session, "iterate_calls", lambda *a, **k: pytest.fail("work began"))
    with pytest.raises(ValueError, match=match):
        inpaint(photo, PROMPT, right_half() if isinstance(mask, str) else mask, **settings)


# ------------------------------------------------------------------------------------------------ refine / edit a photo
@pytest.fixture(scope="module")
def demo_session(session, demo_scorer):
    """The tiny model with the bundled demo CLIP (shapes-clip), whose scores mean something for the demo shapes."""
    return Text2ImageSession(session.pipe, demo_scorer, model_name="tiny-sd", preset=TINY)


@pytest.fixture(scope="module")
def shape_photo():
    from studio.demo.shapes import make_sample

    return Image.fromarray(make_sample(3, image_size=64).image)


def test_edit_from_a_photo_raises_its_clip_score_and_reproduces(demo_session, shape_photo):
    from pipelines.text2image_edit import Text2ImageEditPipeline

    edit = Text2ImageEditPipeline(demo_session)
    out = edit(shape_photo, "a red circle", "a blue square", proximity=0.0, num_steps=6, lr=0.1)
    with torch.no_grad():
        through_vae = to_pil(demo_session.decode(demo_session.encode(image_tensor([shape_photo])))[0])
    assert np.array_equal(pixels(out.original), pixels(through_vae))  # it starts from the photo's VAE encoding
    assert out.scores["clip_score"] > out.scores["clip_score_before"] + 0.5
    again = edit(shape_photo, **out.settings)
    assert np.array_equal(pixels(again.image), pixels(out.image))


def test_refine_from_a_photo_raises_its_clip_score_and_reproduces(demo_session, shape_photo):
    from pipelines.text2image_refine import Text2ImageRefinePipeline

    refine = Text2ImageRefinePipeline(demo_session)
    out = refine("a blue square", image=shape_photo, num_steps=4, seed=2)
    assert out.image.size == shape_photo.size and (out.settings["width"], out.settings["height"]) == (64, 64)
    assert out.scores["clip_score"] > out.scores["clip_score_before"] + 0.5 and out.best_step > 0
    again = refine(image=shape_photo, **out.settings)
    assert np.array_equal(pixels(again.image), pixels(out.image))
    # the start is the photo's latent noised to `strength`'s timestep: SD-Turbo's img2img level at 0.5
    from pipelines.text2image_refine import noised_start, start_timestep

    assert [start_timestep(demo_session, s) for s in (0.01, 0.5, 1.0)] == [9, 499, 999]
    z, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    gaps = [(noised_start(demo_session, z, eps, start_timestep(demo_session, s)) - z).norm() for s in (0.01, 0.5, 1)]
    assert gaps[0] < 0.2 * z.norm() and gaps[0] < gaps[1] < gaps[2]


def test_latent_blending_keeps_the_images_latent_outside_the_mask_at_every_step(inpaint, photo, monkeypatch):
    """An ordinary (4-channel here; any channel count) model is inpainted by blending: after the last step the
    latent outside the mask is exactly the image's encoding, before any pixel composite."""
    session = inpaint.session
    finals = []
    denoise = session.denoise

    def recording(*args, **kwargs):
        out = denoise(*args, **kwargs)
        finals.append(out[1].detach().float().cpu())
        return out

    monkeypatch.setattr(session, "denoise", recording)
    inpaint(photo, PROMPT, right_half(), num_steps=3, seed=1, num_images=2, batch_size=2)
    with torch.no_grad():
        known = session.encode(image_tensor([photo]))  # (1, 4, 16, 20)
    (final,) = finals
    assert final.shape == (2, 4, 16, 20)
    torch.testing.assert_close(final[..., :10], known[..., :10].expand(2, -1, -1, -1), atol=0, rtol=0)
    assert not torch.allclose(final[..., 10:], known[..., 10:].expand(2, -1, -1, -1), atol=0.05)
