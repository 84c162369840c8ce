"""StyleCLIP pipeline on a tiny StyleGAN2 and the demo shapes generator, with a tiny random CLIP (CPU, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.styleclip import (
    GlobalDirectionOutput,
    InversionOutput,
    LatentEditOutput,
    RelevanceOutput,
    StyleCLIPPipeline,
    get_lr,
)
from studio.generators.shapes import ShapesGenerator
from studio.generators.stylegan2 import Generator
from studio.progress import Progress


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(size=16, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=8)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(("noise.weight", "activate.bias")):
                p.normal_(0, 0.2)
    g.latent_avg = g.mean_latent(512, generator=torch.Generator().manual_seed(1))
    return g


@pytest.fixture
def pipe(tiny_scorer, tmp_path):
    return StyleCLIPPipeline(tiny_generator(), tiny_scorer, cache_dir=tmp_path)


def test_lr_schedule_is_styleclips():
    assert get_lr(0.0, 0.1) == 0.0 and get_lr(0.05, 0.1) == pytest.approx(0.1)
    assert get_lr(0.5, 0.1) == pytest.approx(0.1) and get_lr(0.875, 0.1) == pytest.approx(0.05)


def test_edit_lowers_clip_loss_and_l2_keeps_latent_near_start(pipe):
    frames = []
    free = pipe.edit(None, "a red circle", num_steps=12, l2_weight=0.0, id_weight=0.0, seed=3, preview_every=6,
                     callback=lambda step, total, preview: frames.append((step, total, preview)))
    assert isinstance(free, LatentEditOutput) and free.steps_run == 12 and not free.stopped
    assert min(free.clip_losses[-4:]) < free.clip_losses[0] - 1e-3
    assert free.image.size == (16, 16) and free.image_tensor.shape == (1, 3, 16, 16)
    assert 0 <= free.image_tensor.min() and free.image_tensor.max() <= 1
    assert [f[0] for f in frames] == list(range(1, 13)) and frames[5][2].size == (16, 16)
    assert frames[0][2] is None and len(free.frames) == 3  # the start, then a frame every 6 steps
    assert free.frames[0].dtype == np.uint8 and free.frames[0].shape == (16, 16, 3)
    # the result is the latent with the lowest total loss seen (here without L2 and identity: the CLIP loss)
    assert free.scores["loss"] == min(free.losses) == free.losses[free.scores["best_step"] - 1]
    assert free.seed == 3 and free.settings["prompt"] == "a red circle" and free.settings["num_steps"] == 12
    assert set(free.timings) == {"start_s", "optimise_s", "per_step_s", "total_s"}
    tied = pipe.edit(None, "a red circle", num_steps=12, l2_weight=0.5, id_weight=0.0, seed=3)
    assert tied.l2_distances[-1] < 0.5 * free.l2_distances[-1]
    torch.testing.assert_close(tied.start_latent, free.start_latent)  # same seeded start
    # strength 0 returns the start; strength scales the move linearly
    none = pipe.edit(free.start_latent, "a red circle", num_steps=2, strength=0.0)
    torch.testing.assert_close(none.latent, none.start_latent)
    # the score on augmented views (not the optimised one; issue 29): a seeded draw, so the unchanged image
    # scores the same before and after, and it is its own reading, not the plain view's
    sc = none.scores
    assert sc["clip_score_augmented"] == pytest.approx(sc["clip_score_augmented_before"], abs=1e-4)
    assert 0.0 <= sc["clip_score_augmented"] <= 100.0
    assert sc["clip_score_augmented"] != pytest.approx(sc["clip_score"], abs=1e-3)
    torch.testing.assert_close(none.image_tensor, none.original_tensor)
    half = pipe.edit(free.start_latent, "a red circle", num_steps=12, l2_weight=0.0, id_weight=0.0, strength=0.5)
    torch.testing.assert_close(half.latent - half.start_latent, 0.5 * (free.latent - free.start_latent))


def test_edit_stops_when_callback_returns_false_and_keeps_the_best_latent(pipe):
    out = pipe.edit(None, "a blue square", num_steps=50, callback=lambda step, total, preview: step < 3)
    assert out.steps_run == 3 and len(out.clip_losses) == 3 and out.stopped
    assert out.scores["loss"] == min(out.losses) and out.image is not None and out.original is not None
    # "stop" sent into the generator does the same
    run = pipe.iter_edit(None, "a blue square", num_steps=50, l2_weight=0.0, id_weight=0.0)
    items = [next(run)]
    while len(items) < 8:
        items.append(run.send(None))
    result = run.send("stop")
    assert all(isinstance(p, Progress) for p in items) and result.done and result.stopped and result.steps_run == 8
    best = result.scores["best_step"]
    assert result.losses[best - 1] == min(result.losses) and 1 <= best <= 8
    again = pipe.edit(None, "a blue square", num_steps=50, l2_weight=0.0, id_weight=0.0,
                      callback=lambda step, total, preview: step < 8)
    torch.testing.assert_close(again.latent, result.latent)  # the same seeded run, stopped at the same step


@pytest.mark.parametrize("bad", [-1, 1.5, 2**70, "x", None])
def test_seed_is_checked_like_every_other_task(pipe, bad):
    runs = {"edit": lambda seed: pipe.edit(None, "a cat", num_steps=1, seed=seed), "sample": pipe.sample,
            "global": lambda seed: pipe.global_direction(None, "a", "b", seed=seed),
            "invert": lambda seed: pipe.invert(torch.rand(3, 16, 16), seed=seed), "relevance": pipe.channel_relevance}
    for name, run in runs.items():
        with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, 4294967295\]"):
            run(seed=bad)
            pytest.fail(f"{name} accepted seed {bad!r}")
    assert pipe.sample(seed=2**32 - 1).seed == 2**32 - 1


def test_edit_on_demo_shapes_generator_pools_larger_images(tiny_scorer, tmp_path):
    pipe = StyleCLIPPipeline(ShapesGenerator(size=64), tiny_scorer, cache_dir=tmp_path)
    out = pipe.edit(None, "a green triangle", num_steps=12, seed=1)
    assert out.image.size == (64, 64) and out.image_tensor.shape == (1, 3, 64, 64)
    assert min(out.clip_losses[-3:]) < out.clip_losses[0]


def test_global_direction_relevance_cache_and_beta(pipe, tiny_scorer, tmp_path):
    progress = []
    run = pipe.channel_relevance(num_samples=2, batch_size=64, callback=lambda d, t, _: progress.append((d, t)))
    assert isinstance(run, RelevanceOutput) and not run.stopped and not run.cached and progress == [(1, 2), (2, 2)]
    assert run.image.size == (32, 16) and run.scores == {"channels": int(run.relevance.analysed.sum()), "samples": 2,
                                                  "resumed_from": 0}
    rel = run.relevance
    g = pipe.generator
    assert rel.relevance.shape[0] == sum(layer.channels for layer in g.style_layers)
    rgb = torch.cat([torch.full((layer.channels,), layer.is_rgb) for layer in g.style_layers])
    assert torch.equal(rel.analysed, ~rgb) and rel.relevance[rgb].abs().sum() == 0
    norms = rel.relevance[~rgb].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    # cached on disk, keyed by the generator hash: a fresh pipeline reads it back without recomputing
    fresh = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path)
    again = fresh.channel_relevance(num_samples=2, callback=lambda *a: pytest.fail("recomputed"))
    loaded = again.relevance
    assert again.cached and loaded.path == rel.path and g.identity()[:16] in loaded.path
    torch.testing.assert_close(loaded.relevance, rel.relevance)
    assert again.image.tobytes() == run.image.tobytes()  # the same samples shown

    steps = []
    out = fresh.global_direction(None, "a circle", "a red circle", alpha=3.0, beta=0.0, num_samples=2, seed=2,
                                 callback=lambda step, total, preview: steps.append((step, total)))
    assert steps == [(1, 1)]  # relevance cached: the edit is the only step
    assert isinstance(out, GlobalDirectionOutput) and out.num_channels == int(rel.analysed.sum())
    assert (out.image_tensor - out.original_tensor).abs().max() > 1e-3 and out.top_channels[0][0] in rel.layer_names
    assert out.settings["neutral"] == "a circle" and out.settings["alpha"] == 3.0 and out.seed == 2
    for d, layer in zip(out.direction, g.style_layers):
        assert not layer.is_rgb or d.abs().sum() == 0
    # a tighter beta keeps fewer channels; alpha 0 leaves the image as it was
    tight = fresh.global_direction(None, "a circle", "a red circle", beta=0.5 * abs(out.top_channels[0][2]),
                                   num_samples=2, seed=2)
    assert 0 < tight.num_channels < out.num_channels
    still = fresh.global_direction(None, "a circle", "a red circle", alpha=0.0, beta=0.0, num_samples=2, seed=2)
    torch.testing.assert_close(still.image_tensor, still.original_tensor)
    # beta above every channel's relevance: a clear message naming the largest relevance
    top = abs(out.top_channels[0][2])
    with pytest.raises(ValueError, match=r"`beta` .* leaves no channels .* largest channel relevance .* is "):
        fresh.global_direction(None, "a circle", "a red circle", beta=min(1.0, top + 1e-3), num_samples=2)


def test_relevance_stopped_returns_the_samples_done_and_keeps_them_on_disk_only(pipe, tmp_path):
    out = pipe.channel_relevance(num_samples=3, callback=lambda d, t, _: d < 1)
    assert out.stopped and out.steps_run == 1 and out.scores["samples"] == 1 and out.relevance.num_samples == 1
    assert out.relevance.path is None and [f.name.endswith(".partial.pt") for f in tmp_path.glob("relevance-*")] == [
        True]  # the sample done is kept for the next run; no final cache
    # a global direction whose relevance is stopped makes no edit: the start, marked stopped; its relevance stage
    # went on from the sample the first run left
    stages = []
    run = pipe.iter_global_direction(None, "a circle", "a red circle", num_samples=3, beta=0.0)
    first = next(run)
    stages.append((first.step, first.total, first.stage))
    result = run.send("stop")
    assert stages == [(2, 4, "relevance")] and result.done and result.stopped and result.num_channels == 0
    torch.testing.assert_close(result.image_tensor, result.original_tensor)
    assert all(f.name.endswith(".partial.pt") for f in tmp_path.glob("relevance-*"))


def test_inversion_lowers_reconstruction_error_and_edits_the_result(pipe):
    with torch.no_grad():
        target_latent = pipe.random_latent(seed=11, truncation=0.9)
        target = pipe.to_unit(pipe.render(target_latent))[0]  # (3, 16, 16) in [0, 1]
    inv = pipe.invert(target, num_steps=30, lr=0.1, seed=0)
    assert isinstance(inv, InversionOutput) and inv.image.size == (16, 16)
    assert len(inv.noise) == pipe.generator.num_layers
    assert inv.scores["mse"] < 0.6 * inv.scores["start_mse"] and inv.scores["psnr"] > 0
    # the kept iterate is the one with the lowest loss (the start is step 0), not the last
    seen = [inv.scores["start_loss"], *inv.losses]
    assert inv.scores["loss"] == min(seen) == seen[inv.scores["best_step"]] and inv.scores["best_step"] > 0
    out = pipe.edit(inv, "a blue square", num_steps=3)
    assert out.inversion is inv
    torch.testing.assert_close(out.original_tensor, inv.image_tensor, atol=1e-5, rtol=0)  # starts from the inversion
    # an image as the start is inverted first, as the "invert" stage of the same run
    seen = []
    photo = pipe.edit(target, "a blue square", num_steps=2, num_invert_steps=3,
                      callback=lambda step, total, preview: seen.append((step, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)] and photo.inversion.steps_run == 3
    assert photo.steps_run == 5


def test_inversion_stopped_keeps_the_best_iterate(pipe):
    target = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    out = pipe.invert(target, num_steps=40, callback=lambda step, total, preview: step < 12)
    assert out.stopped and out.steps_run == 12 and len(out.losses) == 12
    assert out.scores["loss"] == min(out.scores["start_loss"], *out.losses)
    with torch.no_grad():
        recon = pipe.to_unit(pipe.render(out.latent.to(pipe.device), [n.to(pipe.device) for n in out.noise]))
    torch.testing.assert_close(recon, out.image_tensor)  # the image is the kept latent's


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="`prompt`"):
        pipe.edit(None, "  ")
    with pytest.raises(ValueError, match=r"`num_steps` must be an integer in \[1, 10000\], got 0"):
        pipe.edit(None, "a cat", num_steps=0)
    with pytest.raises(ValueError, match="unknown setting 'steps'"):
        pipe.edit(None, "a cat", steps=3)
    with pytest.raises(ValueError, match="`strength`"):
        pipe.edit(None, "a cat", strength=5)
    with pytest.raises(ValueError, match=r"latent must have shape"):
        pipe.edit(torch.zeros(3, 32), "a cat")
    with pytest.raises(ValueError, match="`image`"):
        pipe.invert(torch.zeros(4, 32, 32))
    with pytest.raises(ValueError, match="`image`"):
        pipe.invert("not an image")
    with pytest.raises(ValueError, match="`pixel_weight`, `perceptual_weight` and `clip_weight` cannot all be 0"):
        pipe.invert(torch.rand(3, 16, 16), pixel_weight=0.0, clip_weight=0.0, perceptual_weight=0.0)
    with pytest.raises(ValueError, match="`init` 'encoder' needs an e4e encoder for this generator") as missing:
        pipe.invert(torch.rand(3, 16, 16), init="encoder")
    assert missing.value.setup_problem  # the page keeps it on screen until dismissed
    with pytest.raises(ValueError, match="`beta`"):
        pipe.global_direction(None, "a", "b", beta=2.0)
    with pytest.raises(ValueError, match="`target`"):
        pipe.global_direction(None, "a face", "")
    with pytest.raises(ValueError, match="`precision`"):
        StyleCLIPPipeline(pipe.generator, pipe.scorer, precision="int8")


def test_jacobian_relevance_is_the_small_step_limit_of_styleclips_finite_differences(pipe):
    finite = pipe.channel_relevance(num_samples=1, magnitude=1e-3, method="finite", use_cache=False).relevance
    jac = pipe.channel_relevance(num_samples=1, method="jacobian", batch_size=16, use_cache=False).relevance
    assert torch.equal(jac.analysed, finite.analysed)
    cos = (finite.relevance * jac.relevance).sum(-1)[finite.analysed]
    assert cos.median() > 0.99 and (cos > 0.9).float().mean() > 0.9
    # a large +-5 std step is not linear: the directions differ somewhat but stay aligned on average
    big = pipe.channel_relevance(num_samples=1, method="finite", use_cache=False).relevance
    assert (big.relevance * jac.relevance).sum(-1)[big.analysed].mean() > 0.3
    with pytest.raises(ValueError, match="`method`"):
        pipe.channel_relevance(num_samples=1, method="exact")


def test_from_pretrained_with_a_rosinality_checkpoint(tiny_configs, tmp_path, monkeypatch):
    from studio.generators.checkpoints import save_generator

    save_generator(tiny_generator(seed=4), tmp_path / "tiny.pt")
    pipe = StyleCLIPPipeline.from_pretrained(str(tmp_path / "tiny.pt"), clip="tiny-test-vit", device="cpu",
                                             cache_dir=tmp_path)
    assert pipe.generator.size == 16 and pipe(None, "a red circle", num_steps=2).image.size == (16, 16)
    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="stylegan2-ffhq-config-f.pt"):
        StyleCLIPPipeline.from_pretrained("ffhq-1024", clip="tiny-test-vit", device="cpu")


def test_relevance_stopped_then_restarted_resumes_and_equals_an_uninterrupted_run(tiny_scorer, tmp_path):
    g = tiny_generator()
    whole = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "whole").channel_relevance(num_samples=5,
                                                                                            batch_size=16)
    first = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "parts")
    seen = []
    out = first.channel_relevance(num_samples=5, batch_size=16,
                                  callback=lambda d, t, _: seen.append((d, t)) or d < 2)
    assert out.stopped and out.scores["samples"] == 2 and seen == [(1, 5), (2, 5)]
    # a fresh pipeline (as after a restart) picks up after the two samples on disk
    seen.clear()
    metrics = []
    run = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "parts").iter_relevance(num_samples=5, batch_size=16)
    for item in run:
        if item.done:
            resumed = item
            break
        seen.append((item.step, item.total))
        metrics.append(item.metrics)
    assert seen == [(3, 5), (4, 5), (5, 5)] and resumed.scores["resumed_from"] == 2 and resumed.steps_run == 3
    assert [m["samples"] for m in metrics] == [3, 4, 5] and metrics[-1]["eta_s"] == 0 and metrics[0]["eta_s"] > 0
    torch.testing.assert_close(resumed.relevance.relevance, whole.relevance.relevance, atol=0, rtol=0)
    final = {d: torch.load(next((tmp_path / d).glob("relevance-*-n5-*.pt")), weights_only=True)
             for d in ("whole", "parts")}
    for key in final["whole"]:
        torch.testing.assert_close(final["parts"][key], final["whole"][key], atol=0, rtol=0)
    # a larger count goes on from the five samples done; a smaller one starts afresh and keeps the larger sums
    more = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "parts").channel_relevance(num_samples=6,
                                                                                           batch_size=16)
    assert more.scores["resumed_from"] == 5 and more.steps_run == 1
    fewer = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "parts").channel_relevance(num_samples=3,
                                                                                            batch_size=16)
    assert fewer.scores["resumed_from"] == 0 and fewer.steps_run == 3
    again = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "parts").channel_relevance(num_samples=7,
                                                                                            batch_size=16)
    assert again.scores["resumed_from"] == 6


def test_jacobian_is_the_default_relevance_method(pipe):
    assert pipe.relevance_config.method == "jacobian" and pipe.global_config.relevance_method == "jacobian"
    out = pipe.channel_relevance(num_samples=1, use_cache=False)
    assert out.settings["method"] == "jacobian"


def test_published_directions_in_fs3_layout_give_the_same_edit_as_the_relevance_they_came_from(tiny_scorer,
                                                                                               tmp_path):
    g = tiny_generator()
    computed = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "a")
    rel = computed.channel_relevance(num_samples=2, batch_size=16).relevance
    fs3 = rel.to_fs3()
    n = sum(layer.channels for layer in g.style_layers if not layer.is_rgb)
    assert fs3.shape == (n, tiny_scorer.embed_dim) and fs3.dtype == np.float32
    np.save(tmp_path / "fs3.npy", fs3)
    published = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "b")  # nothing computed or cached here
    imported = published.import_directions(tmp_path / "fs3.npy")
    assert imported.source == "published" and torch.equal(imported.analysed, rel.analysed)
    torch.testing.assert_close(imported.std, rel.std, atol=0, rtol=0)  # computed from the generator, not read
    kwargs = {"alpha": 3.0, "beta": 0.05, "seed": 2, "num_samples": 2}
    mine = computed.global_direction(None, "a circle", "a red circle", directions="computed", **kwargs)
    steps = []
    theirs = published.global_direction(None, "a circle", "a red circle",
                                        callback=lambda *a: steps.append(a[:2]), **kwargs)
    assert theirs.directions == "published" and mine.directions == "computed" and steps == [(1, 1)]
    assert theirs.num_channels == mine.num_channels > 0 and theirs.top_channels[0][:2] == mine.top_channels[0][:2]
    for a, b in zip(theirs.direction, mine.direction):
        torch.testing.assert_close(a, b)  # the same delta s (float32 summation order aside)
    torch.testing.assert_close(theirs.image_tensor, mine.image_tensor)
    assert (theirs.image_tensor - theirs.original_tensor).abs().max() > 1e-3
    assert not list((tmp_path / "b").glob("relevance-*"))  # no relevance was computed for the published edit


def test_published_directions_of_the_wrong_layout_are_refused(pipe, tmp_path):
    g = pipe.generator
    n = sum(layer.channels for layer in g.style_layers if not layer.is_rgb)
    total = sum(layer.channels for layer in g.style_layers)
    d = pipe.scorer.embed_dim
    unit = torch.nn.functional.normalize(torch.randn(total, d), dim=-1).numpy()
    expected = rf"expected a float array of shape \({n}, {d}\)"
    cases = {"shape": unit[:n - 1], "toRGB rows": unit, "transposed": unit[:n].T.copy(),
             "raw": np.zeros((n, 3, 2, d), np.float32), "ints": np.ones((n, d), np.int64),
             "not unit": 2 * unit[:n], "nan": np.where(np.arange(d) == 0, np.nan, unit[:n])}
    messages = {"toRGB rows": "toRGB ones included", "transposed": "transposed", "raw": "single_channel.npy",
                "not unit": "has length 2, not 1", "nan": "non-finite"}
    for name, arr in cases.items():
        with pytest.raises(ValueError, match=expected) as err:
            pipe.import_directions(arr)
        assert messages.get(name, "has shape") in str(err.value), name
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot be read without unpickling .*" + expected):
        pipe.import_directions(tmp_path / "objects.npy")
    with pytest.raises(ValueError, match=r"not a .npy file"):
        pipe.import_directions(tmp_path / "missing.npy")
    assert pipe.published_directions() is None  # nothing was taken
    with pytest.raises(ValueError, match=r"`directions` 'published': no published directions"):
        pipe.global_direction(None, "a", "b", directions="published")


def test_published_file_next_to_the_checkpoint_is_used_for_the_clip_it_was_made_with(tiny_scorer, tmp_path,
                                                                                     monkeypatch):
    import pipelines.styleclip_global as scg
    from studio.generators.checkpoints import load_generator, save_generator

    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path / "none"))
    save_generator(tiny_generator(), tmp_path / "tiny.pt")
    g = load_generator(tmp_path / "tiny.pt")
    pipe = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "cache")
    rel = pipe.channel_relevance(num_samples=1, batch_size=16).relevance
    np.save(tmp_path / "tiny.fs3.npy", rel.to_fs3())
    fresh = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path / "cache")
    assert fresh.published_file() == tmp_path / "tiny.fs3.npy"
    # StyleCLIP's files are CLIP ViT-B/32 directions: with another CLIP they are not used ('auto' computes)
    with pytest.raises(ValueError, match=r"holds CLIP ViT-B-32 directions, but this pipeline's CLIP is"):
        fresh.global_direction(None, "a circle", "a red circle", directions="published", num_samples=1)
    assert fresh.global_direction(None, "a circle", "a red circle", num_samples=1, beta=0.0).directions == "computed"
    monkeypatch.setattr(scg, "PUBLISHED_CLIP_ARCHS", (tiny_scorer.source.arch,))
    monkeypatch.setattr(tiny_scorer.source, "kind", "local")
    out = fresh.global_direction(None, "a circle", "a red circle", num_samples=1, beta=0.0)
    assert out.directions == "published" and fresh.published_directions().path == str(tmp_path / "tiny.fs3.npy")


def test_stylespace_optimisation_edits_the_style_vectors(pipe):
    out = pipe.edit(None, "a red circle", num_steps=12, l2_weight=0.0, id_weight=0.0, seed=3,
                    work_in_stylespace=True)
    g = pipe.generator
    assert out.settings["work_in_stylespace"] is True and len(out.styles) == len(g.style_layers)
    assert min(out.clip_losses[-4:]) < out.clip_losses[0] - 1e-3
    start = g.w_to_styles(out.start_latent)
    for s, s0, layer in zip(out.styles, start, g.style_layers):
        moved = (s - s0).abs().max()
        assert (moved == 0) if layer.is_rgb else (moved > 0), layer.name  # toRGB styles stay, as StyleCLIP's
    torch.testing.assert_close(out.latent, out.start_latent)  # the edit lives in StyleSpace
    with torch.no_grad():
        torch.testing.assert_close(pipe.to_unit(g.synthesis([s.to(pipe.device) for s in out.styles])),
                                   out.image_tensor)
    # the L2 term is on the styles; strength scales the move in StyleSpace
    tied = pipe.edit(None, "a red circle", num_steps=12, l2_weight=5.0, id_weight=0.0, seed=3, work_in_stylespace=True)
    assert tied.l2_distances[-1] < 0.5 * out.l2_distances[-1]
    half = pipe.edit(None, "a red circle", num_steps=12, l2_weight=0.0, id_weight=0.0, seed=3, strength=0.5,
                     work_in_stylespace=True)
    for s_half, s_full, s0 in zip(half.styles, out.styles, start):
        torch.testing.assert_close(s_half - s0, 0.5 * (s_full - s0))
    plain = pipe.edit(None, "a red circle", num_steps=12, l2_weight=0.0, id_weight=0.0, seed=3)
    assert plain.styles == [] and not torch.equal(plain.image_tensor, out.image_tensor)
    # the run protocol: the settings reproduce the run; a stop keeps the lowest-loss styles so far
    settings = dict(out.settings)
    again = pipe.edit(None, settings.pop("prompt"), **settings)
    assert again.image.tobytes() == out.image.tobytes()
    run = pipe.iter_edit(None, "a red circle", num_steps=12, l2_weight=0.0, id_weight=0.0, seed=3,
                         work_in_stylespace=True)
    items = [next(run), run.send(None), run.send(None)]
    stopped = run.send("stop")
    assert all(isinstance(p, Progress) for p in items) and stopped.stopped and stopped.steps_run == 3
    assert stopped.scores["loss"] == min(stopped.losses) and len(stopped.styles) == len(g.style_layers)


def _inversion_loss(pipe, latent, noise, target, cfg) -> float:
    """The inversion's loss of a latent, recomputed from its parts (pixel MSE, perceptual, CLIP, noise penalty)."""
    from pipelines.styleclip_invert import feature_distance, noise_regularize, perceptual_layers

    layers = perceptual_layers(pipe.scorer)
    with torch.no_grad():
        img = pipe.render(latent.to(pipe.device), [n.to(pipe.device) for n in noise])
        emb, acts = pipe._clip_features(img, layers)
        t_emb, t_acts = pipe._clip_features(target[None] * 2 - 1, layers)
        loss = (cfg["pixel_weight"] * torch.nn.functional.mse_loss((img + 1) / 2, target[None])
                + cfg["clip_weight"] * (1 - (emb * t_emb).sum())
                + cfg["perceptual_weight"] * feature_distance(acts, t_acts)
                + cfg["noise_weight"] * noise_regularize([n.to(pipe.device) for n in noise]))
    return float(loss)


def test_inversion_returns_the_latent_whose_error_is_the_lowest_seen(pipe):
    with torch.no_grad():
        target = pipe.to_unit(pipe.render(pipe.random_latent(seed=8, truncation=0.9)))[0]
    inv = pipe.invert(target, num_steps=15, seed=2, latent_noise=0.2)  # noisy steps: the noise is in the iterate
    seen = [inv.scores["start_loss"], *inv.losses]
    assert inv.scores["loss"] == min(seen) and 0 < inv.scores["best_step"] <= 15
    # the returned latent and noise maps, rendered again, have exactly that loss and that pixel error
    again = _inversion_loss(pipe, inv.latent, inv.noise, target, inv.settings)
    assert again == pytest.approx(inv.scores["loss"], rel=1e-4, abs=1e-6)
    assert inv.scores["mse"] == pytest.approx(inv.mses[inv.scores["best_step"] - 1], rel=1e-4, abs=1e-7)
    assert inv.scores["perceptual"] >= 0 and inv.settings["perceptual_weight"] == 1.0
    # the perceptual term is part of the loss: without it, the same run scores lower
    plain = pipe.invert(target, num_steps=1, seed=2, latent_noise=0.2, perceptual_weight=0.0)
    assert "perceptual" not in plain.scores and plain.losses[0] < inv.losses[0]


def _tiny_e4e(n_latent: int = 6, style_dim: int = 32, seed: int = 0):
    from studio.generators.e4e import E4EConfig, Encoder4Editing

    torch.manual_seed(seed)
    cfg = E4EConfig(n_latent=n_latent, style_dim=style_dim, units=(1, 2, 1, 1), channels=(8, 12, 16, style_dim),
                    input_size=64)
    return Encoder4Editing(cfg).eval()


def test_e4e_encoder_gives_w_plus_and_inversion_refines_its_guess(pipe, tmp_path, tiny_scorer, monkeypatch):
    from studio.generators.e4e import load_encoder, save_encoder

    enc = _tiny_e4e()
    photo = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    w = enc.encode(photo[None])
    assert w.shape == (1, pipe.generator.n_latent, pipe.generator.style_dim) and torch.isfinite(w).all()
    save_encoder(enc, tmp_path / "e4e.pt")
    loaded = load_encoder(tmp_path / "e4e.pt", pipe.generator)
    torch.testing.assert_close(loaded.encode(photo[None]), w)  # strict round trip, weights only
    pipe.load_encoder(tmp_path / "e4e.pt")
    inv = pipe.invert(photo, num_steps=4, init="encoder", latent_noise=0.0)
    assert inv.encoder == str(tmp_path / "e4e.pt") and "encoder_mse" in inv.scores and inv.steps_run == 4
    assert inv.latent.shape == (1, pipe.generator.n_latent, pipe.generator.style_dim)
    # the optimisation started from the encoder's guess, rendered with the generator's stored noise maps
    g = pipe.generator
    with torch.no_grad():
        guess = pipe.to_unit(pipe.render(w, [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]))
    np.testing.assert_array_equal(inv.frames[0], (guess[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert inv.scores["encoder_mse"] == pytest.approx(float(((guess - photo[None]) ** 2).mean()), rel=1e-5)
    assert inv.scores["loss"] <= inv.scores["start_loss"]  # the guess is a candidate too: never worse than it
    # "auto" takes the loaded encoder; "mean" does not
    assert pipe.invert(photo, num_steps=1).encoder is not None
    assert pipe.invert(photo, num_steps=1, init="mean").encoder is None
    # a file named by STUDIO_E4E is found and loaded for "auto" (the page and the command line start this way)
    fresh = StyleCLIPPipeline(pipe.generator, tiny_scorer, cache_dir=tmp_path)
    monkeypatch.setenv("STUDIO_E4E", str(tmp_path / "e4e.pt"))
    assert fresh.invert(photo, num_steps=1).encoder == str(tmp_path / "e4e.pt")
    monkeypatch.setenv("STUDIO_E4E", str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="STUDIO_E4E"):
        StyleCLIPPipeline(pipe.generator, tiny_scorer, cache_dir=tmp_path).invert(photo, num_steps=1)
    monkeypatch.delenv("STUDIO_E4E")
    # an e4e run on the protocol: a stop after the first step keeps the best so far
    stopped = pipe.invert(photo, num_steps=5, init="encoder", callback=lambda step, total, preview: step < 1)
    assert stopped.stopped and stopped.steps_run == 1 and stopped.scores["loss"] <= stopped.scores["start_loss"]


def test_e4e_files_are_refused_for_another_generator_or_shape(pipe, tmp_path):
    from studio.generators.e4e import load_encoder, save_encoder

    save_encoder(_tiny_e4e(n_latent=8), tmp_path / "wide.pt")  # W+ of 8: a 32-pixel generator's
    with pytest.raises(ValueError, match=r"encodes W\+ of 8 x 32; this generator takes 6 x 32"):
        pipe.load_encoder(tmp_path / "wide.pt")
    enc = _tiny_e4e()
    save_encoder(enc, tmp_path / "e4e.pt")
    raw = torch.load(tmp_path / "e4e.pt", weights_only=True)
    other = tiny_generator(seed=9).state_dict()
    raw["state_dict"].update({f"decoder.{k}": v for k, v in other.items()})  # trained with another generator
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="was trained with another generator"):
        load_encoder(tmp_path / "other.pt", pipe.generator)
    raw["state_dict"].update({f"decoder.{k}": v for k, v in pipe.generator.state_dict().items()})
    torch.save(raw, tmp_path / "same.pt")
    assert load_encoder(tmp_path / "same.pt", pipe.generator).config == enc.config  # its own generator: accepted
    del raw["state_dict"]["encoder.latlayer2.weight"]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"missing keys \(1\): latlayer2.weight"):
        load_encoder(tmp_path / "broken.pt")

    class Boom:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"state_dict": {}, "boom": Boom()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="weights-only e4e checkpoint"):
        load_encoder(tmp_path / "code.pt")


def test_a_missing_e4e_file_is_a_setup_problem(monkeypatch, tmp_path):
    """Issue 16: the e4e 'not found' errors were ordinary toasts gone after 10 s; like every setup problem they stay."""
    from studio.generators import get_generator
    from studio.generators.e4e import find_encoder, load_encoder
    from studio.ui.common import is_user_error

    monkeypatch.setenv("STUDIO_E4E", str(tmp_path / "nope.pt"))
    for call in (lambda: find_encoder(get_generator("demo-shapes")), lambda: load_encoder(tmp_path / "nope.pt")):
        with pytest.raises(FileNotFoundError, match="nope.pt") as err:
            call()
        assert err.value.setup_problem and is_user_error(err.value)
