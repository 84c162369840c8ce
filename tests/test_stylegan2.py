"""StyleGAN2 generator: rosinality-format checkpoints, strict loading, standard-op replacements of the CUDA ops."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from studio.generators.checkpoints import (
    CHECKPOINTS,
    CheckpointInfo,
    CheckpointMismatchError,
    infer_config,
    load_generator,
    resolve_named_checkpoint,
    save_generator,
)
from studio.generators.stylegan2 import Generator, ModulatedConv2d, StyleGAN2Config, make_kernel, upfirdn2d


class NotAWeight:
    """Any pickled class: weights-only loading must refuse it."""


def tiny_generator(seed: int = 0, size: int = 32) -> Generator:
    torch.manual_seed(seed)
    g = Generator(size=size, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=16).eval()
    # Non-trivial values everywhere, so that a wrong load or wrong wiring would show in the image.
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(("noise.weight", "activate.bias", "to_rgb1.bias")):
                p.normal_(0, 0.3)
    return g.requires_grad_(False)


def native_upfirdn2d(x, kernel, up, pad):
    """NVIDIA's definition: zero insertion, pad, convolve with the flipped kernel (rosinality upfirdn2d_native)."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, kernel.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("pad", [(2, 1), (1, 1), (0, 0), (3, 2)])
def test_upfirdn2d_matches_zero_insertion_reference(up, pad):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 7)
    k = make_kernel([1, 3, 3, 1]) * (up**2) + 0.01 * torch.randn(4, 4)  # asymmetric: catches a missing flip
    ours, ref = upfirdn2d(x, k, up=up, pad=pad), native_upfirdn2d(x, k, up, pad)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_matches_fused_grouped_reference(upsample):
    torch.manual_seed(2)
    m = ModulatedConv2d(8, 6, 3, 16, upsample=upsample)
    x, s = torch.randn(2, 8, 5, 5), m.modulation(torch.randn(2, 16))
    # rosinality's fused path: per-sample modulated+demodulated weights, grouped convolution
    w = m.scale * m.weight * s.view(2, 1, 8, 1, 1)
    w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8).view(2, 6, 1, 1, 1)
    if upsample:
        w = w.transpose(1, 2).reshape(16, 6, 3, 3)
        ref = F.conv_transpose2d(x.reshape(1, 16, 5, 5), w, stride=2, groups=2).view(2, 6, 11, 11)
        ref = native_upfirdn2d(ref, m.blur.kernel, 1, m.blur.pad)
    else:
        ref = F.conv2d(x.reshape(1, 16, 5, 5), w.reshape(12, 8, 3, 3), padding=1, groups=2).view(2, 6, 5, 5)
    torch.testing.assert_close(m(x, s), ref, atol=1e-5, rtol=1e-5)
    # Both forms, and forward's choice between them, give the same numbers for one sample without gradients.
    with torch.no_grad():
        for i in range(2):
            for form in (m, m.modulate_kernel, m.modulate_activations):
                torch.testing.assert_close(form(x[i:i + 1], s[i:i + 1]), ref[i:i + 1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one sample"):
        m.modulate_kernel(x, s)
    s.requires_grad_(True)
    x1 = x[:1].clone().requires_grad_(True)
    g_single = torch.autograd.grad(m(x1, s[:1]).square().sum(), (x1, s))
    x2 = x.clone().requires_grad_(True)
    g_batch = torch.autograd.grad(m(x2, s).square()[:1].sum(), (x2, s))
    torch.testing.assert_close(g_single[0], g_batch[0][:1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g_single[1], g_batch[1], atol=1e-4, rtol=1e-4)


def test_rosinality_key_names_and_shapes():
    g = tiny_generator(size=32)
    sd = g.state_dict()
    assert [k for k in sd if k.startswith("style.")] == [f"style.{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
    for key in ["input.input", "conv1.conv.weight", "conv1.conv.modulation.weight", "conv1.conv.modulation.bias",
                "conv1.noise.weight", "conv1.activate.bias", "to_rgb1.conv.weight", "to_rgb1.bias",
                "convs.0.conv.blur.kernel", "convs.2.conv.blur.kernel", "to_rgbs.0.upsample.kernel",
                "to_rgbs.2.conv.modulation.weight", "noises.noise_0", "noises.noise_6"]:
        assert key in sd, key
    assert "convs.1.conv.blur.kernel" not in sd and "to_rgb1.upsample.kernel" not in sd
    assert sd["conv1.conv.weight"].shape == (1, 16, 16, 3, 3)
    assert sd["noises.noise_6"].shape == (1, 1, 32, 32) and sd["noises.noise_0"].shape == (1, 1, 4, 4)
    # FFHQ config-f: 18 W+ entries and rosinality's channel table
    cfg = StyleGAN2Config()
    assert cfg.n_latent == 18 and [cfg.channels(2**i) for i in range(2, 11)] == [512] * 5 + [256, 128, 64, 32]


def test_checkpoint_round_trip_reproduces_image(tmp_path):
    g = tiny_generator(seed=3)
    g.latent_avg = g.mean_latent(256, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "tiny.pt"
    save_generator(g, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"g_ema", "latent_avg"} and raw["latent_avg"].shape == (32,)

    loaded = load_generator(path)  # config inferred from the weights, strict
    assert loaded.config.size == 32 and loaded.config.max_channels == 16 and loaded.config.n_mlp == 2
    w = g.get_latent(torch.randn(2, 32, generator=torch.Generator().manual_seed(4)))
    w_plus = w.unsqueeze(1).repeat(1, g.n_latent, 1)
    img_a, _ = g([w_plus], input_is_latent=True, randomize_noise=False)
    img_b, _ = loaded([w_plus], input_is_latent=True, randomize_noise=False)
    torch.testing.assert_close(img_a, img_b, atol=1e-6, rtol=0)
    assert img_a.std() > 0.01  # a real image, not a constant
    torch.testing.assert_close(loaded.latent_avg, g.latent_avg)
    assert len(loaded.identity()) == 64


def test_strict_loading_lists_missing_unexpected_and_shape_mismatches(tmp_path):
    g = tiny_generator()
    sd = collections.OrderedDict(g.state_dict())
    sd["convs.0.conv.blur.kernal"] = sd.pop("convs.0.conv.blur.kernel")  # misspelt
    del sd["noises.noise_3"]
    sd["to_rgbs.1.conv.weight"] = torch.zeros(1, 3, 8, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(32)}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_generator(path, config=g.config)
    err = info.value
    assert err.missing == ["convs.0.conv.blur.kernel", "noises.noise_3"]
    assert err.unexpected == ["convs.0.conv.blur.kernal"]
    assert err.mismatched == [("to_rgbs.1.conv.weight", (1, 3, 8, 1, 1), (1, 3, 16, 1, 1))]
    for text in ("convs.0.conv.blur.kernel", "noises.noise_3", "kernal", "(1, 3, 8, 1, 1)"):
        assert text in str(err)
    # a checkpoint of a different size names the extra layers
    big = tiny_generator(size=64)
    torch.save({"g_ema": big.state_dict()}, tmp_path / "big.pt")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(18\): convs.6") as info:
        load_generator(tmp_path / "big.pt", config=g.config)
    assert "to_rgbs.3.upsample.kernel" in info.value.unexpected and not info.value.missing


def test_refuses_pickled_code_and_non_checkpoints(tmp_path):
    torch.save({"g_ema": {"x": NotAWeight()}}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_generator(tmp_path / "evil.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="g_ema"):
        load_generator(tmp_path / "other.pt")


def test_noise_buffers_and_style_space():
    g = tiny_generator(seed=5)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    a, _ = g([z])
    b, _ = g([z], randomize_noise=False)
    c, _ = g([z], randomize_noise=True)
    torch.testing.assert_close(a, b)  # default uses the stored noises.noise_N
    assert (a - c).abs().max() > 1e-4
    # StyleSpace round trip: synthesis(w_to_styles(w+)) is the forward pass
    w_plus = g.get_latent(z).unsqueeze(1).repeat(1, g.n_latent, 1)
    styles = g.w_to_styles(w_plus)
    assert [s.shape[1] for s in styles] == [layer.channels for layer in g.style_layers]
    assert sum(layer.is_rgb for layer in g.style_layers) == g.log_size - 1
    torch.testing.assert_close(g.synthesis(styles), a)
    # truncation towards the mean: psi=0 gives the mean image for every z
    mean = g.mean_latent(128)
    t0, _ = g([z], truncation=0.0, truncation_latent=mean)
    torch.testing.assert_close(t0[0], t0[1])
    _, latent = g([z, z.flip(0)], inject_index=2, return_latents=True)
    assert latent.shape == (2, g.n_latent, 32) and torch.equal(latent[0, 2], g.get_latent(z)[1])


def test_bad_inputs():
    with pytest.raises(ValueError, match="`size`"):
        StyleGAN2Config(size=48)
    with pytest.raises(ValueError, match="`channel_multiplier`"):
        StyleGAN2Config(channel_multiplier=0)
    g = tiny_generator()
    with pytest.raises(ValueError, match=r"\(B, 8, 32\)"):
        g.w_to_styles(torch.zeros(1, 7, 32))
    with pytest.raises(ValueError, match="truncation_latent"):
        g([torch.zeros(1, 32)], truncation=0.5)
    with pytest.raises(ValueError, match="ffhq-1024"):
        load_generator("no-such-model")


def test_registry_names_what_to_supply(tmp_path, monkeypatch):
    assert CHECKPOINTS["ffhq-1024"].config.size == 1024 and CHECKPOINTS["cat-256"].config.channel_multiplier == 2
    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="stylegan2-ffhq-config-f.pt"):
        load_generator("ffhq-1024")


def test_registry_sources_are_real_hub_files():
    # Every entry names its file; the four with a known public copy point at rosinality-format files on the Hub.
    for name, info in CHECKPOINTS.items():
        assert info.filename.endswith(".pt") and info.how_to_get, name
        for repo_id, filename in info.sources:
            assert repo_id.count("/") == 1 and filename == info.filename, name
    assert {n for n, i in CHECKPOINTS.items() if i.sources} == {"ffhq-1024", "car-512", "cat-256", "church-256",
                                                               "horse-256"}


def _tiny_info(**kw):
    return CheckpointInfo("tiny-32", StyleGAN2Config(32, 32, 2, 1, max_channels=16), "tiny.pt", "a test generator",
                          how_to_get="build it", **kw)


def test_named_checkpoint_resolution_order(tmp_path, monkeypatch):
    import huggingface_hub.constants

    import studio.hub

    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path / "dir"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    info = _tiny_info(sources=(("someone/first", "tiny.pt"), ("someone/second", "tiny.pt")))
    calls = []

    def fake_download(repo_id, filenames):
        calls.append(repo_id)
        if repo_id == "someone/first":
            return None, "EntryNotFoundError: 404"
        path = tmp_path / "downloaded.pt"
        save_generator(tiny_generator(seed=3), path)
        return path, None

    monkeypatch.setattr(studio.hub, "hf_download", fake_download)
    monkeypatch.setattr(studio.hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Nothing local or cached: the sources are downloaded in order, the first failure falls through to the second.
    assert resolve_named_checkpoint(info) == tmp_path / "downloaded.pt" and calls == ["someone/first", "someone/second"]

    # A copy in the Hugging Face cache wins over any download.
    from tests.conftest import fake_hub_cache

    cached = fake_hub_cache(tmp_path / "hub", "someone/second", "tiny.pt", b"cached")
    calls.clear()
    assert resolve_named_checkpoint(info).read_bytes() == cached.read_bytes() and calls == []

    # A file in STUDIO_STYLEGAN_DIR wins over the cache, and loads strictly under the registry's config.
    g = tiny_generator(seed=5)
    (tmp_path / "dir").mkdir()
    save_generator(g, tmp_path / "dir" / "tiny.pt")
    assert resolve_named_checkpoint(info) == tmp_path / "dir" / "tiny.pt"
    monkeypatch.setitem(CHECKPOINTS, "tiny-32", info)
    loaded = load_generator("tiny-32")
    w = g.mean_latent(64).unsqueeze(1).repeat(1, g.n_latent, 1)
    torch.testing.assert_close(loaded.synthesize(w), g.synthesize(w), atol=1e-6, rtol=0)


def test_named_checkpoint_errors_list_what_was_tried(tmp_path, monkeypatch):
    import huggingface_hub.constants

    import studio.hub

    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path / "dir"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(studio.hub, "hf_download", lambda *a: pytest.fail("must not download"))
    info = _tiny_info(sources=(("someone/first", "tiny.pt"),))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        resolve_named_checkpoint(info)
    for needle in (str(tmp_path / "dir" / "tiny.pt"), "someone/first/tiny.pt", "HF_HUB_OFFLINE", "build it",
                   "STUDIO_STYLEGAN"):
        assert needle in str(err.value)
    # A setup problem, not a bad input: the page keeps the message until it is dismissed (issue 16: it vanished
    # after 10 s as a plain FileNotFoundError did).
    from studio.ui.common import is_user_error

    assert err.value.setup_problem is True and is_user_error(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(studio.hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        resolve_named_checkpoint(info)
    with pytest.raises(FileNotFoundError, match="no download address"):
        resolve_named_checkpoint(_tiny_info())


def test_infer_config_of_config_f_layout():
    torch.manual_seed(0)
    sd = Generator(size=256, style_dim=64, n_mlp=3, channel_multiplier=2, max_channels=64).state_dict()
    cfg = infer_config(sd)
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.max_channels) == (256, 64, 3, 64)


def test_hub_spec_is_checked_and_never_downloads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="hf:OWNER/REPO/FILE.pt"):
        load_generator("hf:only-owner")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_generator("hf:someone/some-repo/stylegan2-ffhq-config-f.pt")


def test_hub_spec_skips_the_download_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    import huggingface_hub.constants

    import studio.hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(studio.hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(studio.hub, "hf_download", lambda *a: pytest.fail("must not try to download"))
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        load_generator("hf:someone/some-repo/stylegan2-ffhq-config-f.pt")


def test_loads_rosinality_train_py_checkpoints_with_args(tmp_path):
    import argparse

    g = tiny_generator(seed=7)
    sd = g.state_dict()
    torch.save({"g": sd, "d": {}, "g_ema": sd, "g_optim": {}, "args": argparse.Namespace(size=32, n_mlp=2)},
               tmp_path / "010000.pt")
    loaded = load_generator(tmp_path / "010000.pt")  # no latent_avg stored: the mean of mapped z is used
    assert loaded.latent_avg.shape == (1, 32)
    w = g.mean_latent(64).unsqueeze(1).repeat(1, g.n_latent, 1)
    torch.testing.assert_close(loaded.synthesize(w), g.synthesize(w), atol=1e-6, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_matches_cpu_and_bf16_is_close(monkeypatch):
    g = tiny_generator(seed=8, size=64)
    w = g.mean_latent(64).unsqueeze(1).repeat(2, g.n_latent, 1)
    cpu = g.synthesize(w)
    gc = g.to("cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare plain fp32 arithmetic
    torch.testing.assert_close(gc.synthesize(w.cuda()).cpu(), cpu, atol=1e-4, rtol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf = gc.synthesize(w.cuda()).float().cpu()
    assert (bf - cpu).abs().mean() < 0.05 * cpu.abs().mean()


def test_benchmark_reference_formulation_renders_the_same_image():
    """benchmarks/styleclip.py times ours against rosinality's formulation; the comparison only means something if
    both compute the same image (grouped per-sample weights + zero-insertion upfirdn2d vs ours)."""
    import studio.generators.stylegan2 as sg2
    from benchmarks.styleclip import formulation, modulated_conv_grouped

    g = tiny_generator(seed=2, size=64)
    w = g.mean_latent(64).unsqueeze(1).repeat(3, g.n_latent, 1) + 0.3 * torch.randn(3, g.n_latent, 32)
    ours = g.synthesis(g.w_to_styles(w))
    with formulation("reference"):
        assert ModulatedConv2d.forward is modulated_conv_grouped and sg2.upfirdn2d is not upfirdn2d
        ref = g.synthesis(g.w_to_styles(w))
    torch.testing.assert_close(ref, ours, atol=1e-4, rtol=0)
    assert ModulatedConv2d.forward is not modulated_conv_grouped and sg2.upfirdn2d is upfirdn2d  # undone


def test_a_missing_checkpoint_path_says_not_found_and_lists_every_name():
    """Issue 16: a bad path said "must be a checkpoint file ..." and its list of names omitted demo-shapes."""
    from studio.generators.checkpoints import load_generator

    with pytest.raises(ValueError, match=r"'/nonexistent/model.pt': not found.*'demo-shapes'.*'ffhq-1024'"):
        load_generator("/nonexistent/model.pt")


def test_crafted_checkpoints_are_refused_before_a_generator_is_allocated(tmp_path, monkeypatch):
    """Issue 17: a 3.7 KB checkpoint whose tensor shapes implied a huge generator allocated gigabytes before the
    strict key check. Now the inferred config is bounded and keys and shapes are checked on the meta device."""
    from studio.generators import checkpoints

    built = []

    class Counting(Generator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(next(self.parameters()).device.type)

    monkeypatch.setattr(checkpoints, "Generator", Counting)
    state = tiny_generator().state_dict()
    huge = dict(state, **{"style.1.weight": torch.empty(0, 12000)})  # zero rows, but style_dim 12000
    torch.save({"g_ema": huge}, tmp_path / "huge.pt")
    with pytest.raises(checkpoints.CheckpointMismatchError, match="style_dim 12000"):
        checkpoints.load_generator(tmp_path / "huge.pt")
    wrong = dict(state, **{"input.input": torch.zeros(1, 1024, 4, 4)})  # implies 1024 channels: a large generator
    torch.save({"g_ema": wrong}, tmp_path / "wrong.pt")
    with pytest.raises(checkpoints.CheckpointMismatchError, match="shape mismatches"):
        checkpoints.load_generator(tmp_path / "wrong.pt")
    assert built == ["meta"]  # only the storage-less probe was built, never a real generator
    torch.save({"g_ema": state}, tmp_path / "ok.pt")
    checkpoints.load_generator(tmp_path / "ok.pt")
    assert built == ["meta", "meta", "cpu"]
