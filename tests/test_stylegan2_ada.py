"""NVIDIA StyleGAN2-ADA `.pkl` files: read without running their code, converted to our generator, refused when
they would run code. The pickles are written here with NVIDIA's module and class names (`torch_utils.persistence`,
`dnnlib.util.EasyDict`, the networks' class names), from a tiny generator's weights."""

from __future__ import annotations

import collections
import os
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch

from studio.generators import ada_pickle
from studio.generators.ada_pickle import UnsafePickleError, read_ada_pickle
from studio.generators.checkpoints import CheckpointMismatchError, load_generator, save_generator
from studio.generators.stylegan2 import Generator

BUFFERS = ("w_avg", "noise_const", "resample_filter")


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(size=32, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=16).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(("noise.weight", "activate.bias", "bias")):
                p.normal_(0, 0.3)
    g.latent_avg = g.mean_latent(256, generator=torch.Generator().manual_seed(1))
    return g.requires_grad_(False)


def to_ada(g: Generator) -> dict[str, torch.Tensor]:
    """Our (rosinality's) weights under NVIDIA's G_ema names: the inverse of what the converter must do."""
    sd = g.state_dict()
    filt = torch.tensor([1.0, 3, 3, 1])
    filt = (filt[:, None] * filt[None]) / 64
    out = {"mapping.w_avg": g.latent_avg.reshape(-1).clone()}
    for i in range(g.config.n_mlp):
        out[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    out["synthesis.b4.const"] = sd["input.input"][0]

    def layer(prefix: str, ours: str, noise: int | None) -> None:
        out[f"{prefix}.affine.weight"] = sd[f"{ours}.conv.modulation.weight"]
        out[f"{prefix}.affine.bias"] = sd[f"{ours}.conv.modulation.bias"]
        out[f"{prefix}.weight"] = sd[f"{ours}.conv.weight"][0]
        if noise is None:  # toRGB
            out[f"{prefix}.bias"] = sd[f"{ours}.bias"].reshape(-1)
            return
        out[f"{prefix}.bias"] = sd[f"{ours}.activate.bias"]
        out[f"{prefix}.noise_const"] = sd[f"noises.noise_{noise}"][0, 0]
        out[f"{prefix}.noise_strength"] = sd[f"{ours}.noise.weight"].reshape(())
        out[f"{prefix}.resample_filter"] = filt

    layer("synthesis.b4.conv1", "conv1", 0)
    layer("synthesis.b4.torgb", "to_rgb1", None)
    out["synthesis.b4.resample_filter"] = filt
    for k in range(g.log_size - 2):
        res = 2 ** (k + 3)
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * k}", 2 * k + 1)
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        layer(f"synthesis.b{res}.torgb", f"to_rgbs.{k}", None)
        out[f"synthesis.b{res}.resample_filter"] = filt
    return {k: v.clone() for k, v in out.items()}


@pytest.fixture
def nvidia_modules(monkeypatch):
    """`torch_utils.persistence` and `dnnlib.util` as NVIDIA's pickles name them, only so that `pickle.dump` can
    write those names (pickle checks that a global it writes can be found by its name)."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # NVIDIA's exec()s meta["module_src"]; never called here
        raise AssertionError("the real reconstructor must not run")

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    for name, mod in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                      ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)


class Persistent:
    """Pickles exactly as a `torch_utils.persistence` object does: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, reconstruct, class_name: str, state: dict, module_src: str):
        self.reconstruct, self.meta = reconstruct, dict(type="class", version=6, module_src=module_src,
                                                        class_name=class_name, state=state)

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def class_of(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if re.fullmatch(r"b\d+", last):
        return "SynthesisBlock"
    return {"synthesis": "SynthesisNetwork", "mapping": "MappingNetwork", "conv0": "SynthesisLayer",
            "conv1": "SynthesisLayer", "torgb": "ToRGBLayer"}.get(last, "FullyConnectedLayer")


def persistent_tree(flat: dict[str, torch.Tensor], mods, module_src: str, root_class: str | None = None):
    """NVIDIA-style nested persistent modules holding `flat`'s tensors, with the attributes real ones carry."""
    nodes: dict[str, dict] = {}

    def node(path: str) -> dict:
        if path not in nodes:
            nodes[path] = {"training": False, "_parameters": collections.OrderedDict(),
                           "_buffers": collections.OrderedDict(), "_non_persistent_buffers_set": set(),
                           "_modules": collections.OrderedDict(), "_forward_hooks": collections.OrderedDict(),
                           "_init_args": (), "_init_kwargs": mods.EasyDict(w_dim=32, mapping_kwargs=mods.EasyDict()),
                           "weight_gain": np.float64(1 / np.sqrt(32)), "activation": "lrelu",
                           "block_resolutions": [4, 8, 16, 32], "conv_clamp": None}
            if path:
                parent, _, name = path.rpartition(".")
                node(parent)["_modules"][name] = path  # replaced by the object below
        return nodes[path]

    for key, value in flat.items():
        path, _, name = key.rpartition(".")
        group = "_buffers" if name in BUFFERS else "_parameters"
        node(path)[group][name] = value if group == "_buffers" else torch.nn.Parameter(value, requires_grad=False)
    built: dict[str, Persistent] = {}
    for path in sorted(nodes, key=lambda p: -p.count(".") if p else 1):  # children first, the root last
        state = nodes[path]
        state["_modules"] = collections.OrderedDict((n, built[c]) for n, c in state["_modules"].items())
        built[path] = Persistent(mods.reconstruct, root_class or class_of(path) if not path else class_of(path),
                                 state, module_src)
    return built[""]


def write_ada_pickle(path, g: Generator, mods, module_src: str = "import torch\n", extra: dict | None = None):
    flat = {**to_ada(g), **(extra or {})}
    g_ema = persistent_tree(flat, mods, module_src)
    disc = persistent_tree({"b32.fromrgb.weight": torch.randn(4, 3, 1, 1)}, mods, module_src,
                           root_class="Discriminator")
    data = {"G": g_ema, "D": disc, "G_ema": g_ema, "augment_pipe": None,
            "training_set_kwargs": mods.EasyDict(resolution=32, use_labels=False)}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)


@pytest.fixture
def stylegan_dir(tmp_path, monkeypatch):
    folder = tmp_path / "stylegan2"
    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(folder))
    return folder


def test_ada_pickle_converts_and_renders_the_same_image_as_our_checkpoint(tmp_path, nvidia_modules, stylegan_dir,
                                                                         monkeypatch):
    g = tiny_generator()
    marker = tmp_path / "module_src_ran"
    # NVIDIA's loader exec()s each object's module source; ours must not: this one would leave a file behind
    write_ada_pickle(tmp_path / "network-snapshot.pkl", g, nvidia_modules,
                     module_src=f"open({str(marker)!r}, 'w').write('ran')\n")
    save_generator(g, tmp_path / "ours.pt")
    ours = load_generator(tmp_path / "ours.pt")
    theirs = load_generator(tmp_path / "network-snapshot.pkl")
    assert not marker.exists()
    assert theirs.size == 32 and theirs.checkpoint_path == str(tmp_path / "network-snapshot.pkl")
    torch.testing.assert_close(theirs.latent_avg, ours.latent_avg)
    w = ours.latent_avg[:, None].repeat(1, ours.n_latent, 1) + 0.5 * torch.randn(1, ours.n_latent, 32,
                                                                                generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(theirs.synthesize(w), ours.synthesize(w), atol=0, rtol=0)
        z = torch.randn(2, 32, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(theirs([z])[0], ours([z])[0], atol=0, rtol=0)
    # saved as safetensors next to the cache: the next load reads no pickle at all
    converted = list((stylegan_dir / "converted").glob("network-snapshot-*.safetensors"))
    assert len(converted) == 1

    def no_pickles(*args, **kwargs):
        raise AssertionError("the pickle was read again")

    monkeypatch.setattr(ada_pickle, "read_ada_pickle", no_pickles)
    again = load_generator(tmp_path / "network-snapshot.pkl")
    torch.testing.assert_close(again.synthesize(w), theirs.synthesize(w), atol=0, rtol=0)
    assert again.identity() == theirs.identity()


def test_ada_reader_keeps_tensors_and_containers_only(tmp_path, nvidia_modules):
    write_ada_pickle(tmp_path / "net.pkl", tiny_generator(), nvidia_modules)
    data = read_ada_pickle(tmp_path / "net.pkl")
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert data["G_ema"].class_name == "Generator" and data["D"].class_name == "Discriminator"
    assert "module_src" not in vars(data["G_ema"]) and isinstance(data["training_set_kwargs"], dict)
    flat = ada_pickle.stub_state_dict(data["G_ema"])
    assert set(flat) == set(to_ada(tiny_generator()))


class RunsCode:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "builtins.open", "pathlib"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, nvidia_modules, stylegan_dir, how):
    import builtins
    import pathlib

    marker = tmp_path / "created-by-the-pickle"
    payload = {"os.system": RunsCode(os.system, f"touch {marker}"),
               "builtins.exec": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w')"),
               "builtins.open": RunsCode(builtins.open, str(marker), "w"),
               "pathlib": RunsCode(pathlib.Path.touch, pathlib.Path(marker))}[how]
    g = tiny_generator()
    g_ema = persistent_tree(to_ada(g), nvidia_modules, "import torch\n")
    g_ema.meta["state"]["_init_kwargs"]["hook"] = payload  # buried inside an otherwise valid snapshot
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"G_ema": g_ema}, f, protocol=4)
    with pytest.raises(UnsafePickleError, match=r"asks to import .*; refused"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()
    assert not (stylegan_dir / "converted").exists() or not list((stylegan_dir / "converted").iterdir())


def test_ada_pickles_of_other_kinds_are_refused_with_a_message(tmp_path, nvidia_modules, stylegan_dir):
    g = tiny_generator()
    # a conditional generator (label embedding) is not a StyleGAN2 we can run
    write_ada_pickle(tmp_path / "cond.pkl", g, nvidia_modules,
                     extra={"mapping.embed.weight": torch.zeros(32, 10), "mapping.embed.bias": torch.zeros(32)})
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(2\): mapping.embed.bias, mapping.embed"):
        load_generator(tmp_path / "cond.pkl")
    # a shape that does not fit the generator its other tensors imply
    bad = tiny_generator()
    write_ada_pickle(tmp_path / "bad.pkl", bad, nvidia_modules,
                     extra={"synthesis.b8.conv1.affine.bias": torch.zeros(5)})
    with pytest.raises(CheckpointMismatchError, match=r"convs.1.conv.modulation.bias file \(5,\)"):
        load_generator(tmp_path / "bad.pkl")
    # not a network pickle, a torch.save file, and a plain pickle of something else
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(ValueError, match="not a StyleGAN2-ADA network pickle"):
        load_generator(tmp_path / "list.pkl")
    torch.save({"g_ema": g.state_dict()}, tmp_path / "torchsave.pkl")
    with pytest.raises(ValueError, match="StyleGAN2-ADA network pickle"):
        load_generator(tmp_path / "torchsave.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="cannot read .* as a StyleGAN2-ADA network pickle"):
        load_generator(tmp_path / "junk.pkl")
