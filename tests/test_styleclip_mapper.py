"""StyleCLIP's latent mapper on the demo generator "demo-shapes" with the demo CLIP (CPU, offline): training lowers
the CLIP loss of its prompt on latents it never saw, the saved file reloads to the same edit, and files for another
generator or of another shape are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.styleclip_mapper import (
    LatentMapper,
    MapperEditOutput,
    MapperTrainOutput,
    StyleCLIPMapperPipeline,
    load_mapper,
    save_mapper,
)
from studio.generators.shapes import ShapesGenerator
from studio.progress import Progress

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def pipe(demo_scorer_module):
    return StyleCLIPMapperPipeline(ShapesGenerator(), demo_scorer_module)


@pytest.fixture(scope="module")
def demo_scorer_module():
    from studio.scorer import get_scorer

    return get_scorer("shapes-clip", device="cpu")


@pytest.fixture(scope="module")
def trained(pipe):
    return pipe.train_mapper(PROMPT, num_steps=100, batch_size=4, seed=0, preview_every=25)


def clip_loss(pipe, w: torch.Tensor, prompt: str) -> float:
    """Mean 1 - cos(CLIP image, CLIP text) of the latents' images, computed here from the scorer."""
    with torch.no_grad():
        x = ((pipe.generator.synthesize(w) + 1) / 2).clamp(0, 1)
        return float((1 - pipe.scorer.encode_image(x) @ pipe.scorer.encode_text([prompt]).t()).mean())


def held_out(pipe, n: int = 16, seed: int = 12345) -> torch.Tensor:
    """Latents from a stream the training never drew from (another seed), truncated as the training's."""
    return torch.cat([pipe.random_latent(seed=seed + i, truncation=0.7) for i in range(n)])


def test_training_lowers_the_clip_loss_of_its_prompt_on_held_out_latents(pipe, trained):
    assert isinstance(trained, MapperTrainOutput) and trained.steps_run == 100 and not trained.stopped
    w = held_out(pipe)
    before = clip_loss(pipe, w, PROMPT)
    with torch.no_grad():
        after = clip_loss(pipe, trained.mapper.edit(w), PROMPT)
    assert after < before - 0.01, (before, after)  # 0.61 -> 0.59 with the demo CLIP (seeded, CPU)
    # the result's own held-out scores say the same, and the edit stays near its start (L2 term)
    sc = trained.scores
    assert sc["eval_clip_loss"] < sc["eval_clip_loss_before"] and sc["clip_score"] > sc["clip_score_before"]
    assert len(trained.losses) == len(trained.clip_losses) == len(trained.l2_distances) == 100
    assert trained.mapper.prompt == PROMPT and trained.generator_hash == pipe.generator.identity()
    assert trained.settings["prompt"] == PROMPT and trained.settings["num_steps"] == 100
    # demo-shapes has 6 W+ entries: coarse (0-3) and medium (4-5) mappers, no fine one
    assert trained.mapper.groups == ("coarse", "medium")
    assert trained.image.size == (4 * 64, 2 * 64) and len(trained.frames) == 5  # start + every 25 steps


def test_a_mapper_for_another_prompt_does_not_do_this_prompts_edit(pipe, trained):
    # the edit follows the prompt: a mapper trained for "a blue star" moves the held-out latents less toward red
    blue = pipe.train_mapper("a blue star", num_steps=100, batch_size=4, seed=0)
    w = held_out(pipe)
    with torch.no_grad():
        red_loss = clip_loss(pipe, trained.mapper.edit(w), PROMPT)
        blue_loss = clip_loss(pipe, blue.mapper.edit(w), PROMPT)
    assert red_loss < blue_loss


def test_saved_mapper_reloads_and_gives_the_same_edit(pipe, trained, tmp_path):
    paths = trained.save(tmp_path)
    assert set(paths) >= {"png", "video", "mapper"} and paths["mapper"].name == "styleclip-mapper.safetensors"
    from safetensors import safe_open

    with safe_open(str(paths["mapper"]), framework="pt") as f:
        meta = f.metadata()
    assert meta["prompt"] == PROMPT and meta["generator_hash"] == pipe.generator.identity()
    assert json.loads(meta["settings"])["num_steps"] == 100
    loaded = load_mapper(paths["mapper"], pipe.generator)
    assert loaded.prompt == PROMPT and loaded.groups == trained.mapper.groups
    a = pipe.apply_mapper(None, trained, seed=7)
    b = pipe.apply_mapper(None, str(paths["mapper"]), seed=7)
    assert isinstance(b, MapperEditOutput) and b.prompt == PROMPT
    torch.testing.assert_close(a.latent, b.latent, rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    # scored for the mapper's prompt: the edit's CLIPScore, computed here
    with torch.no_grad():
        emb = pipe.scorer.encode_image(b.image_tensor) @ pipe.scorer.encode_text([PROMPT]).t()
    assert b.scores["clip_score"] == pytest.approx(100 * max(float(emb), 0), abs=1e-3)


def test_apply_is_one_forward_pass_with_a_strength_control(pipe, trained):
    calls = []
    hook = trained.mapper.register_forward_hook(lambda *a: calls.append(1))
    try:
        steps = []
        out = pipe.apply_mapper(None, trained, seed=3, strength=0.5,
                                callback=lambda step, total, preview: steps.append((step, total, preview.size)))
    finally:
        hook.remove()
    assert calls == [1] and steps == [(1, 1, (64, 64))] and out.steps_run == 1
    full = pipe.apply_mapper(None, trained, seed=3, strength=1.0)
    none = pipe.apply_mapper(None, trained, seed=3, strength=0.0)
    torch.testing.assert_close(none.latent, none.start_latent, rtol=0, atol=0)
    torch.testing.assert_close(out.latent - out.start_latent, 0.5 * (full.latent - full.start_latent))
    # W+ latents in any accepted shape; the pipeline's loaded mapper is the default
    pipe.load_mapper(trained)
    w = pipe.random_latent(seed=3)
    torch.testing.assert_close(pipe.apply_mapper(w[0]).latent, full.latent)
    # a mapper edit starts the next edit from its edited latent (as a latent optimisation's result does)
    again = pipe.apply_mapper(full, strength=0.0)
    torch.testing.assert_close(again.start_latent, full.latent, rtol=0, atol=0)
    # an image is inverted first (the "invert" stage), then mapped
    seen = []
    photo = pipe.to_unit(pipe.render(w))[0]
    edit = pipe.apply_mapper(photo, num_invert_steps=2, callback=lambda s, t, p: seen.append((s, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)] and edit.inversion is not None and edit.inversion.steps_run == 2


def test_stop_keeps_the_mapper_trained_so_far(pipe):
    run = pipe.iter_train_mapper(PROMPT, num_steps=50, batch_size=2, seed=1)
    items = [next(run)]
    while len(items) < 5:
        items.append(run.send(None))
    out = run.send("stop")
    assert all(isinstance(p, Progress) for p in items) and out.done and out.stopped and out.steps_run == 5
    again = pipe.train_mapper(PROMPT, num_steps=5, batch_size=2, seed=1)  # the same five steps, to the end
    for (k, v), (k2, v2) in zip(out.mapper.state_dict().items(), again.mapper.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    fresh = LatentMapper(6, 16, ("coarse", "medium")).reset_parameters(1)
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in out.mapper.state_dict().items())


def test_files_for_another_generator_or_shape_are_refused(pipe, trained, tmp_path):
    path = save_mapper(trained.mapper, tmp_path / "m.safetensors")
    other = StyleCLIPMapperPipeline(ShapesGenerator(seed=1), pipe.scorer)  # same shape, other weights
    with pytest.raises(ValueError, match="was trained for another generator"):
        other.apply_mapper(None, str(path))
    with pytest.raises(ValueError, match="was trained for another generator"):
        other.apply_mapper(None, trained.mapper)
    with pytest.raises(ValueError, match=r"maps W\+ of 6 x 16; this generator has 6 x 32"):
        load_mapper(path, ShapesGenerator(style_dim=32))
    # keys and shapes are checked from the file's header against what its metadata describes
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in trained.mapper.state_dict().items()}
    meta = trained.mapper.metadata()
    save_file({**state, "course_mapping.mapping.1.weight": torch.zeros(16, 8)}, str(tmp_path / "shape.safetensors"),
              metadata=meta)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): course_mapping.mapping.1.weight"):
        load_mapper(tmp_path / "shape.safetensors")
    save_file(state, str(tmp_path / "groups.safetensors"), metadata={**meta, "groups": "coarse"})
    with pytest.raises(ValueError, match=r"unexpected keys \(8\): medium_mapping"):
        load_mapper(tmp_path / "groups.safetensors")
    save_file(state, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="is not a StyleCLIP mapper written by this studio"):
        load_mapper(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="is not a safetensors file"):
        load_mapper(tmp_path / "junk.safetensors")


def test_bad_inputs(pipe, trained):
    with pytest.raises(ValueError, match="`prompt`"):
        pipe.train_mapper("  ")
    with pytest.raises(ValueError, match=r"`num_steps` must be an integer in \[1, 200000\], got 0"):
        pipe.train_mapper(PROMPT, num_steps=0)
    with pytest.raises(ValueError, match="leave no mapper to train"):
        pipe.train_mapper(PROMPT, coarse=False, medium=False, num_steps=1)  # demo-shapes has no fine entries
    with pytest.raises(ValueError, match=r"`strength` must be a number in \[0, 2\]"):
        pipe.apply_mapper(None, trained, strength=3)
    with pytest.raises(ValueError, match="`mapper` must be a LatentMapper"):
        pipe.apply_mapper(None, 42)
    bare = StyleCLIPMapperPipeline(pipe.generator, pipe.scorer)
    with pytest.raises(ValueError, match="`mapper` is missing"):
        bare.apply_mapper(None)
