"""Text2ImagePipeline on a tiny seeded Stable-Diffusion-style pipeline and the tiny CLIP scorer (CPU, offline)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from t2i_tiny import make_tiny_sd

from pipelines.text2image import Text2ImageConfig, Text2ImagePipeline
from pipelines.text2image_models import SCHEDULERS, ModelPreset
from pipelines.text2image_refine import chi_norm_nll
from studio.hub import WeightsNotFoundError
from studio.media import read_png_metadata
from studio.progress import Progress
from studio.scorer import StudioOOMError
from studio.tasks import SEED_MAX, specs

PROMPT = "a red circle"
TINY_PRESET = ModelPreset(num_steps=1, guidance_scale=0.0, size=32, one_step=True)
WORKER = "studio-task"  # the thread studio.progress.iterate_callback runs a multi-step diffusers call in


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
    batch = t2i(PROMPT, num_images=3, seed=11, rerank=False)  # in seed order
    assert batch.seeds == [11, 12, 13]
    assert [im.size for im in batch.images] == [(32, 32)] * 3
    assert batch.latents.shape == (3, 4, 16, 16) and batch.noise.shape == (3, 4, 16, 16)
    for i, s in enumerate(batch.seeds):
        alone = t2i(PROMPT, num_images=1, seed=s)
        assert np.abs(pixels(alone.images[0]) - pixels(batch.images[i])).max() <= 1  # batched matmuls may round
        torch.testing.assert_close(alone.latents[0], batch.latents[i], atol=1e-4, rtol=1e-4)
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).max() > 10  # different seeds differ
    # splitting the request into batches of 2 changes nothing
    split = t2i(PROMPT, num_images=3, batch_size=2, seed=11, rerank=False)
    for a, b in zip(split.images, batch.images):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_multistep_scheduler_with_guidance_reproduces_per_image(t2i):
    kwargs = dict(num_steps=2, guidance_scale=3.0, negative_prompts="blurry", scheduler="euler_a", rerank=False)
    batch = t2i(PROMPT, num_images=2, seed=3, **kwargs)
    alone = t2i(PROMPT, num_images=1, seed=4, **kwargs)  # ancestral noise comes from each image's own generator
    assert np.abs(pixels(alone.images[0]) - pixels(batch.images[1])).max() <= 1
    default = t2i(PROMPT, num_images=1, seed=4, num_steps=2, guidance_scale=3.0, negative_prompts="blurry")
    assert np.abs(pixels(default.images[0]) - pixels(alone.images[0])).max() > 0
    assert t2i.pipe.scheduler is t2i.session.base_scheduler  # restored for the next call


@pytest.fixture
def unet_calls(tiny_pipe):
    """The thread name of every UNet forward, recorded by a hook (at guidance 0: one forward per denoising step)."""
    calls: list[str] = []
    handle = tiny_pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(
        threading.current_thread().name))
    yield calls
    handle.remove()


def workers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == WORKER]


def plain_diffusers(pipe, seeds: list[int], steps: int, **kwargs) -> list:
    """The images a bare diffusers call makes from the noise each seed gives (the pipeline's documented recipe)."""
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(4, 16, 16, generator=g) for g in generators])
    out = pipe([PROMPT] * len(seeds), num_inference_steps=steps, width=32, height=32, latents=noise,
               generator=generators, output_type="pil", **{"guidance_scale": 0.0, **kwargs})
    return out.images


@pytest.mark.parametrize("steps", [1, 4])
def test_generation_equals_a_plain_diffusers_call(t2i, tiny_pipe, unet_calls, steps):
    out = t2i(PROMPT, num_images=3, batch_size=2, num_steps=steps, seed=50, rerank=False)
    # one-step models run in the caller's thread (nothing to report within the call); multi-step in a worker
    expected_thread = threading.current_thread().name if steps == 1 else WORKER
    assert set(unet_calls) == {expected_thread} and len(unet_calls) == 2 * steps
    for ours, plain in zip(out.images, plain_diffusers(tiny_pipe, [50, 51, 52], steps), strict=True):
        assert np.abs(pixels(ours) - pixels(plain)).max() <= 1
    assert not out.stopped and not workers_alive()


def test_multistep_generation_reports_every_denoising_step(t2i, unet_calls):
    items = list(t2i.iter_generate(PROMPT, num_images=3, batch_size=2, num_steps=6, seed=9, rerank=False))
    progress, out = items[:-1], items[-1]
    assert all(isinstance(p, Progress) and not p.done for p in progress) and out.done
    assert [p.step for p in progress] == list(range(1, 13)) and {p.total for p in progress} == {12}
    assert [(p.stage, p.metrics["batch_step"], p.metrics["batch_steps"]) for p in progress] == (
        [("images 1–2 of 3", s, 6) for s in range(1, 7)] + [("image 3 of 3", s, 6) for s in range(1, 7)])
    # the last step of a batch comes once its images are decoded and shows the batch's first image
    assert [i for i, p in enumerate(progress) if p.preview is not None] == [5, 11]
    assert np.array_equal(pixels(progress[5].preview), pixels(out.images[0]))
    assert np.array_equal(pixels(progress[11].preview), pixels(out.images[2]))
    assert progress[5].metrics["clip_score"] == pytest.approx(max(out.clip_scores[:2]))
    assert len(unet_calls) == 12 and len(out.images) == 3 and not out.stopped and out.steps_run == 12
    seen = []
    t2i(PROMPT, num_images=3, batch_size=2, num_steps=6, seed=9, callback=lambda step, total, preview: seen.append(
        (step, total)))
    assert seen == [(s, 12) for s in range(1, 13)]


def test_closing_the_generator_mid_batch_ends_the_diffusers_call(t2i, unet_calls):
    gen = t2i.iter_generate(PROMPT, num_images=1, num_steps=8, seed=5)
    assert next(gen).step == 1 and next(gen).step == 2
    gen.close()
    # the worker runs at most one step ahead of what the caller saw and ends at the step after the stop
    assert 2 <= len(unet_calls) <= 4 and not workers_alive()
    unet_calls.clear()
    again = t2i(PROMPT, num_images=1, num_steps=8, seed=5)  # the lock was released and nothing is left over
    assert len(unet_calls) == 8 and not again.stopped


def test_callback_false_mid_batch_keeps_only_finished_images(t2i, unet_calls):
    full = t2i(PROMPT, num_images=3, batch_size=2, num_steps=6, seed=30, rerank=False)
    unet_calls.clear()
    # stop at step 2 of the second batch (images 3..3): the first batch is kept, the second dropped
    out = t2i.rerank(PROMPT, num_images=3, batch_size=2, num_steps=6, seed=30,
                     callback=lambda step, total, preview: step < 8)
    assert out.stopped and sorted(out.seeds) == [30, 31] and len(out.images) == len(out.clip_scores) == 2
    assert out.latents.shape == out.noise.shape == (2, 4, 16, 16)
    assert out.clip_scores == sorted(out.clip_scores, reverse=True) and out.steps_run == 8
    assert out.scores == {"clip_score": out.clip_scores[0]} and out.seed == out.seeds[0]
    assert 8 <= len(unet_calls) <= 10 and not workers_alive()
    for image, seed in zip(out.images, out.seeds):
        assert np.abs(pixels(image) - pixels(full.images[seed - 30])).max() <= 1
    # stopped within the first batch: no image is finished
    unet_calls.clear()
    none = t2i(PROMPT, num_images=2, num_steps=6, seed=30, callback=lambda step, total, preview: False)
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
            t2i(PROMPT, num_images=2, num_steps=6, seed=1)
    finally:
        handle.remove()
    assert calls == [WORKER] * 3 and not workers_alive()
    assert len(t2i(PROMPT, num_images=1, num_steps=2, seed=1).images) == 1  # the lock was released


def test_rerank_order_equals_the_scorers_order(t2i, tiny_scorer):
    plain = t2i(PROMPT, num_images=5, batch_size=2, seed=100, rerank=False)
    ranked = t2i.rerank(PROMPT, num_images=5, batch_size=2, seed=100)
    independent = tiny_scorer.score(as_tensor(plain.images), [PROMPT])[:, 0].tolist()
    expected = sorted(range(5), key=lambda i: -independent[i])
    assert not plain.reranked and plain.seeds == [100, 101, 102, 103, 104]
    assert ranked.reranked and ranked.seeds == [plain.seeds[i] for i in expected]
    assert ranked.clip_scores == sorted(ranked.clip_scores, reverse=True)
    np.testing.assert_allclose(ranked.clip_scores, [independent[i] for i in expected], atol=0.5)  # uint8 rounding
    for i, j in enumerate(expected):
        assert np.abs(pixels(ranked.images[i]) - pixels(plain.images[j])).max() <= 1
        torch.testing.assert_close(ranked.latents[i], plain.latents[j])


def test_refine_raises_the_clip_score_and_starts_from_the_generated_image(t2i):
    seen = []
    out = t2i.refine(PROMPT, seed=21, num_steps=4, gradient_checkpointing="on",
                     callback=lambda step, total, preview: seen.append((step, total)))
    generated = t2i(PROMPT, num_images=1, seed=21)
    assert np.abs(pixels(out.start_image) - pixels(generated.images[0])).max() <= 1
    before, after = out.scores["clip_score_before"], out.scores["clip_score"]
    assert before == out.clip_scores[0] == pytest.approx(generated.clip_scores[0], abs=0.5)
    assert len(out.clip_scores) == 5 and seen == [(s, 4) for s in range(1, 5)]  # the start, then each update
    assert after == max(out.clip_scores) and after > before + 0.5 and out.steps_run == 4
    assert out.best_step > 0 and out.noise.shape == (1, 4, 16, 16) and out.latents.shape == (1, 4, 16, 16)
    assert t2i.pipe.unet.is_gradient_checkpointing and t2i.pipe.vae.is_gradient_checkpointing
    plain = t2i.refine(PROMPT, seed=21, num_steps=4)  # CPU default ("auto"): no checkpointing, same numbers
    assert not t2i.pipe.unet.is_gradient_checkpointing
    np.testing.assert_allclose(plain.clip_scores, out.clip_scores, atol=1e-3)
    assert all(p.grad is None for p in t2i.pipe.unet.parameters())  # gradients flow to the noise only


def test_refine_stops_when_the_callback_says_so(t2i):
    out = t2i.refine(PROMPT, seed=21, num_steps=10, callback=lambda step, total, preview: step < 1)
    assert out.stopped and len(out.clip_scores) == 2 and out.steps_run == 1
    assert out.scores["clip_score"] == max(out.clip_scores)  # the best iterate so far


def test_chi_regulariser_is_smallest_at_the_typical_noise_norm():
    d = 1024
    r = torch.linspace(10.0, 60.0, 5001)
    nll = chi_norm_nll(r, d)
    assert r[nll.argmin()].item() == pytest.approx((d - 1) ** 0.5, abs=0.02)


def test_refine_needs_a_one_step_model(tiny_pipe, tiny_scorer):
    multi = Text2ImagePipeline(tiny_pipe, tiny_scorer, model_name="tiny-multi",
                               preset=ModelPreset(num_steps=25, guidance_scale=7.5, size=32, one_step=False))
    with pytest.raises(ValueError, match="one-step"):
        multi.refine(PROMPT, seed=1, num_steps=2)


def test_edit_moves_the_directional_score(t2i, tiny_scorer):
    source = t2i(PROMPT, num_images=1, seed=5)
    z0 = source.latents[:1]
    out = t2i.edit(source.latents[0], PROMPT, "a blue square", proximity=0.0, num_steps=6, lr=0.1)
    assert len(out.directional) == 6 and out.scores["clip_score"] > out.scores["clip_score_before"]
    # the updates after the first keep improving it (a degenerate first gradient once ruled Adam for the whole run)
    assert out.directional[-1] > out.directional[0] + 0.05 and out.best_step > 1
    # a random move of the same size does not point along the text change
    delta = out.latents - z0
    torch.manual_seed(0)
    rand = z0 + torch.randn_like(delta) * delta.norm() / delta.numel() ** 0.5
    with torch.no_grad():
        t = tiny_scorer.encode_text([PROMPT, "a blue square"])
        e0 = tiny_scorer.encode_image(t2i.session.decode(z0))
        er = tiny_scorer.encode_image(t2i.session.decode(rand))
    random_dir = torch.nn.functional.cosine_similarity(er - e0, (t[1] - t[0])[None]).item()
    assert out.scores["directional"] > 0.2 and out.scores["directional"] > random_dir + 0.2
    assert out.scores["directional"] == pytest.approx(out.directional[out.best_step - 1], abs=1e-5)
    # proximity pulls: an edit weighted toward the original stays closer to it
    near = t2i.edit(source.latents[0], PROMPT, "a blue square", proximity=19.0, num_steps=6, lr=0.1)
    assert (near.latents - z0).norm() < delta.norm()
    # strength applies a fraction of the optimised move: 0.5 lands halfway, 0 is the original
    half = t2i.edit(source.latents[0], PROMPT, "a blue square", proximity=0.0, num_steps=6, lr=0.1, strength=0.5)
    torch.testing.assert_close(half.latents, z0 + 0.5 * delta, atol=1e-5, rtol=1e-5)
    assert 0 < half.scores["directional"] < out.scores["directional"]
    zero = t2i.edit(source.latents[0], PROMPT, "a blue square", num_steps=2, strength=0.0)
    assert np.array_equal(pixels(zero.image), pixels(zero.original)) and zero.scores["directional"] == 0.0


def test_edit_stop_returns_the_best_iterate_so_far(t2i):
    source = t2i(PROMPT, num_images=1, seed=5)
    seen = []
    out = t2i.edit(source.latents[0], PROMPT, "a blue square", proximity=0.0, num_steps=6, lr=0.1,
                   callback=lambda step, total, preview: seen.append(step) or step < 2)
    assert out.stopped and seen == [1, 2] and len(out.directional) == 2 and out.steps_run == 2
    assert out.best_step in (0, 1, 2) and out.settings["num_steps"] == 6


def test_config_for_model_needs_no_weights():
    turbo = Text2ImageConfig.for_model("stabilityai/sdxl-turbo")
    assert (turbo.num_steps, turbo.guidance_scale, turbo.width, turbo.height) == (1, 0.0, 512, 512)
    assert Text2ImageConfig() == Text2ImageConfig.for_model() == Text2ImageConfig.for_model("/models/sd-turbo/")
    sd = Text2ImageConfig.for_model("runwayml/stable-diffusion-v1-5")
    assert (sd.num_steps, sd.guidance_scale, sd.width, sd.height) == (25, 7.5, 512, 512)
    assert Text2ImageConfig.for_model("stabilityai/stable-diffusion-2-1", size=768).width == 768  # a loaded model's
    assert specs(sd)["scheduler"].choices == tuple(SCHEDULERS) and specs(sd)["num_steps"].default == 25
    assert specs(Text2ImageConfig)["seed"].hi == SEED_MAX


def test_pipeline_without_a_scorer_generates_unranked(tiny_pipe):
    bare = Text2ImagePipeline(tiny_pipe, None, model_name="tiny-sd", preset=TINY_PRESET)
    assert not bare.config.rerank and bare.config.width == 32 and bare.refine_config.width == 32
    out = bare(PROMPT, num_images=2, seed=1)
    assert out.clip_scores == [] and out.scores == {} and out.seeds == [1, 2] and not out.reranked
    with pytest.raises(ValueError, match="`rerank` needs a CLIP scorer"):
        bare(PROMPT, rerank=True)


def test_negative_prompts_are_joined_for_diffusers(t2i, tiny_pipe):
    kwargs = dict(num_images=1, num_steps=2, guidance_scale=3.0, seed=4)
    listed = t2i(PROMPT, negative_prompts=["blurry", "dark"], **kwargs)
    lines = t2i(PROMPT, negative_prompts="blurry\ndark", **kwargs)
    assert listed.settings["negative_prompts"] == lines.settings["negative_prompts"] == "blurry\ndark"
    assert np.array_equal(pixels(listed.images[0]), pixels(lines.images[0]))
    plain = plain_diffusers(tiny_pipe, [4], 2, guidance_scale=3.0, negative_prompt=["blurry, dark"])[0]
    assert np.abs(pixels(listed.images[0]) - pixels(plain)).max() <= 1
    with pytest.raises(ValueError, match="`negative_prompts` must be texts"):
        t2i(PROMPT, negative_prompts=["blurry", 3], **kwargs)


def test_derived_seeds_wrap(t2i):
    assert t2i(PROMPT, num_images=2, seed=SEED_MAX).seeds == [SEED_MAX, 0]


def test_png_metadata_round_trips_and_reproduces(t2i, tmp_path):
    out = t2i(PROMPT, num_images=2, seed=7, rerank=False)
    paths = out.save(tmp_path)
    assert sorted(paths) == ["png0", "png1"]
    meta = read_png_metadata(paths["png1"])
    assert meta == out.image_metadata(1)
    assert meta["task"] == "text2image" and meta["seed"] == 8 and meta["num_images"] == 1
    assert meta["prompt"] == PROMPT and meta["model"] == "tiny-sd"
    assert meta["scores"]["clip_score"] == pytest.approx(out.clip_scores[1], abs=1e-3)
    again = t2i(meta["prompt"], **{k: meta[k] for k in specs(Text2ImageConfig)})
    assert np.array_equal(pixels(again.images[0]), pixels(out.images[1]))


@pytest.mark.parametrize("kwargs, arg, shown", [
    ({"prompt": ""}, "prompt", "''"),
    ({"prompt": "   "}, "prompt", "'   '"),
    ({"width": 36}, "width", "36"),
    ({"height": 2048}, "height", "2048"),
    ({"num_steps": 0}, "num_steps", "0"),
    ({"batch_size": 9}, "batch_size", "9"),
    ({"num_images": 65}, "num_images", "65"),
    ({"guidance_scale": -1.0}, "guidance_scale", "-1.0"),
    ({"negative_prompts": "dark", "guidance_scale": 0.0}, "negative_prompts", "'dark'"),
    ({"seed": -3}, "seed", "-3"),
    ({"seed": SEED_MAX + 1}, "seed", str(SEED_MAX + 1)),
    ({"scheduler": "plms"}, "scheduler", "'plms'"),
])
def test_bad_inputs_name_the_argument_and_value(t2i, kwargs, arg, shown):
    kwargs = {"prompt": PROMPT, **kwargs}
    with pytest.raises(ValueError) as info:
        t2i(kwargs.pop("prompt"), **kwargs)
    assert f"`{arg}`" in str(info.value) and shown in str(info.value)


@pytest.mark.parametrize("old", ["steps", "negative_prompt", "num_candidates"])
def test_old_setting_names_are_refused_with_the_valid_ones(t2i, old):
    with pytest.raises(ValueError, match=f"unknown setting '{old}'.*valid: num_steps"):
        t2i(PROMPT, **{old: 2})


def test_bad_edit_and_refine_inputs(t2i, tmp_path):
    latent = torch.zeros(4, 16, 16)
    with pytest.raises(ValueError, match="`strength`.*1.5"):
        t2i.edit(latent, PROMPT, "a blue square", strength=1.5)
    with pytest.raises(ValueError, match="`edit_prompt`"):
        t2i.edit(latent, PROMPT, "")
    with pytest.raises(ValueError, match="`edit_prompt` must differ"):
        t2i.edit(latent, PROMPT, PROMPT)
    with pytest.raises(ValueError, match="`latents`.*channels"):
        t2i.edit(torch.zeros(3, 16, 16), PROMPT, "a blue square")
    with pytest.raises(ValueError, match="`num_steps`.*0"):
        t2i.refine(PROMPT, seed=1, num_steps=0)
    with pytest.raises(ValueError, match="`width` must be a multiple of 8, got 36"):
        t2i.refine(PROMPT, seed=1, width=36)
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
    a = loaded(PROMPT, seed=2, width=32, height=32, num_images=1)
    b = t2i(PROMPT, seed=2, num_images=1)
    assert np.abs(pixels(a.images[0]) - pixels(b.images[0])).max() <= 1
    # a one-step model of unknown size: sample_size 16 x VAE factor 2
    assert loaded.config.width == loaded.refine_config.height == 32 and loaded.config.num_steps == 1


def test_cuda_out_of_memory_becomes_a_clear_error(t2i, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(t2i.session, "pipe", type("Exploding", (), {"__call__": out_of_memory, "scheduler": None,
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
    out = t2i.refine("a red circle", seed=3, num_steps=4, width=64, height=64)
    assert out.scores["clip_score"] > out.scores["clip_score_before"] + 0.5 and out.best_step > 0
