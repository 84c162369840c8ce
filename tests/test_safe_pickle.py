"""Pickle-based files a visitor can upload are bounded before anything unpickles them (issue 22, item 1).

The attack: a torch zip whose `data.pkl` builds `T_k = (T_{k-1}, T_{k-1})` with memo opcodes. Every opcode is one
`torch.load(weights_only=True)` allows; 30 levels are ~300 bytes and 2**30 tuples once expanded, and hashing one
(a dict key), formatting it (`!r` in an error message) or `str()` of it walks them all inside one C call. The files
are generated here, byte by byte; the tests check that they are refused by the graph bound before torch (or our ADA
unpickler) builds anything, so no test can hang even if the bound broke: torch.load is replaced by a tripwire.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from studio.safe_pickle import (
    MAX_PICKLE_NODES,
    PickleGraphError,
    check_pickle_graph,
    check_torch_file,
    describe,
    describe_keys,
)

# ----------------------------------------------------------------------------------------------- pickle assembly
PROTO2 = b"\x80\x02"


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def graph(levels: int, base: int = 0) -> bytes:
    """Opcodes that leave T_levels on the stack, memo keys base..base+levels (LONG_BINPUT/LONG_BINGET)."""
    out = b")" + b"r" + _u32(base)  # EMPTY_TUPLE, LONG_BINPUT
    for k in range(1, levels + 1):
        out += b"j" + _u32(base + k - 1) + b"j" + _u32(base + k - 1) + b"\x86" + b"r" + _u32(base + k)  # TUPLE2
    return out


def text(s: str) -> bytes:
    data = s.encode()
    return b"X" + _u32(len(data)) + data  # BINUNICODE


def dict_of(*items: tuple[bytes, bytes]) -> bytes:
    """EMPTY_DICT MARK key value ... SETITEMS: a dict of already-assembled keys and values."""
    return b"}" + b"(" + b"".join(k + v for k, v in items) + b"u"


def pickle_bytes(body: bytes) -> bytes:
    return PROTO2 + body + b"."


def torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A file in torch's zip format (what torch.save writes since 1.6) whose data.pkl is `data_pkl`."""
    buf = io.BytesIO()
    torch.save({}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data_pkl if info.filename.endswith("data.pkl") else src.read(info))
    return path


@pytest.fixture
def no_unpickling(monkeypatch):
    """torch.load and the ADA unpickler must never run on these files: reaching either fails the test at once
    (instead of hanging it on the hash)."""
    import studio.generators.ada_pickle as ada

    def tripwire(*args, **kwargs):
        raise AssertionError("the file reached the unpickler")

    monkeypatch.setattr(torch, "load", tripwire)
    monkeypatch.setattr(ada._SafeUnpickler, "load", tripwire)


# ----------------------------------------------------------------------------------------------- the bound itself
def test_the_memo_graph_is_counted_as_the_tree_hashing_would_walk():
    assert check_pickle_graph(pickle_bytes(graph(10)), "f") == 2**11 - 1  # T_10 expands to 2047 tuples
    with pytest.raises(PickleGraphError, match="more than 2,000,000 objects"):
        check_pickle_graph(pickle_bytes(graph(60)), "f")
    with pytest.raises(PickleGraphError, match="more than 100 objects"):
        check_pickle_graph(pickle_bytes(graph(7)), "f", max_nodes=100)  # 255 tuples


def test_real_torch_files_pass_in_both_formats_and_count_what_they_hold(tmp_path):
    sd = {f"layer{i}.weight": torch.randn(3, 3) for i in range(50)}
    for zip_format in (True, False):
        path = tmp_path / f"w{zip_format}.pt"
        torch.save({"state_dict": sd, "opts": {"size": 64}}, path, _use_new_zipfile_serialization=zip_format)
        check_torch_file(path, "w")
    # a plain pickle (no torch framing) is read as one stream
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2, (3, 4)]}, protocol=4))
    check_torch_file(path, "plain")


def test_depth_and_self_reference_are_refused():
    nested = b"]" * 300 + b"a" * 299  # EMPTY_LIST x 300, APPEND x 299: a list 300 deep
    with pytest.raises(PickleGraphError, match="more than 200 deep"):
        check_pickle_graph(pickle_bytes(nested), "f")
    selfref = b"]" + b"r" + _u32(0) + b"j" + _u32(0) + b"a"  # L = []; L.append(L)
    with pytest.raises(PickleGraphError, match="contains itself"):
        check_pickle_graph(pickle_bytes(selfref), "f")


@pytest.mark.parametrize("junk", [b"", b"\x80\x02", b"\x80\x02j\x05\x00\x00\x00.", b"\x80\x02a.", b"hello"])
def test_what_is_not_a_pickle_is_a_named_refusal(junk):
    with pytest.raises(PickleGraphError, match="'f'|f is not"):
        check_pickle_graph(junk, "f")


def test_error_messages_never_format_an_untrusted_object():
    big = (("x",) * 1000,) * 1000
    assert describe(big) == "a tuple" and describe("a" * 500).endswith("...") and len(describe("a" * 500)) < 50
    assert describe_keys({"b": 1, "a": 2, big: 3}) == "['a', 'b', 1 non-string keys]"


# ----------------------------------------------------------------------------------------------- every reader
def mapper_attacks(tmp_path: Path, levels: int = 30) -> dict[str, Path]:
    """The three shapes of the attack on StyleCLIP's mapper reader: the graph as a dict key (hashed while
    unpickling), as opts['mapper_type'] (formatted with !r) and as a top-level key (sorted(map(str, raw)))."""
    state = (text("state_dict"), b"}")
    return {
        "key": torch_zip(tmp_path / "key.pt", pickle_bytes(dict_of((graph(levels), text("x"))))),
        "mapper_type": torch_zip(tmp_path / "type.pt", pickle_bytes(dict_of(
            state, (text("opts"), dict_of((text("mapper_type"), graph(levels)))))),
        ),
        "stylegan_size": torch_zip(tmp_path / "size.pt", pickle_bytes(dict_of(
            state, (text("opts"), dict_of((text("stylegan_size"), graph(levels)))))),
        ),
    }


@pytest.mark.parametrize("where", ["key", "mapper_type", "stylegan_size"])
def test_a_memo_graph_mapper_is_refused_before_unpickling(tmp_path, no_unpickling, where):
    from pipelines.styleclip_mapper import read_styleclip_mapper

    path = mapper_attacks(tmp_path)[where]
    assert path.stat().st_size < 2048  # the attack is tiny
    with pytest.raises(PickleGraphError, match=r"StyleCLIP mapper checkpoint '\w+\.pt'.*objects"):
        read_styleclip_mapper(path)


def test_every_torch_file_reader_bounds_the_graph_first(tmp_path, no_unpickling):
    from studio.generators.checkpoints import load_weights_only, read_checkpoint
    from studio.generators.e4e import load_encoder
    from studio.hub import load_state_dict

    bomb = torch_zip(tmp_path / "bomb.pt", pickle_bytes(dict_of((graph(40), text("x")))))
    legacy = tmp_path / "legacy.pt"  # torch's legacy framing: the magic number pickle first
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle_bytes(graph(40)))
    for path in (bomb, legacy):
        for read in (lambda p: load_weights_only(p, "checkpoint", "a dict"), read_checkpoint, load_state_dict,
                     load_encoder):
            with pytest.raises(PickleGraphError):
                read(path)


def test_the_ada_pickle_reader_bounds_the_graph_first(tmp_path, no_unpickling):
    from studio.generators.ada_pickle import read_ada_pickle

    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle_bytes(dict_of((text("G_ema"), graph(40)))))
    with pytest.raises(PickleGraphError, match="StyleGAN2-ADA pickle 'network-snapshot.pkl'"):
        read_ada_pickle(path)


def test_the_latent_mapper_tab_refuses_the_upload_by_name(tmp_path, monkeypatch, no_unpickling):
    """The page's mapper upload goes through the same reader: the 30-level file (which froze the whole server for
    35 s, the 60-level one for good) is a named error on the page, and nothing was unpickled."""
    import gradio as gr

    from studio.app import make_latent_functions
    from studio.ui import latent_editing

    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    functions = make_latent_functions("cpu")
    names = ("demo-shapes", "shapes-clip")
    with gr.Blocks() as demo:
        latent_editing.build(**functions, generator_choices=[names[0]], default_generator=names[0],
                             clip_choices=[names[1]], default_clip=names[1])
    (apply,) = [f.fn for f in demo.fns.values() if f.api_name == "latent_mapper_apply"]
    state = {"generator": names[0], "clip": names[1], "result": functions["sample"](*names, {"seed": 2})}
    path = mapper_attacks(tmp_path)["mapper_type"]
    with pytest.raises(gr.Error, match="objects"):
        list(apply(*names, state, 2, 0.7, None, str(path), 1.0))  # ..., trained mapper, uploaded file, strength


def test_the_bound_leaves_room_for_the_largest_real_checkpoints(tmp_path):
    """Node count per tensor of a real rosinality checkpoint (the demo generator's, saved as train.py saves it),
    scaled to FFHQ-1024 with its discriminator and optimisers (~2 000 tensors, x3 for Adam's two moments): the
    bound is far above it."""
    from studio.generators.shapes import ShapesGenerator

    state = ShapesGenerator().state_dict()
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": state, "g": state, "latent_avg": torch.zeros(16)}, path)
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
        nodes = check_pickle_graph(archive.read(name), "f")
    per_tensor = nodes / (2 * len(state))
    assert 5 < per_tensor < 40  # ~20: the rebuild call, its storage key tuple, size, stride, ...
    assert per_tensor * 2_000 * 3 * 10 < MAX_PICKLE_NODES
