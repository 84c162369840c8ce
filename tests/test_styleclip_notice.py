"""Issue 16: a global-direction edit whose CLIPScore for the target went down said nothing."""

from pipelines.styleclip import StyleCLIPPipeline
from studio.generators.shapes import ShapesGenerator


def test_a_global_edit_that_lowers_the_target_score_says_so(demo_scorer, tmp_path):
    pipe = StyleCLIPPipeline(ShapesGenerator(), demo_scorer, cache_dir=tmp_path)
    outs = [pipe.global_direction(None, "a circle", "a red circle", alpha=alpha, beta=0.0, num_samples=2, seed=2)
            for alpha in (0.3, -0.3, 4.0)]
    went_down = [o.scores["clip_score"] < o.scores["clip_score_before"] for o in outs]
    assert any(went_down) and not all(went_down)
    for out, down in zip(outs, went_down):
        said = "lowered the CLIPScore for “a red circle”" in (out.notice or "")
        assert said == down, (out.scores, out.notice)
        if down:
            assert f"({out.scores['clip_score_before']:.1f} → {out.scores['clip_score']:.1f})" in out.notice
