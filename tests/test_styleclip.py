"""StyleCLIP pipeline on a tiny StyleGAN2 and the demo shapes generator, with a tiny random CLIP (CPU, offline)."""

from __future__ import annotations

import pytest
import torch

from pipelines.styleclip import GlobalDirectionOutput, LatentEditOutput, StyleCLIPPipeline, get_lr
from studio.generators.shapes import ShapesGenerator
from studio.generators.stylegan2 import Generator


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(size=16, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=8)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias"):
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
    free = pipe.edit(None, "a red circle", steps=12, l2_weight=0.0, id_weight=0.0, seed=3, preview_every=6,
                     callback=lambda step, total, preview: frames.append((step, total, preview)))
    assert isinstance(free, LatentEditOutput) and free.steps_run == 12
    assert min(free.clip_losses[-4:]) < free.clip_losses[0] - 1e-3
    assert free.image.shape == (1, 3, 16, 16) and 0 <= free.image.min() and free.image.max() <= 1
    assert [f[0] for f in frames] == list(range(1, 13)) and frames[5][2].shape == (1, 3, 16, 16)
    assert frames[0][2] is None and len(free.frames) == 2
    tied = pipe.edit(None, "a red circle", steps=12, l2_weight=0.5, id_weight=0.0, seed=3)
    assert tied.l2_distances[-1] < 0.5 * free.l2_distances[-1]
    torch.testing.assert_close(tied.start_latent, free.start_latent)  # same seeded start
    # strength 0 returns the start; strength scales the move linearly
    none = pipe.edit(free.start_latent, "a red circle", steps=2, strength=0.0)
    torch.testing.assert_close(none.latent, none.start_latent)
    torch.testing.assert_close(none.image, none.original)


def test_edit_stops_when_callback_returns_false(pipe):
    out = pipe.edit(None, "a blue square", steps=50, callback=lambda step, total, preview: step < 3)
    assert out.steps_run == 3 and len(out.clip_losses) == 3


def test_edit_on_demo_shapes_generator_pools_larger_images(tiny_scorer, tmp_path):
    pipe = StyleCLIPPipeline(ShapesGenerator(size=64), tiny_scorer, cache_dir=tmp_path)
    out = pipe.edit(None, "a green triangle", steps=12, seed=1)
    assert out.image.shape == (1, 3, 64, 64)
    assert min(out.clip_losses[-3:]) < out.clip_losses[0]


def test_global_direction_relevance_cache_and_beta(pipe, tiny_scorer, tmp_path):
    progress = []
    rel = pipe.channel_relevance(num_samples=2, batch_size=64, callback=lambda d, t, _: progress.append((d, t)))
    assert progress == [(1, 2), (2, 2)]
    g = pipe.generator
    assert rel.relevance.shape[0] == sum(layer.channels for layer in g.style_layers)
    rgb = torch.cat([torch.full((layer.channels,), layer.is_rgb) for layer in g.style_layers])
    assert torch.equal(rel.analysed, ~rgb) and rel.relevance[rgb].abs().sum() == 0
    norms = rel.relevance[~rgb].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    # cached on disk, keyed by the generator hash: a fresh pipeline reads it back without recomputing
    fresh = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path)
    loaded = fresh.channel_relevance(num_samples=2, callback=lambda *a: pytest.fail("recomputed"))
    assert loaded.path == rel.path and g.identity()[:16] in loaded.path
    torch.testing.assert_close(loaded.relevance, rel.relevance)

    out = fresh.global_direction(None, "a circle", "a red circle", alpha=3.0, beta=0.0, num_samples=2, seed=2)
    assert isinstance(out, GlobalDirectionOutput) and out.num_channels == int(rel.analysed.sum())
    assert (out.image - out.original).abs().max() > 1e-3 and out.top_channels[0][0] in rel.layer_names
    for d, layer in zip(out.direction, g.style_layers):
        assert not layer.is_rgb or d.abs().sum() == 0
    # a tighter beta keeps fewer channels; alpha 0 leaves the image as it was
    tight = fresh.global_direction(None, "a circle", "a red circle", beta=0.5 * abs(out.top_channels[0][2]),
                                   num_samples=2, seed=2)
    assert 0 < tight.num_channels < out.num_channels
    still = fresh.global_direction(None, "a circle", "a red circle", alpha=0.0, beta=0.0, num_samples=2, seed=2)
    torch.testing.assert_close(still.image, still.original)
    # beta above every channel's relevance: a clear message naming the largest relevance
    top = abs(out.top_channels[0][2])
    with pytest.raises(ValueError, match=r"`beta` .* leaves no channels .* largest channel relevance .* is "):
        fresh.global_direction(None, "a circle", "a red circle", beta=min(1.0, top + 1e-3), num_samples=2)


def test_inversion_lowers_reconstruction_error_and_edits_the_result(pipe):
    with torch.no_grad():
        target_latent = pipe.random_latent(seed=11, truncation=0.9)
        target = pipe.to_unit(pipe.render(target_latent))[0]  # (3, 16, 16) in [0, 1]
    inv = pipe.invert(target, steps=30, lr=0.1, seed=0)
    assert inv.image.shape == (1, 3, 16, 16) and len(inv.noise) == pipe.generator.num_layers
    assert inv.mse < 0.6 * inv.start_mse and inv.psnr > 0
    out = pipe.edit(inv, "a blue square", steps=3)
    assert out.inversion is inv
    torch.testing.assert_close(out.original, inv.image, atol=1e-5, rtol=0)  # the edit starts from the inversion


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="`prompt`"):
        pipe.edit(None, "  ")
    with pytest.raises(ValueError, match="`steps` must be an integer in"):
        pipe.edit(None, "a cat", steps=0)
    with pytest.raises(ValueError, match="`strength`"):
        pipe.edit(None, "a cat", strength=5)
    with pytest.raises(ValueError, match=r"latent must have shape"):
        pipe.edit(torch.zeros(3, 32), "a cat")
    with pytest.raises(ValueError, match="`image`"):
        pipe.invert(torch.zeros(4, 32, 32))
    with pytest.raises(ValueError, match="`image`"):
        pipe.invert("not an image")
    with pytest.raises(ValueError, match="`beta`"):
        pipe.global_direction(None, "a", "b", beta=2.0)
    with pytest.raises(ValueError, match="`target`"):
        pipe.global_direction(None, "a face", "")
    with pytest.raises(ValueError, match="`precision`"):
        StyleCLIPPipeline(pipe.generator, pipe.scorer, precision="int8")


def test_jacobian_relevance_is_the_small_step_limit_of_styleclips_finite_differences(pipe):
    finite = pipe.channel_relevance(num_samples=1, magnitude=1e-3, use_cache=False)
    jac = pipe.channel_relevance(num_samples=1, method="jacobian", batch_size=16, use_cache=False)
    assert torch.equal(jac.analysed, finite.analysed)
    cos = (finite.relevance * jac.relevance).sum(-1)[finite.analysed]
    assert cos.median() > 0.99 and (cos > 0.9).float().mean() > 0.9
    # a large +-5 std step is not linear: the directions differ somewhat but stay aligned on average
    big = pipe.channel_relevance(num_samples=1, use_cache=False)
    assert (big.relevance * jac.relevance).sum(-1)[big.analysed].mean() > 0.3
    with pytest.raises(ValueError, match="`method`"):
        pipe.channel_relevance(num_samples=1, method="exact")


def test_from_pretrained_with_a_rosinality_checkpoint(tiny_configs, tmp_path, monkeypatch):
    from studio.generators.checkpoints import save_generator

    save_generator(tiny_generator(seed=4), tmp_path / "tiny.pt")
    pipe = StyleCLIPPipeline.from_pretrained(str(tmp_path / "tiny.pt"), clip="tiny-test-vit", device="cpu",
                                             cache_dir=tmp_path)
    assert pipe.generator.size == 16 and pipe(None, "a red circle", steps=2).image.shape == (1, 3, 16, 16)
    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="stylegan2-ffhq-config-f.pt"):
        StyleCLIPPipeline.from_pretrained("ffhq-1024", clip="tiny-test-vit", device="cpu")
