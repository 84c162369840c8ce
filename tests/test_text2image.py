"""Text2ImagePipeline on a tiny seeded Stable-Diffusion-style pipeline and the tiny CLIP scorer (CPU, offline)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from pipelines.text2image import GenerationProgress, ModelPreset, Text2ImagePipeline, chi_norm_nll
from studio.hub import WeightsNotFoundError
from studio.media import read_png_metadata
from studio.scorer import StudioOOMError
from t2i_tiny import make_tiny_sd

PROMPT = "a red circle"
TINY_PRESET = ModelPreset(steps=1, guidance_scale=0.0, size=32, one_step=True)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def as_tensor(images) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images])


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_tokenizer"))


@pytest.fixture(scope="module")
def t2i(tiny_pipe, tiny_scorer):
    return Text2ImagePipeline(tiny_pipe, tiny_scorer, model_name="tiny-sd", preset=TINY_PRESET)


def test_each_image_reproduces_from_its_own_seed(t2i):
    batch = t2i(PROMPT, num_images=3, seed=11)
    assert batch.seeds == [11, 12, 13]
    assert [im.size for im in batch.images] == [(32, 32)] * 3
    assert batch.latents.shape == (3, 4, 16, 16) and batch.noise.shape == (3, 4, 16, 16)
    for i, s in enumerate(batch.seeds):
        alone = t2i(PROMPT, num_images=1, seed=s)
        assert np.abs(pixels(alone.images[0]) - pixels(batch.images[i])).max() <= 1  # batched matmuls may round
        torch.testing.assert_close(alone.latents[0], batch.latents[i], atol=1e-4, rtol=1e-4)
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).max() > 10  # different seeds differ
    # splitting the request into batches of 2 changes nothing
    split = t2i(PROMPT, num_images=3, batch_size=2, seed=11)
    for a, b in zip(split.images, batch.images):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_multistep_scheduler_with_guidance_reproduces_per_image(t2i):
    kwargs = dict(steps=2, guidance_scale=3.0, negative_prompt="blurry", scheduler="euler_a")
    batch = t2i(PROMPT, num_images=2, seed=3, **kwargs)
    alone = t2i(PROMPT, num_images=1, seed=4, **kwargs)  # ancestral noise comes from each image's own generator
    assert np.abs(pixels(alone.images[0]) - pixels(batch.images[1])).max() <= 1
    default = t2i(PROMPT, num_images=1, seed=4, steps=2, guidance_scale=3.0, negative_prompt="blurry")
    assert np.abs(pixels(default.images[0]) - pixels(alone.images[0])).max() > 0
    assert t2i.pipe.scheduler is t2i._base_scheduler  # restored for the next call


@pytest.fixture
def unet_calls(tiny_pipe):
    """The thread name of every UNet forward, recorded by a hook (at guidance 0: one forward per denoising step)."""
    calls: list[str] = []
    handle = tiny_pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(
        threading.current_thread().name))
    yield calls
    handle.remove()


def workers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "text2image-denoise"]


def plain_diffusers(pipe, seeds: list[int], steps: int) -> list:
    """The images a bare diffusers call makes from the noise each seed gives (the pipeline's documented recipe)."""
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(4, 16, 16, generator=g) for g in generators])
    out = pipe([PROMPT] * len(seeds), num_inference_steps=steps, guidance_scale=0.0, width=32, height=32,
               latents=noise, generator=generators, output_type="pil")
    return out.images


@pytest.mark.parametrize("steps", [1, 4])
def test_generation_equals_a_plain_diffusers_call(t2i, tiny_pipe, unet_calls, steps):
    out = t2i(PROMPT, num_images=3, batch_size=2, steps=steps, seed=50)
    # one-step models run in the caller's thread (nothing to report within the call); multi-step in a worker
    expected_thread = threading.current_thread().name if steps == 1 else "text2image-denoise"
    assert set(unet_calls) == {expected_thread} and len(unet_calls) == 2 * steps
    for ours, plain in zip(out.images, plain_diffusers(tiny_pipe, [50, 51, 52], steps), strict=True):
        assert np.abs(pixels(ours) - pixels(plain)).max() <= 1
    assert not out.stopped and not workers_alive()


def test_multistep_generation_reports_every_denoising_step(t2i, unet_calls):
    items = list(t2i.iter_generate(PROMPT, num_images=3, batch_size=2, steps=6, seed=9))
    progress, out = items[:-1], items[-1]
    assert all(isinstance(p, GenerationProgress) and not p.done for p in progress) and out.done
    assert [p.step for p in progress] == list(range(1, 13)) and {p.total for p in progress} == {12}
    assert [(p.batch_step, p.batch_steps, p.first_image, p.last_image, p.num_images) for p in progress] == (
        [(s, 6, 1, 2, 3) for s in range(1, 7)] + [(s, 6, 3, 3, 3) for s in range(1, 7)])
    assert progress[0].preview is None and progress[6].preview is out.images[1]  # the last finished image
    assert len(unet_calls) == 12 and len(out.images) == 3 and not out.stopped
    seen = []
    t2i(PROMPT, num_images=3, batch_size=2, steps=6, seed=9, callback=lambda step, total, preview: seen.append(
        (step, total)))
    assert seen == [(s, 12) for s in range(1, 13)]


def test_closing_the_generator_mid_batch_ends_the_diffusers_call(t2i, unet_calls):
    gen = t2i.iter_generate(PROMPT, num_images=1, steps=8, seed=5)
    assert next(gen).step == 1 and next(gen).step == 2
    gen.close()
    # the worker runs at most one step ahead of what the caller saw and ends at the step after the stop
    assert 2 <= len(unet_calls) <= 4 and not workers_alive()
    unet_calls.clear()
    again = t2i(PROMPT, num_images=1, steps=8, seed=5)  # the lock was released and nothing is left over
    assert len(unet_calls) == 8 and not again.stopped


def test_callback_false_mid_batch_keeps_only_finished_images(t2i, unet_calls):
    full = t2i(PROMPT, num_images=3, batch_size=2, steps=6, seed=30)
    unet_calls.clear()
    # stop at step 2 of the second batch (images 3..3): the first batch is kept, the second dropped
    out = t2i.rerank(PROMPT, num_candidates=3, batch_size=2, steps=6, seed=30,
                     callback=lambda step, total, preview: step < 8)
    assert out.stopped and sorted(out.seeds) == [30, 31] and len(out.images) == len(out.scores) == 2
    assert out.latents.shape == out.noise.shape == (2, 4, 16, 16) and out.scores == sorted(out.scores, reverse=True)
    assert 8 <= len(unet_calls) <= 10 and not workers_alive()
    for image, seed in zip(out.images, out.seeds):
        assert np.abs(pixels(image) - pixels(full.images[seed - 30])).max() <= 1
    # stopped within the first batch: no image is finished
    unet_calls.clear()
    none = t2i(PROMPT, num_images=2, steps=6, seed=30, callback=lambda step, total, preview: False)
    assert none.stopped and none.images == [] and none.seeds == [] and none.latents.shape == (0, 4, 16, 16)
    assert 1 <= len(unet_calls) <= 3


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error, expected, match", [
    (Boom("the UNet broke"), Boom, "the UNet broke"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), StudioOOMError,
     "ran out of memory during generation of 2 image"),
])
def test_errors_in_the_worker_reach_the_caller(t2i, tiny_pipe, error, expected, match):
    calls = []

    def fail_at_third_step(module, args):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise error

    handle = tiny_pipe.unet.register_forward_pre_hook(fail_at_third_step)
    try:
        with pytest.raises(expected, match=match):
            t2i(PROMPT, num_images=2, steps=6, seed=1)
    finally:
        handle.remove()
    assert calls == ["text2image-denoise"] * 3 and not workers_alive()
    assert len(t2i(PROMPT, num_images=1, steps=2, seed=1).images) == 1  # the lock was released


def test_rerank_order_equals_the_scorers_order(t2i, tiny_scorer):
    plain = t2i(PROMPT, num_images=5, batch_size=2, seed=100)
    ranked = t2i.rerank(PROMPT, num_candidates=5, batch_size=2, seed=100)
    independent = tiny_scorer.score(as_tensor(plain.images), [PROMPT])[:, 0].tolist()
    expected = sorted(range(5), key=lambda i: -independent[i])
    assert ranked.reranked and ranked.seeds == [plain.seeds[i] for i in expected]
    assert ranked.scores == sorted(ranked.scores, reverse=True)
    np.testing.assert_allclose(ranked.scores, [independent[i] for i in expected], atol=0.5)  # uint8 rounding
    for i, j in enumerate(expected):
        assert np.abs(pixels(ranked.images[i]) - pixels(plain.images[j])).max() <= 1
        torch.testing.assert_close(ranked.latents[i], plain.latents[j])


def test_refine_raises_the_clip_score_and_starts_from_the_generated_image(t2i):
    seen = []
    out = t2i.refine(PROMPT, seed=21, steps=4, gradient_checkpointing=True,
                     callback=lambda step, total, preview: seen.append((step, total)))
    generated = t2i(PROMPT, num_images=1, seed=21)
    assert np.abs(pixels(out.start_image) - pixels(generated.images[0])).max() <= 1
    assert out.score_before == pytest.approx(generated.scores[0], abs=0.5)
    assert len(out.scores) == 5 and seen == [(s, 4) for s in range(5)]
    assert out.score_after == max(out.scores) and out.score_after > out.score_before + 0.5
    assert out.best_step > 0 and out.noise.shape == (1, 4, 16, 16) and out.latents.shape == (1, 4, 16, 16)
    assert t2i.pipe.unet.is_gradient_checkpointing and t2i.pipe.vae.is_gradient_checkpointing
    plain = t2i.refine(PROMPT, seed=21, steps=4)  # CPU default: no checkpointing, same numbers
    assert not t2i.pipe.unet.is_gradient_checkpointing
    np.testing.assert_allclose(plain.scores, out.scores, atol=1e-3)
    assert all(p.grad is None for p in t2i.pipe.unet.parameters())  # gradients flow to the noise only


def test_refine_stops_when_the_callback_says_so(t2i):
    out = t2i.refine(PROMPT, seed=21, steps=10, callback=lambda step, total, preview: step < 1)
    assert out.stopped and len(out.scores) == 2


def test_chi_regulariser_is_smallest_at_the_typical_noise_norm():
    d = 1024
    r = torch.linspace(10.0, 60.0, 5001)
    nll = chi_norm_nll(r, d)
    assert r[nll.argmin()].item() == pytest.approx((d - 1) ** 0.5, abs=0.02)


def test_refine_needs_a_one_step_model(tiny_pipe, tiny_scorer):
    multi = Text2ImagePipeline(tiny_pipe, tiny_scorer, model_name="tiny-multi",
                               preset=ModelPreset(steps=25, guidance_scale=7.5, size=32, one_step=False))
    with pytest.raises(ValueError, match="one-step"):
        multi.refine(PROMPT, seed=1, steps=2)


def test_edit_moves_the_directional_score(t2i, tiny_scorer):
    source = t2i(PROMPT, num_images=1, seed=5)
    out = t2i.edit(source.latents[0], PROMPT, "a blue square", strength=1.0, steps=6, lr=0.1)
    assert len(out.directional) == 6 and out.edit_score_after > out.edit_score_before
    # a random move of the same size does not point along the text change
    delta = out.latents - source.latents[:1]
    torch.manual_seed(0)
    rand = source.latents[:1] + torch.randn_like(delta) * delta.norm() / delta.numel() ** 0.5
    with torch.no_grad():
        t = tiny_scorer.encode_text([PROMPT, "a blue square"])
        e0 = tiny_scorer.encode_image(t2i._decode(source.latents[:1]))
        er = tiny_scorer.encode_image(t2i._decode(rand))
    random_dir = torch.nn.functional.cosine_similarity(er - e0, (t[1] - t[0])[None]).item()
    assert out.directional[-1] > 0.2 and out.directional[-1] > random_dir + 0.2
    # strength pulls: a weak edit stays closer to the original latent
    weak = t2i.edit(source.latents[0], PROMPT, "a blue square", strength=0.05, steps=6, lr=0.1)
    assert (weak.latents - source.latents[:1]).norm() < delta.norm()


def test_png_metadata_round_trips_and_reproduces(t2i, tmp_path):
    out = t2i(PROMPT, num_images=2, seed=7)
    path = out.save(1, tmp_path / "img.png")
    meta = read_png_metadata(path)
    assert meta == out.metadata(1)
    assert meta["seed"] == 8 and meta["prompt"] == PROMPT and meta["model"] == "tiny-sd"
    assert meta["clip_score"] == pytest.approx(out.scores[1], abs=1e-3)
    again = t2i(meta["prompt"], seed=meta["seed"], steps=meta["steps"], guidance_scale=meta["guidance_scale"],
                width=meta["width"], height=meta["height"], scheduler=meta["scheduler"])
    assert np.abs(pixels(again.images[0]) - pixels(out.images[1])).max() <= 1


@pytest.mark.parametrize("kwargs, arg, shown", [
    ({"prompt": ""}, "prompt", "''"),
    ({"prompt": "   "}, "prompt", "'   '"),
    ({"width": 36}, "width", "36"),
    ({"height": 2048}, "height", "2048"),
    ({"steps": 0}, "steps", "0"),
    ({"batch_size": 9}, "batch_size", "9"),
    ({"num_images": 65}, "num_images", "65"),
    ({"guidance_scale": -1.0}, "guidance_scale", "-1.0"),
    ({"negative_prompt": "dark", "guidance_scale": 0.0}, "negative_prompt", "'dark'"),
    ({"seed": -3}, "seed", "-3"),
    ({"scheduler": "plms"}, "scheduler", "'plms'"),
])
def test_bad_inputs_name_the_argument_and_value(t2i, kwargs, arg, shown):
    kwargs = {"prompt": PROMPT, **kwargs}
    with pytest.raises(ValueError) as info:
        t2i(kwargs.pop("prompt"), **kwargs)
    assert f"`{arg}`" in str(info.value) and shown in str(info.value)


def test_bad_edit_and_refine_inputs(t2i, tmp_path):
    latent = torch.zeros(4, 16, 16)
    with pytest.raises(ValueError, match="`strength`.*0"):
        t2i.edit(latent, PROMPT, "a blue square", strength=0)
    with pytest.raises(ValueError, match="`edit_prompt`"):
        t2i.edit(latent, PROMPT, "")
    with pytest.raises(ValueError, match="`latents`.*channels"):
        t2i.edit(torch.zeros(3, 16, 16), PROMPT, "a blue square")
    with pytest.raises(ValueError, match="`steps`.*0"):
        t2i.refine(PROMPT, seed=1, steps=0)
    with pytest.raises(ValueError, match="`offload`.*'cpu'"):
        Text2ImagePipeline.from_pretrained(str(tmp_path / "no-model"), device="cpu", offload=True)
    with pytest.raises(ValueError, match="`offload`.*'sometimes'"):
        Text2ImagePipeline.from_pretrained(str(tmp_path / "no-model"), device="cpu", offload="sometimes")


def test_missing_model_offline_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("STUDIO_T2I_MODEL", raising=False)
    with pytest.raises(WeightsNotFoundError) as info:
        Text2ImagePipeline.from_pretrained(device="cpu")
    text = str(info.value)
    for needle in ("stabilityai/sd-turbo", "cache", "HF_HUB_OFFLINE", "STUDIO_T2I_MODEL", "--local-dir"):
        assert needle in text
    monkeypatch.setenv("STUDIO_T2I_MODEL", str(tmp_path / "no-such-folder"))
    with pytest.raises(WeightsNotFoundError, match="no-such-folder.*does not exist"):
        Text2ImagePipeline.from_pretrained(device="cpu")


def test_from_pretrained_loads_a_local_folder(tiny_pipe, tiny_scorer, t2i, tmp_path, monkeypatch):
    tiny_pipe.save_pretrained(tmp_path / "tiny-sd")
    monkeypatch.setenv("STUDIO_T2I_MODEL", str(tmp_path / "tiny-sd"))
    loaded = Text2ImagePipeline.from_pretrained(scorer=tiny_scorer, device="cpu", one_step=True)
    assert loaded.source.startswith("local folder") and loaded.preset.one_step and loaded.dtype == torch.float32
    a = loaded(PROMPT, seed=2, width=32, height=32)
    b = t2i(PROMPT, seed=2)
    assert np.abs(pixels(a.images[0]) - pixels(b.images[0])).max() <= 1
    assert loaded.defaults()["width"] == 32  # sample_size 16 x VAE factor 2


def test_cuda_out_of_memory_becomes_a_clear_error(t2i, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(t2i, "pipe", type("Exploding", (), {"__call__": out_of_memory, "scheduler": None,
                                                             "unet": t2i.pipe.unet, "vae": t2i.pipe.vae,
                                                             "_execution_device": torch.device("cpu")})())
    with pytest.raises(StudioOOMError, match="ran out of memory during generation of 2 image"):
        t2i(PROMPT, num_images=2, seed=1)


def _demo_clip_present() -> bool:
    from studio.hub import DEMO_CLIP, MODELS_DIR

    return (MODELS_DIR / f"{DEMO_CLIP}.safetensors").is_file()


@pytest.mark.skipif(not _demo_clip_present(), reason="the bundled demo CLIP is not in this checkout yet")
def test_refine_raises_the_demo_clip_score(tiny_pipe, demo_scorer):
    t2i = Text2ImagePipeline(tiny_pipe, demo_scorer, model_name="tiny-sd", preset=TINY_PRESET)
    out = t2i.refine("a red circle", seed=3, steps=4, width=64, height=64)
    assert out.score_after > out.score_before + 0.5 and out.best_step > 0
