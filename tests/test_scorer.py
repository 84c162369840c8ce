import threading

import pytest
import torch

from studio import scorer as scorer_mod
from studio.hub import WeightsNotFoundError, resolve_clip
from studio.scorer import get_scorer


def test_same_object_for_same_key(tiny_configs):
    a = get_scorer("tiny-test-vit", device="cpu")
    b = get_scorer("tiny-test-vit", device="cpu", precision="fp32")
    assert a is b
    assert a.image_size == 32 and a.embed_dim == 32 and not a.is_demo


def test_text_cache_hits_and_values(tiny_configs):
    from tests.conftest import make_tiny_scorer

    tiny_scorer = make_tiny_scorer()  # a fresh cache: other tests share the session scorer's
    hits0, miss0 = tiny_scorer.text_cache_hits, tiny_scorer.text_cache_misses
    e1 = tiny_scorer.encode_text(["a red circle", "a blue square"])
    assert tiny_scorer.text_cache_misses == miss0 + 2
    e2 = tiny_scorer.encode_text(["a blue square", "a red circle", "a red circle"])
    assert tiny_scorer.text_cache_hits == hits0 + 3
    assert tiny_scorer.text_cache_misses == miss0 + 2
    assert torch.allclose(e2[0], e1[1]) and torch.allclose(e2[1], e1[0])
    assert torch.allclose(e1.norm(dim=-1), torch.ones(2), atol=1e-5)
    # The cached value equals a fresh, uncached computation.
    tokens = tiny_scorer.tokenizer(["a red circle"])
    direct = torch.nn.functional.normalize(tiny_scorer.model.encode_text(tokens).float(), dim=-1)
    assert torch.allclose(direct[0], e1[0], atol=1e-6)


def test_text_cache_is_bounded(tiny_configs):
    from tests.conftest import make_tiny_scorer

    s = make_tiny_scorer()
    s._text_cache_size = 3
    out = s.encode_text([f"word {i}" for i in range(5)])
    assert out.shape == (5, 32) and len(s._text_cache) == 3


def test_gradients_reach_the_image(tiny_scorer):
    img = torch.rand(2, 3, 48, 64, requires_grad=True)  # not square, not the model size: resize + crop inside
    sim = tiny_scorer.similarity(tiny_scorer.encode_image(img), tiny_scorer.encode_text(["a cat"]))
    (-sim.sum()).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    # Centre crop of a wide image: the leftmost columns fall outside the crop and get no gradient.
    assert img.grad[..., :4].abs().sum() == 0


def test_score_matches_hand_computation(tiny_scorer):
    torch.manual_seed(1)
    img = torch.rand(3, 3, 32, 32)
    texts = ["a dog", "a photo of a cat"]
    got = tiny_scorer.score(img, texts)
    x = (img - tiny_scorer.mean) / tiny_scorer.std
    ie = tiny_scorer.model.encode_image(x)
    te = tiny_scorer.model.encode_text(tiny_scorer.tokenizer(texts))
    cos = (ie / ie.norm(dim=-1, keepdim=True)) @ (te / te.norm(dim=-1, keepdim=True)).t()
    assert torch.allclose(got, 100 * cos.clamp(min=0), atol=1e-4)
    assert (got >= 0).all()


def test_prompt_ensemble_is_mean_of_templates(tiny_scorer):
    temps = ["a photo of a {}.", "a drawing of a {}."]
    ens = tiny_scorer.encode_prompts(["cat", "dog"], temps)
    manual = tiny_scorer.encode_text(["a photo of a cat.", "a drawing of a cat."]).mean(0)
    assert torch.allclose(ens[0], manual / manual.norm(), atol=1e-6)
    assert ens.shape == (2, 32)
    assert tiny_scorer.encode_prompts(["cat"], "imagenet").shape == (1, 32)
    with pytest.raises(ValueError, match="templates"):
        tiny_scorer.encode_prompts(["cat"], "nonsense")


def test_rank_is_a_distribution(tiny_scorer):
    p = tiny_scorer.rank(torch.rand(2, 3, 32, 32), ["cat", "dog", "car"])
    assert p.shape == (2, 3)
    assert torch.allclose(p.sum(-1), torch.ones(2), atol=1e-5)


def test_augment_shapes_fill_and_gradients(tiny_scorer):
    img = torch.zeros(2, 3, 64, 64, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    out = tiny_scorer.augment(img, 4, generator=g)
    assert out.shape == (8, 3, 32, 32)
    # A black image under perspective shows white (fill = 1) where the warp uncovers the border.
    assert out.max() > 0.9 and out.min() < 0.1
    out.sum().backward()
    assert img.grad.abs().sum() > 0
    # Same generator seed → same augmentations.
    again = tiny_scorer.augment(img, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, again)
    # Without distortion, a crop stays inside the image: no fill leaks into a constant image.
    grey = torch.full((1, 3, 40, 40), 0.3)
    inside = tiny_scorer.augment(grey, 8, distortion=0.0, generator=g)
    assert torch.allclose(inside, torch.full_like(inside, 0.3), atol=1e-5)


def test_shared_augment_applies_transform_i_to_every_image(tiny_scorer):
    a, b = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    both = tiny_scorer.augment(torch.cat([a, b]), 3, generator=torch.Generator().manual_seed(5), shared=True)
    alone_a = tiny_scorer.augment(a, 3, generator=torch.Generator().manual_seed(5), shared=True)
    alone_b = tiny_scorer.augment(b, 3, generator=torch.Generator().manual_seed(5))  # B = 1: same draws either way
    assert both.shape == (6, 3, 32, 32)
    torch.testing.assert_close(both[0::2], alone_a)  # output i·B + b: transform i of image b
    torch.testing.assert_close(both[1::2], alone_b)
    assert not torch.allclose(both[0], both[2])  # the n transforms differ from each other
    unshared = tiny_scorer.augment(torch.cat([a, a]), 3, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(unshared[0], unshared[1])  # without sharing, each image gets its own draw


def test_augment_rejects_bad_arguments(tiny_scorer):
    with pytest.raises(ValueError, match="`n`"):
        tiny_scorer.augment(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="`crop`"):
        tiny_scorer.augment(torch.rand(1, 3, 8, 8), 1, crop=(0.9, 0.5))


@pytest.mark.parametrize("name,layers", [("tiny-test-vit", (0, 1)), ("tiny-test-rn", (2, 3))])
def test_image_activations(tiny_configs, name, layers):
    from tests.conftest import make_tiny_scorer

    s = make_tiny_scorer(name)
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    emb, acts = s.image_activations(img, layers)
    assert emb.shape == (2, 32) and len(acts) == 2
    sum(a.pow(2).mean() for a in acts).backward()
    assert img.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="`layers`"):
        s.image_activations(img, (99,))


def test_two_threads_load_once(tiny_configs, monkeypatch):
    scorer_mod.release("tiny-test-rn")
    built = []
    real_build = scorer_mod._build

    def counting_build(*args, **kwargs):
        built.append(args[0].spec)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(scorer_mod, "_build", counting_build)
    barrier = threading.Barrier(2)
    got = []

    def worker():
        barrier.wait()
        got.append(get_scorer("tiny-test-rn", device="cpu"))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    assert got[0] is got[1]


def test_release_and_lru(tiny_configs, monkeypatch):
    monkeypatch.setattr(scorer_mod, "MAX_MODELS", 1)
    scorer_mod.release()
    a = get_scorer("tiny-test-vit", device="cpu")
    b = get_scorer("tiny-test-rn", device="cpu")  # evicts the ViT
    assert all("tiny-test-vit" not in d for d in scorer_mod.loaded())
    assert get_scorer("tiny-test-rn", device="cpu") is b
    assert get_scorer("tiny-test-vit", device="cpu") is not a
    assert scorer_mod.release() >= 1 and scorer_mod.loaded() == []


def test_bad_specs_give_clear_errors(tiny_configs):
    with pytest.raises(ValueError, match="unknown architecture 'NoSuchNet'"):
        get_scorer("NoSuchNet/openai", device="cpu")
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'.*valid tags"):
        resolve_clip("ViT-B-32/nope")
    with pytest.raises(ValueError) as err:  # a near miss: one suggestion, not the ~20 tags (issue 29)
        resolve_clip("ViT-B-32/openia")
    assert "unknown pretrained tag 'openia' for ViT-B-32 (did you mean 'openai'?)" in str(err.value)
    assert "laion2b" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown architecture 'ViT-B-23' \(did you mean 'ViT-B-32'\?\)"):
        resolve_clip("ViT-B-23/openai")
    with pytest.raises(ValueError, match="needs pretrained weights"):
        resolve_clip("ViT-B-32")
    with pytest.raises(ValueError, match="`spec`"):
        resolve_clip("  ")
    with pytest.raises(ValueError, match="`precision`"):
        get_scorer("tiny-test-vit", device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="`device`"):
        get_scorer("tiny-test-vit", device="tpu")


def test_offline_without_weights_names_model_and_how(tiny_configs, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_clip("ViT-B-32/openai", allow_demo=False)
    msg = str(info.value)
    assert "ViT-B-32/openai" in msg and "HF_HUB_OFFLINE" in msg and "STUDIO_CLIP_WEIGHTS" in msg


def test_local_checkpoint_spec_loads_exactly(tiny_configs, tmp_path):
    from safetensors.torch import save_file

    from tests.conftest import make_tiny_scorer

    src = make_tiny_scorer("tiny-test-vit", seed=5)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path))
    s = get_scorer(f"tiny-test-vit:{path}", device="cpu")
    assert s.source.kind == "local"
    img = torch.rand(1, 3, 32, 32)
    assert torch.allclose(s.encode_image(img), src.encode_image(img), atol=1e-6)
    # Weights of another architecture are refused with the mismatching keys named.
    bad = tmp_path / "bad.safetensors"
    save_file({"visual.nonsense": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="do not fit architecture"):
        get_scorer(f"tiny-test-vit:{bad}", device="cpu")


def test_pickled_objects_are_refused(tmp_path):
    import pickle

    from studio.hub import load_state_dict

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_state_dict(p)


def test_bad_image_input(tiny_scorer):
    with pytest.raises(ValueError, match="`images`"):
        tiny_scorer.encode_image(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="`images`"):
        tiny_scorer.encode_image(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="`texts`"):
        tiny_scorer.encode_text([])


def test_cuda_oom_becomes_clear_error():
    from studio.scorer import StudioOOMError, oom_guard

    with pytest.raises(StudioOOMError, match="ran out of memory during image encoding"):
        with oom_guard("image encoding"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_inside_encode_image_surfaces_as_studio_error(tiny_scorer, monkeypatch):
    from studio.scorer import StudioOOMError

    def boom(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tiny_scorer.model, "encode_image", boom)
    with pytest.raises(StudioOOMError):
        tiny_scorer.encode_image(torch.rand(1, 3, 32, 32))


def test_demo_stand_in_gives_way_once_the_real_weights_arrive(tiny_configs, monkeypatch, tmp_path):
    """The notice tells an offline user to download the weights; once they are in the cache, the studio uses
    them at the next request after the re-check interval, without a restart."""
    import huggingface_hub.constants
    import open_clip.pretrained
    from safetensors.torch import save_file

    import studio.scorer as scorer_mod
    from tests.conftest import fake_hub_cache, make_tiny_scorer

    real = make_tiny_scorer("tiny-test-vit", seed=3)  # the weights that will arrive later
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tiny-test-vit",
                        {"fake": open_clip.pretrained._pcfg(hf_hub="someone/tiny-clip/")})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STUDIO_CLIP_WEIGHTS", raising=False)
    stand_in = get_scorer("tiny-test-vit/fake", device="cpu")
    assert stand_in.is_demo and "HF_HUB_OFFLINE" in " ".join(stand_in.source.tried)
    monkeypatch.setattr(scorer_mod, "RECHECK_S", 0.0)
    assert scorer_mod.is_loaded("tiny-test-vit/fake", device="cpu")  # due, but nothing there: stays resident
    assert get_scorer("tiny-test-vit/fake", device="cpu") is stand_in  # still nothing there: keep the stand-in

    weights = {k: v.contiguous() for k, v in real.model.state_dict().items()}
    target = fake_hub_cache(tmp_path / "hub", "someone/tiny-clip", "open_clip_model.safetensors", b"")
    save_file(weights, str(target))  # as `huggingface-cli download` would leave it
    monkeypatch.setattr(scorer_mod, "RECHECK_S", 3600.0)
    assert get_scorer("tiny-test-vit/fake", device="cpu") is stand_in  # not yet due: no look at the disk
    assert scorer_mod.is_loaded("tiny-test-vit/fake", device="cpu")  # not due: the page shows no loading notice
    monkeypatch.setattr(scorer_mod, "RECHECK_S", 0.0)
    assert not scorer_mod.is_loaded("tiny-test-vit/fake", device="cpu")  # due, and the weights are there
    now = get_scorer("tiny-test-vit/fake", device="cpu")
    assert not now.is_demo and now.source.kind == "cache"
    img = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(now.encode_image(img), real.encode_image(img))
    assert get_scorer("tiny-test-vit/fake", device="cpu") is now  # real weights are never re-checked
    assert scorer_mod.is_loaded("tiny-test-vit/fake", device="cpu")
    from studio.scorer import release

    assert release("tiny-test-vit/fake") == 1


def test_the_api_warns_once_when_the_demo_model_stands_in_and_random_weights_say_so(tiny_configs, monkeypatch):
    """Issue 16: get_scorer("ViT-B-32/openai") offline switched to the demo model silently; `random` weights gave
    near-uniform answers with no notice."""
    import warnings

    from studio import scorer as sc
    from studio.hub import resolve_clip

    monkeypatch.setattr(sc, "_WARNED", set())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = resolve_clip("ViT-B-32/openai")
        sc._warn_once(source)
        sc._warn_once(source)
    assert source.is_demo and [str(w.message) for w in caught] == [source.notice]
    assert "demo CLIP" in source.notice
    rnd = resolve_clip("ViT-B-32/random")
    assert rnd.kind == "random" and "random weights" in rnd.notice and "ViT-B-32/TAG" in rnd.notice
    with pytest.warns(UserWarning, match="random weights"):
        sc._warn_once(rnd)


def test_failed_loads_leave_no_loader_entry_and_free_what_they_built():
    """Issue 17: every failing spec added a `_LOADING` entry forever, and half-built models stayed referenced."""
    import gc
    import weakref

    from studio import scorer as sc

    built = []
    real_build = sc._build

    def build_then_fail(source, dev, dtype):
        model = torch.nn.Linear(4, 4)
        built.append(weakref.ref(model))
        raise ValueError(f"checkpoint {source.spec!r} cannot be loaded safely")

    specs = ["RN50/random", "RN101/random", "ViT-B-16/random", "ViT-L-14/random"]
    sc._build = build_then_fail
    try:
        for spec in specs:
            with pytest.raises(ValueError, match="cannot be loaded safely"):
                sc.get_scorer(spec, device="cpu")
    finally:
        sc._build = real_build
    gc.collect()
    assert not any(k[0] in specs for k in sc._LOADING) and not any(k[0] in specs for k in sc._SCORERS)
    assert built and all(r() is None for r in built)


def test_the_model_state_says_what_will_really_run_before_anything_loads(tiny_configs, monkeypatch, tmp_path):
    """Issue 16: the page showed `ViT-B-32/openai` while the demo model would run; the toast promised a download
    offline."""
    import huggingface_hub.constants

    from studio.hub import clip_state

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert "bundled demo CLIP" in clip_state("shapes-clip") and "stand in" not in clip_state("shapes-clip")
    offline = clip_state("ViT-B-32/openai")
    assert "not cached here and downloads are off" in offline and "`shapes-clip` will stand in" in offline
    assert "random weights" in clip_state("ViT-B-32/random")
    assert "unknown architecture" in clip_state("ViT-Z-99/openai")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("studio.hub.hub_reachable", lambda timeout=3.0: True)
    assert "downloaded once on first use" in clip_state("ViT-B-32/openai")
    monkeypatch.setattr("studio.hub.hub_reachable", lambda timeout=3.0: False)
    assert "the Hugging Face Hub cannot be reached" in clip_state("ViT-B-32/openai")


def test_a_text_longer_than_clips_context_is_refused_not_cut(demo_scorer):
    """Issue 17 #11: the tokenizer cut long prompts silently; now the text is refused, saying how long it is."""
    context = demo_scorer.tokenizer(["x"]).shape[1]
    fits = " ".join(["red"] * (context - 2))  # one token per word, plus start and end
    assert demo_scorer.encode_text([fits]).shape[0] == 1
    with pytest.raises(ValueError, match=rf"is {context + 1} tokens long; CLIP reads {context} tokens"):
        demo_scorer.encode_text([fits + " red"])


def test_random_weights_are_the_same_model_in_every_process_and_leave_the_callers_rng_alone(tiny_configs):
    """`ARCH/random` was initialised from the global RNG: two processes (accelerate's, or a rerun) got different
    models, so a batch of random-weight runs was not reproducible."""
    import subprocess
    import sys

    import torch

    from studio import scorer as sc
    from studio.hub import resolve_clip

    source = resolve_clip("tiny-test-vit/random")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = sc._build(source, torch.device("cpu"), torch.float32)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream goes on as if nothing was built
    torch.manual_seed(999)
    b = sc._build(source, torch.device("cpu"), torch.float32)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    # and in another process (ViT-B-32's real architecture, whose random init used to differ run to run)
    code = ("import torch; from studio import scorer as sc; from studio.hub import resolve_clip; "
            "m = sc._build(resolve_clip('RN50/random'), torch.device('cpu'), torch.float32).model; "
            "print(float(sum(p.double().sum() for p in m.parameters())))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    local = float(sum(p.double().sum() for p in sc._build(resolve_clip("RN50/random"), torch.device("cpu"),
                                                          torch.float32).model.parameters()))
    assert there == str(local)
