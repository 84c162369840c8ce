"""StyleCLIP's own mapper checkpoints (the `.pt` files of its published pretrained mappers): a file written here with
StyleCLIP's exact layout (`{"state_dict": StyleCLIPMapper.state_dict(), "opts": vars(opts)}`, tiny config on the demo
generator) loads without running code, gives the edit StyleCLIP's formulas give for its weights, is converted once
to our safetensors file, and anything else is refused by name (CPU, offline)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import pipelines.styleclip_mapper as sm
from pipelines.styleclip_mapper import (
    LatentMapper,
    StyleCLIPMapperPipeline,
    convert_styleclip_mapper,
    converted_dir,
    load_mapper,
    read_styleclip_mapper,
    save_mapper,
)
from studio.generators.shapes import ShapesGenerator

PROMPT = "purple hair"
D = 16  # the demo generator's style_dim; its W+ has 6 entries: coarse (0-3) and medium (4-5), no fine


def styleclip_opts(**changes) -> dict:
    """vars(opts) of StyleCLIP's mapper/options/train_options.py (as coach.py saves them), for a tiny run."""
    opts = {"exp_dir": "../results/purple", "mapper_type": "LevelsMapper", "no_coarse_mapper": False,
            "no_medium_mapper": False, "no_fine_mapper": True, "latents_train_path": "train_faces.pt",
            "latents_test_path": "test_faces.pt", "train_dataset_size": 5000, "test_dataset_size": 1000,
            "batch_size": 2, "test_batch_size": 1, "workers": 4, "test_workers": 2, "learning_rate": 0.5,
            "optim_name": "ranger", "id_lambda": 0.1, "clip_lambda": 1.0, "latent_l2_lambda": 0.8,
            "stylegan_weights": "../pretrained_models/stylegan2-ffhq-config-f.pt", "stylegan_size": 64,
            "ir_se50_weights": "../pretrained_models/model_ir_se50.pth", "checkpoint_path": None,
            "max_steps": 50000, "image_interval": 100, "board_interval": 50, "val_interval": 2000,
            "save_interval": 2000, "description": PROMPT, "work_in_stylespace": False, "device": "cuda:0"}
    opts.update(changes)
    return opts


def styleclip_weights(seed: int = 0, modules=("course_mapping", "medium_mapping"), dim: int = D) -> dict:
    """StyleCLIP LevelsMapper's parameters under its own names: `<module>.mapping.<1-4>.weight` (D, D) drawn as
    EqualLinear draws them (randn / lr_mul) and non-zero biases (a trained mapper's)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for module in modules:
        for i in range(1, 5):
            out[f"{module}.mapping.{i}.weight"] = torch.randn(dim, dim, generator=gen) / 0.01
            out[f"{module}.mapping.{i}.bias"] = torch.randn(dim, generator=gen)
    return out


def write_checkpoint(path: Path, weights: dict, generator, opts: dict | None = None, extra: dict | None = None
                     ) -> Path:
    """What coach.py's checkpoint_me writes: StyleCLIPMapper.state_dict() (mapper.*, decoder.*) and vars(opts)."""
    state = {f"mapper.{k}": v for k, v in weights.items()}
    state.update({f"decoder.{k}": v.clone() for k, v in generator.state_dict().items()})
    state.update(extra or {})
    torch.save({"state_dict": state, "opts": styleclip_opts() if opts is None else opts}, path)
    return path


def styleclip_edit(weights: dict, w: torch.Tensor) -> torch.Tensor:
    """w + 0.1 LevelsMapper(w) from StyleCLIP's formulas (models/stylegan2/model.py PixelNorm and EqualLinear with
    lr_mul 0.01 and fused_leaky_relu, its bias on the last axis for 3-D inputs; latent_mappers.py), written here
    independently of the studio's modules."""
    parts = []
    for module, (lo, hi) in (("course_mapping", (0, 4)), ("medium_mapping", (4, 8)), ("fine_mapping", (8, None))):
        x = w[:, lo:hi]
        if not x.shape[1]:
            continue
        if f"{module}.mapping.1.weight" not in weights:
            parts.append(torch.zeros_like(x))
            continue
        x = x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)
        for i in range(1, 5):
            weight, bias = weights[f"{module}.mapping.{i}.weight"], weights[f"{module}.mapping.{i}.bias"]
            x = F.leaky_relu(x @ (weight * (0.01 / math.sqrt(weight.shape[1]))).t() + bias * 0.01, 0.2) * 2**0.5
        parts.append(x)
    return w + 0.1 * torch.cat(parts, dim=1)


@pytest.fixture(scope="module")
def pipe():
    from studio.scorer import get_scorer

    return StyleCLIPMapperPipeline(ShapesGenerator(), get_scorer("shapes-clip", device="cpu"))


@pytest.fixture
def cache(pipe, tmp_path, monkeypatch):
    """The converted mappers' folder, in tmp_path (the module-wide pipeline's cache too)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("STUDIO_CACHE", str(folder))
    monkeypatch.setattr(pipe, "cache_dir", folder / "styleclip")
    return folder / "styleclip" / "mappers"


def test_a_styleclip_checkpoint_gives_styleclips_edit_and_the_same_edit_as_our_mapper(pipe, tmp_path, cache):
    weights = styleclip_weights()
    path = write_checkpoint(tmp_path / "purple_hair.pt", weights, pipe.generator)
    mapper = load_mapper(path, pipe.generator)
    assert mapper.prompt == PROMPT and mapper.groups == ("coarse", "medium")
    assert mapper.settings["styleclip_opts"]["latent_l2_lambda"] == 0.8
    w = torch.cat([pipe.random_latent(seed=s, truncation=0.7) for s in range(3)])
    with torch.no_grad():
        assert torch.allclose(mapper.edit(w), styleclip_edit(weights, w), atol=1e-5)
        # the same weights loaded our way (a LatentMapper, saved and reloaded as safetensors) edit the same
        ours = LatentMapper(pipe.generator.n_latent, D, ("coarse", "medium"))
        ours.load_state_dict(weights, strict=True)
        reloaded = load_mapper(save_mapper(ours, tmp_path / "ours.safetensors"), pipe.generator)
        assert torch.equal(mapper.edit(w), reloaded.edit(w))
    # the pipeline takes the .pt directly: the same image as with our mapper object, at any strength
    a = pipe.apply_mapper(w[:1], str(path), strength=0.7)
    b = pipe.apply_mapper(w[:1], ours, strength=0.7)
    assert a.prompt == PROMPT and torch.equal(a.image_tensor, b.image_tensor)
    assert not torch.equal(a.image_tensor, a.original_tensor)  # the edit moved something


def test_the_checkpoint_is_converted_once_and_then_read_without_a_pickle(pipe, tmp_path, cache, monkeypatch):
    path = write_checkpoint(tmp_path / "bobcut.pt", styleclip_weights(1), pipe.generator)
    reads = []
    real = sm.read_styleclip_mapper
    monkeypatch.setattr(sm, "read_styleclip_mapper", lambda *a, **k: reads.append(a) or real(*a, **k))
    first = load_mapper(path, pipe.generator)
    second = pipe.load_mapper(str(path))
    assert len(reads) == 1  # the second load read the converted file
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("bobcut-") and files[0].name.endswith("-w6.safetensors")
    # the converted file is our format: it loads as any saved mapper, prompt and generator weights included
    again = load_mapper(files[0], pipe.generator)
    assert again.prompt == PROMPT and set(again.decoder_probe) == {"style.1.weight", "style.1.bias"}
    w = pipe.random_latent(seed=4)
    with torch.no_grad():
        assert torch.equal(first.edit(w), second.edit(w)) and torch.equal(first.edit(w), again.edit(w))
    # without a generator, n_latent comes from opts["stylegan_size"] (64 px: 10 entries)
    assert read_styleclip_mapper(path).n_latent == 10
    assert convert_styleclip_mapper(path).name == files[0].name.replace("-w6", "")
    assert load_mapper(convert_styleclip_mapper(path)).n_latent == 10 and converted_dir() == cache


def test_the_cache_keeps_at_most_max_converted_files(pipe, tmp_path, cache, monkeypatch):
    monkeypatch.setattr(sm, "MAX_CONVERTED", 2)
    outs = []
    for seed in range(3):
        path = write_checkpoint(tmp_path / f"m{seed}.pt", styleclip_weights(seed), pipe.generator)
        outs.append(convert_styleclip_mapper(path, pipe.generator))
        os.utime(outs[-1], (1e9 + seed, 1e9 + seed))  # last used in this order
    assert sorted(cache.glob("*.safetensors")) == sorted(outs[1:])  # the least recently used one was dropped
    # a conversion found in the cache counts as a use
    assert convert_styleclip_mapper(tmp_path / "m1.pt", pipe.generator) == outs[1]
    assert outs[1].stat().st_mtime > outs[2].stat().st_mtime


class _WritesAFile:
    """Pickles as a call of open(target, "w"): plain unpickling would create the file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


def test_a_checkpoint_whose_unpickling_would_run_code_is_refused_and_runs_nothing(pipe, tmp_path, cache):
    target = tmp_path / "created-by-the-pickle.txt"
    path = tmp_path / "afro.pt"
    state = {f"mapper.{k}": v for k, v in styleclip_weights().items()}
    torch.save({"state_dict": state, "opts": {**styleclip_opts(), "hook": _WritesAFile(target)}}, path)
    assert not target.exists()
    with pytest.raises(ValueError, match="weights-only StyleCLIP mapper checkpoint"):
        load_mapper(path, pipe.generator)
    with pytest.raises(ValueError, match="weights-only StyleCLIP mapper checkpoint"):
        pipe.apply_mapper(None, str(path))
    assert not target.exists() and not list(cache.glob("*"))  # nothing ran, nothing was converted


def test_wrong_keys_shapes_and_kinds_are_refused_by_name(pipe, tmp_path, cache):
    g = pipe.generator

    def refused(name: str, weights: dict, match: str, **kwargs) -> None:
        path = write_checkpoint(tmp_path / f"{name}.pt", weights, g, **kwargs)
        with pytest.raises(ValueError, match=match):
            load_mapper(path, g)

    good = styleclip_weights()
    refused("missing", {k: v for k, v in good.items() if k != "medium_mapping.mapping.4.bias"},
            r"missing keys \(1\): mapper\.medium_mapping\.mapping\.4\.bias")
    refused("extra", {**good, "course_mapping.mapping.5.weight": torch.zeros(D, D)},
            r"unexpected keys \(1\): mapper\.course_mapping\.mapping\.5\.weight")
    refused("shape", {**good, "medium_mapping.mapping.3.weight": torch.zeros(D, 8)},
            r"shape mismatches \(1\): mapper\.medium_mapping\.mapping\.3\.weight file \(16, 8\) vs model \(16, 16\)")
    refused("dim", styleclip_weights(dim=8), r"maps W\+ of 6 x 8; this generator has 6 x 16")
    # a fine mapper cannot edit a generator of 6 W+ entries: its keys are named
    refused("fine", styleclip_weights(modules=("course_mapping", "fine_mapping")),
            r"unexpected keys \(8\): mapper\.fine_mapping\.mapping\.1\.bias")
    refused("other", good, r"unexpected keys \(1\): latent_avg", extra={"latent_avg": torch.zeros(D)})
    refused("single", {"mapping.mapping.1.weight": torch.zeros(D, D)}, "a StyleCLIP 'SingleMapper'; only its "
            "'LevelsMapper'", opts=styleclip_opts(mapper_type="SingleMapper"))
    refused("single-keys", {"mapping.mapping.1.weight": torch.zeros(D, D)}, "a StyleCLIP 'SingleMapper'")
    refused("stylespace", good, "StyleSpace", opts=styleclip_opts(work_in_stylespace=True))
    # a checkpoint trained with another generator (its decoder's mapping network differs) edits nothing here
    path = write_checkpoint(tmp_path / "other-gen.pt", good, ShapesGenerator(seed=1))
    with pytest.raises(ValueError, match=r"trained with another generator \(its decoder's style\.1\.weight"):
        load_mapper(path, g)
    with pytest.raises(ValueError, match="another generator"):
        pipe.apply_mapper(None, str(path))
    # not StyleCLIP's layout at all
    torch.save({"g_ema": {}}, tmp_path / "rosinality.pt")
    with pytest.raises(ValueError, match=r"no 'state_dict' of tensors .* expected StyleCLIP's \{'state_dict'"):
        load_mapper(tmp_path / "rosinality.pt", g)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, expected StyleCLIP's"):
        load_mapper(tmp_path / "list.pt", g)
    torch.save({"state_dict": {"decoder.style.1.weight": torch.zeros(D, D)}}, tmp_path / "nomapper.pt")
    with pytest.raises(ValueError, match=r"no mapper weights \('mapper\.course_mapping\.mapping\.1\.weight'"):
        load_mapper(tmp_path / "nomapper.pt", g)
    # our own format is strict too: a generator weight outside decoder.* is an unexpected key, not a probe
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    ours = save_mapper(LatentMapper(6, D, ("coarse", "medium")).reset_parameters(0), tmp_path / "ours.safetensors")
    with safe_open(str(ours), framework="pt") as f:
        meta = f.metadata()
    save_file({**load_file(str(ours)), "style.1.weight": torch.zeros(D, D)}, str(ours), metadata=meta)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): style\.1\.weight"):
        load_mapper(ours, g)
    assert not list(cache.glob("*"))  # nothing refused was converted


def test_a_checkpoint_too_big_or_in_the_legacy_format_is_refused(pipe, tmp_path, cache, monkeypatch):
    import zipfile

    g = pipe.generator
    path = write_checkpoint(tmp_path / "big.pt", styleclip_weights(), g, extra={"decoder.pad": torch.zeros(2**20)})
    monkeypatch.setattr(sm, "MAX_STYLECLIP_BYTES", path.stat().st_size - 1)
    with pytest.raises(ValueError, match="holds 4 MiB; a StyleCLIP mapper checkpoint is at most"):
        load_mapper(path, g)
    # the same entries deflated: a small file that would unpack past the bound (read from the zip directory)
    small = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        unpacked = sum(info.file_size for info in src.infolist())
    monkeypatch.setattr(sm, "MAX_STYLECLIP_BYTES", 1 << 30)
    assert load_mapper(small, g).prompt == PROMPT  # torch reads deflated entries: the bound must look inside
    for converted in cache.glob("*"):
        converted.unlink()
    monkeypatch.setattr(sm, "MAX_STYLECLIP_BYTES", unpacked - 1)
    assert small.stat().st_size < unpacked // 4
    with pytest.raises(ValueError, match="holds 4 MiB; a StyleCLIP mapper checkpoint is at most"):
        load_mapper(small, g)
    # torch's legacy format is not read: its tensor sizes are known only by unpickling
    torch.save({"state_dict": {}, "opts": {}}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="not torch's zip format"):
        load_mapper(tmp_path / "legacy.pt", g)
    assert not list(cache.glob("*"))


def test_opts_as_a_namespace_and_without_a_description_load(pipe, tmp_path, cache):
    opts = styleclip_opts()
    del opts["description"]
    path = write_checkpoint(tmp_path / "ns.pt", styleclip_weights(), pipe.generator, opts=argparse.Namespace(**opts))
    mapper = load_mapper(path, pipe.generator)
    assert mapper.prompt == "" and mapper.settings["styleclip_opts"]["mapper_type"] == "LevelsMapper"
    out = pipe.apply_mapper(None, str(path), seed=2)  # scored against an empty prompt: it still edits
    assert out.prompt == "" and out.image is not None


def test_the_tab_takes_a_styleclip_checkpoint_upload(tmp_path, monkeypatch):
    """The Latent mapper sub-tab: its upload box takes `.pt` files, and an uploaded StyleCLIP checkpoint gives the
    same edit of the image to edit as the same weights given as our mapper."""
    import gradio as gr
    import numpy as np

    from studio.app import make_latent_functions
    from studio.ui import latent_editing

    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    functions = make_latent_functions("cpu")
    demo_names = ("demo-shapes", "shapes-clip")
    with gr.Blocks() as demo:
        latent_editing.build(**functions, generator_choices=[demo_names[0]], default_generator=demo_names[0],
                             clip_choices=[demo_names[1]], default_clip=demo_names[1])
    uploads = [b for b in demo.blocks.values() if isinstance(b, gr.File)]
    assert any(".pt" in (b.file_types or []) and ".safetensors" in b.file_types for b in uploads)
    (apply,) = [f.fn for f in demo.fns.values() if f.api_name == "latent_mapper_apply"]
    sample = functions["sample"](*demo_names, {"seed": 2})
    state = {"generator": demo_names[0], "clip": demo_names[1], "result": sample}
    weights = styleclip_weights(5)
    path = write_checkpoint(tmp_path / "curly_hair.pt", weights, ShapesGenerator())
    ours = LatentMapper(6, D, ("coarse", "medium"))
    ours.load_state_dict(weights, strict=True)
    # generator, clip, state, seed, truncation, trained mapper, uploaded file, strength
    *_, (_, before, after, _, info, _) = apply(*demo_names, state, 2, 0.7, None, str(path), 1.0)
    *_, (_, _, expected, *_) = apply(*demo_names, state, 2, 0.7, ours, None, 1.0)
    assert f"“{PROMPT}”" in info and not np.array_equal(before, after)
    np.testing.assert_array_equal(after, expected)
    assert len(list((tmp_path / "cache" / "styleclip" / "mappers").glob("*.safetensors"))) == 1
