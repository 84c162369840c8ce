"""StyleCLIP's session: the task pipelines on one session share it (state and relevance caches), a sample is a
registered task whose result starts an edit where it is, and the edit's learning-rate warm-up is a setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.registry import get_task
from pipelines.styleclip import StyleCLIPPipeline
from pipelines.styleclip_core import get_lr
from pipelines.styleclip_global import RelevanceConfig, StyleCLIPGlobalPipeline
from pipelines.styleclip_mapper import StyleCLIPMapperPipeline
from pipelines.styleclip_sample import StyleCLIPSamplePipeline
from studio.generators.shapes import ShapesGenerator


@pytest.fixture
def pipe(tiny_scorer, tmp_path):
    return StyleCLIPPipeline(ShapesGenerator(), tiny_scorer, cache_dir=tmp_path / "cache")


def test_pipelines_from_one_session_share_its_state_and_relevance_cache(pipe, tmp_path, tiny_scorer):
    mapper = StyleCLIPMapperPipeline.from_pipe(pipe)
    assert mapper.session is pipe.session and mapper.generator is pipe.generator
    mapper.cache_dir = tmp_path / "elsewhere"  # written through to the session: every pipeline on it sees it
    assert pipe.cache_dir == tmp_path / "elsewhere" and pipe.directions.cache_dir == tmp_path / "elsewhere"
    rel = pipe.channel_relevance(num_samples=1, batch_size=64).relevance
    for f in (tmp_path / "elsewhere").iterdir():  # only the session's memory can answer now
        f.unlink()
    cfg = RelevanceConfig(num_samples=1)
    assert StyleCLIPGlobalPipeline.from_pipe(mapper).cached_relevance(cfg) is rel
    other = StyleCLIPGlobalPipeline(pipe.generator, tiny_scorer, cache_dir=tmp_path / "elsewhere")
    assert other.cached_relevance(cfg) is None


def test_the_sample_task_gives_the_facades_sample_and_it_starts_an_edit_where_it_is(pipe):
    sample = pipe.sample(seed=4, truncation=0.5)
    task = get_task("styleclip-sample")
    again = task.run(StyleCLIPSamplePipeline.from_pipe(pipe), seed=4, truncation=0.5)
    assert np.array_equal(np.asarray(again.image), np.asarray(sample.image))
    torch.testing.assert_close(again.latent, pipe.random_latent(seed=4, truncation=0.5).cpu())
    edit = pipe.edit(sample, "a red circle", num_steps=1, seed=0)  # the seed would draw another start
    torch.testing.assert_close(edit.start_latent, sample.latent)


def test_the_edits_learning_rate_warm_up_is_a_setting(pipe):
    # StyleCLIP's ramp: no step at t = 0 (its loss repeats at step 2); without a warm-up the first step moves
    ramped = pipe.edit(None, "a red circle", num_steps=2, seed=1)
    assert ramped.losses[0] == ramped.losses[1]
    direct = pipe.edit(None, "a red circle", num_steps=2, seed=1, lr_rampup=0.0)
    assert direct.losses[0] == ramped.losses[0] and direct.losses[1] != direct.losses[0]
    assert get_lr(0.0, 0.1, rampup=0.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"`lr_rampup` must be .* got 2"):
        pipe.edit(None, "a red circle", num_steps=1, lr_rampup=2)
