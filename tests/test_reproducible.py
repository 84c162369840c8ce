"""Issue 16: the same seed gave CLIPScores 66.6 and 67.2 on two runs of one server. A text's embedding depended on
the batch it was first encoded in (a matrix product's last bits change with its shape), and the scorer's text
cache kept whichever batch met the text first; an optimisation amplifies those bits. Now a run's result depends
on its settings alone within one process (same device, same thread count)."""

import numpy as np
import torch
from conftest import make_tiny_scorer

OTHERS = ["a blue square", "a green triangle", "a yellow star", "a dog", "a cat", "a house", "a tree", "a boat",
          "a car"]


def test_a_texts_embedding_does_not_depend_on_what_else_was_asked_with_it(tiny_configs):
    alone = make_tiny_scorer().encode_text(["a red circle"])[0]
    among = make_tiny_scorer().encode_text(OTHERS[:3] + ["a red circle"] + OTHERS[3:])[3]
    assert torch.equal(alone, among)


def _draw(scorer):
    from pipelines.registry import get_task

    task = get_task("clipdraw")
    *_, result = task.iterate(task.pipeline(scorer), prompt="a red circle", num_strokes=6, num_steps=6,
                              canvas_size=48, seed=3)
    return result


def test_two_runs_of_the_same_settings_in_one_process_give_the_same_pixels(tiny_configs):
    scorer = make_tiny_scorer()
    first = _draw(scorer)
    scorer._text_cache.clear()  # as another tab might leave it: the prompt encoded among other labels
    scorer.encode_text(OTHERS[:4] + ["a red circle"] + OTHERS[4:])
    second = _draw(scorer)
    third = _draw(make_tiny_scorer())  # a scorer of its own, loaded afresh
    assert first.settings == second.settings == third.settings
    for other in (second, third):
        assert np.array_equal(np.asarray(first.image), np.asarray(other.image))
        assert first.scores == other.scores
