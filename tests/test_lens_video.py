"""Video moment search (pipelines/lens_video.py) on synthetic videos written here: shapes on screen at known
seconds, searched with the demo CLIP."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pytest

from pipelines.lens_video import EmbeddingCache, LensVideoPipeline, find_moments, patch_boxes
from pipelines.registry import get_task
from studio.demo.scenes import Appearance, write_shapes_video

RED = Appearance("red", "circle", 3.0, 6.0, centre=(0.3, 0.5), radius=0.25)
BLUE = Appearance("blue", "square", 8.0, 10.0, centre=(0.7, 0.5), radius=0.25)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    return write_shapes_video(folder / "shapes.mp4", [RED, BLUE], 12.0, fps=5, size=(160, 120))


@pytest.fixture()
def pipe(demo_scorer, tmp_path):
    return LensVideoPipeline(demo_scorer, cache_dir=tmp_path / "cache")


class CountingScorer:
    """The demo scorer with its image-encoder calls counted."""

    def __init__(self, scorer):
        self._scorer, self.calls = scorer, 0

    def __getattr__(self, name):
        return getattr(self._scorer, name)

    def encode_image(self, x):
        self.calls += 1
        return self._scorer.encode_image(x)


def test_a_red_circle_is_found_where_it_is_and_the_second_query_hits_the_cache(demo_scorer, video, tmp_path):
    counting = CountingScorer(demo_scorer)
    pipe = LensVideoPipeline(counting, cache_dir=tmp_path / "cache")
    out = pipe.search(video, "a red circle", patch_size=80)
    assert not out.cached and counting.calls > 0
    best = out.moments[0]
    interval = 1.0  # fps = 1
    assert abs(best.start_s - RED.start_s) <= interval and abs(best.end_s - RED.end_s) <= interval
    assert RED.start_s - interval <= best.peak_s < RED.end_s
    assert len(out.times_s) == 12 and out.times_s[:3] == [0.0, 1.0, 2.0]
    encoded, calls = pipe.crops_encoded, counting.calls
    assert encoded == 12 * (1 + len(patch_boxes(160, 120, 80, 0.5)))  # whole frame + 6 patches each

    second = pipe.search(video, "a blue square", patch_size=80)
    assert second.cached and counting.calls == calls and pipe.crops_encoded == encoded  # nothing re-encoded
    m = second.moments[0]
    assert abs(m.start_s - BLUE.start_s) <= interval and abs(m.end_s - BLUE.end_s) <= interval

    pipe.search(video, "a red circle", patch_size=80, patches=False)  # other sampling: another cache entry
    assert counting.calls > calls and pipe.crops_encoded == encoded + 12


def test_progress_counts_frames_with_an_eta_and_previews(pipe, video):
    items = list(pipe.iter_search(video, "a red circle", patches=False, preview_every=4, batch_frames=5))
    progress, result = items[:-1], items[-1]
    frames = [p for p in progress if p.stage == "index"]
    media = [p for p in progress if p.stage == "clips"]  # then a step per moment: its thumbnail and clip
    n = len(result.moments)
    assert n >= 1 and frames + media == progress
    assert [p.step for p in progress] == list(range(1, 13 + n)) and {p.total for p in frames} == {12}
    assert {p.total for p in media} == {12 + n} and [p.preview for p in media] == [m.thumbnail for m in result.moments]
    assert all("eta_s" in p.metrics and p.metrics["frames_done"] == p.step for p in frames)
    assert [p.step for p in frames if p.preview is not None] == [1, 4, 8, 12]
    assert frames[-1].metrics["eta_s"] == 0.0
    assert result.steps_run == 12 and all(m.clip for m in result.moments)


def test_stop_while_indexing_searches_the_frames_done_and_caches_nothing(pipe, video):
    gen = pipe.iter_search(video, "a red circle", patches=False, batch_frames=1)
    for _ in range(4):
        item = next(gen)
    result = gen.send("stop")
    while not result.done:
        result = gen.send(None)
    gen.close()
    assert result.stopped and len(result.times_s) == 4 and result.steps_run == 4
    again = pipe.search(video, "a red circle", patches=False, batch_frames=1)
    assert not again.cached and len(again.times_s) == 12
    assert item.step == 4


def test_an_example_image_finds_its_moment(pipe, video):
    from studio.demo.scenes import make_scene

    crop = make_scene(3, size=96, num_objects=(1, 1), must_have=("red", "circle"), radius=(0.3, 0.3)).image
    out = pipe.search(video, query_image=crop, patches=False)
    assert abs(out.moments[0].start_s - RED.start_s) <= 1.0 and out.query == "example image"


def test_the_threshold_hides_weak_moments_and_says_so(pipe, video):
    shown = pipe.search(video, "a red circle", patches=False, threshold=0.0)
    top = shown.moments[0].score
    hidden = pipe.search(video, "a red circle", patches=False, threshold=min(100.0, top + 0.5))
    assert hidden.moments == [] and hidden.hidden >= 1 and "hidden" in hidden.notice


def test_save_writes_thumbnails_clips_and_json(pipe, video, tmp_path):
    out = pipe.search(video, "a red circle", patches=False, top_k=2, clip_padding_s=0.5)
    paths = out.save(tmp_path / "saved")
    data = json.loads(paths["json"].read_text())
    assert data["query"] == "a red circle" and len(data["moments"]) == len(out.moments) >= 1
    assert len(data["frames"]["scores"]) == 12
    m = out.moments[0]
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(paths["clip0"]))
    assert abs(secs - (m.end_s - m.start_s + 1.0)) <= 0.3  # the moment and 0.5 s either side
    assert paths["png0"].stat().st_size > 0


def test_moments_merge_adjacent_matching_frames():
    cfg = get_task("lens-video").config(threshold=0.0, moment_level=0.5, top_k=5)
    times = [float(i) for i in range(10)]
    scores = [10, 10, 30, 31, 10, 10, 25, 10, 10, 10]
    moments, hidden = find_moments(times, scores, 10.0, 1.0, cfg)
    assert [(m.start_s, m.end_s, m.peak_s) for m in moments] == [(2.0, 4.0, 3.0), (6.0, 7.0, 6.0)]
    assert hidden == 0
    cfg.threshold = 28.0
    moments, hidden = find_moments(times, scores, 10.0, 1.0, cfg)
    assert len(moments) == 1 and hidden == 1


def test_one_appearance_with_a_dip_is_one_moment():
    # issue 29: 0:42-0:48 and 0:49-0:50 came back for one 0:40-0:50 appearance (one frame dipped below the level)
    cfg = get_task("lens-video").config(threshold=0.0, moment_level=0.5, top_k=5)
    times = [float(i) for i in range(12)]
    scores = [10, 10, 30, 31, 12, 29, 30, 10, 10, 28, 10, 10]  # frame 4 dips; frames 7-8 are a real gap
    moments, _ = find_moments(times, scores, 12.0, 1.0, cfg)
    assert [(m.start_s, m.end_s, m.peak_s, m.frames) for m in moments] == [(2.0, 7.0, 3.0, 4), (9.0, 10.0, 9.0, 1)]
    cfg.merge_gap_s = 0.0  # no tolerance: only runs the interval apart, i.e. none here
    moments, _ = find_moments(times, scores, 12.0, 1.0, cfg)
    assert [(m.start_s, m.end_s) for m in moments] == [(2.0, 4.0), (5.0, 7.0), (9.0, 10.0)]
    moments, _ = find_moments([t / 5 for t in range(12)], scores, 2.4, 0.2, get_task("lens-video").config(
        threshold=0.0, merge_gap_s=0.5))  # at 5 fps, 0.5 s bridges up to two missing frames: all one moment
    assert [(m.start_s, m.end_s, m.peak_s) for m in moments] == [(0.4, 2.0, 0.6)]


def test_the_cache_is_bounded(tmp_path):
    cache = EmbeddingCache(tmp_path, max_entries=2)
    for i in range(3):
        cache.put(f"k{i}", np.zeros((2, 1, 4), np.float32), {"times_s": [0.0, 1.0], "duration_s": 2.0})
    assert sorted(p.stem for p in tmp_path.glob("*.npy")) == ["k1", "k2"]
    assert cache.get("k0") is None and cache.get("k2")[0].shape == (2, 1, 4)


def test_bad_videos_and_settings_are_value_errors(pipe, video, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(ValueError, match=r"`video` 'broken.mp4' is not a video file: its content is none of"):
        pipe.search(bad, "a red circle")
    bad.write_bytes(b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom" + b"this is not a video" * 50)  # an MP4 start
    with pytest.raises(ValueError, match=r"`video` 'broken.mp4' could not be decoded: .*Invalid data"):
        pipe.search(bad, "a red circle")
    with pytest.raises(ValueError, match=r"is 12 s long; at most `max_duration_s` = 5 s"):
        pipe.search(video, "a red circle", max_duration_s=5)
    assert pipe.crops_encoded == 0  # refused before anything was encoded
    with pytest.raises(ValueError, match=r"`threshold` must be a number in \[0, 100\], got 150"):
        pipe.search(video, "a red circle", threshold=150)
    with pytest.raises(ValueError, match="`video` 'notes.txt' must be one of"):
        pipe.search(tmp_path / "notes.txt", "a red circle")
    with pytest.raises(ValueError, match="`video` .* is not a file"):
        pipe.search(tmp_path / "missing.mp4", "a red circle")
    with pytest.raises(ValueError, match="`query` is missing"):
        pipe.search(video)
    with pytest.raises(ValueError, match=r"`patch_size` 32 at `patch_overlap` 0.9 gives \d+ patches"):
        pipe.search(video, "a red circle", patch_size=32, patch_overlap=0.9)
    assert pipe.crops_encoded == 0


def test_the_command_line_runs_lens_video(video, tmp_path, monkeypatch, capsys):
    from studio.cli import main

    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        main(["run", "lens-video", "--videos", str(video), "--prompt", "a red circle", "--prompt", "a blue square",
              "--clip", "shapes-clip", "--no-patches", "--out", str(out), "--quiet"])
    assert done.value.code in (0, None), capsys.readouterr()
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert [ln["inputs"]["query"] for ln in lines] == ["a red circle", "a blue square"]
    assert all(ln["error"] is None and "clip0" in ln["files"] for ln in lines)
    moments = json.loads((out / lines[0]["files"]["json"]).read_text())["moments"]
    assert abs(moments[0]["start_s"] - RED.start_s) <= 1.0


# ------------------------------------------------------------------- issue 22 #3: clips and thumbnails in the run
@pytest.fixture(scope="module")
def large_video(tmp_path_factory):
    """The shapes at 640×480: clips and thumbnails must come at the analysis size, not this."""
    folder = tmp_path_factory.mktemp("large")
    return write_shapes_video(folder / "large.mp4", [RED, BLUE], 12.0, fps=5, size=(640, 480))


class FFmpegCalls:
    """Counts the ffmpeg runs of pipelines/lens_video (thumbnails and clips), optionally failing some."""

    def __init__(self, monkeypatch, timeout_on: str | None = None):
        import subprocess

        import pipelines.lens_video as lv

        self.cmds: list[list[str]] = []
        real = subprocess.run

        def run(cmd, *a, **k):
            self.cmds.append(cmd)
            if timeout_on and timeout_on in cmd:
                raise subprocess.TimeoutExpired(cmd, k.get("timeout"))
            return real(cmd, *a, **k)

        monkeypatch.setattr(lv.subprocess, "run", run)

    def clips(self) -> int:
        return sum(1 for c in self.cmds if "libx264" in c)


def test_clips_and_thumbnails_are_cut_in_the_run_at_the_analysis_size(pipe, large_video, tmp_path, monkeypatch):
    """A 1 MB 8192×8192 video's clips were re-encoded at full size after the run ended (79 s, +5.9 GB on a server
    limited to 20 s a run): now each clip is a step of the run, at `max_side`, and saving runs no ffmpeg."""
    calls = FFmpegCalls(monkeypatch)
    out = pipe.search(large_video, "a red circle", patches=False, max_side=128, threshold=0.0, top_k=3)
    assert out.moments and calls.clips() == len(out.moments)
    for m in out.moments:
        assert m.thumbnail.size == (320, 240)  # scaled by ffmpeg: no full frame reaches Python
        meta = next(imageio_ffmpeg.read_frames(m.clip))
        assert max(meta["size"]) == 128, meta["size"]  # 640×480 cut at the analysis size
    before = len(calls.cmds)
    paths = out.save(tmp_path / "saved")
    assert len(calls.cmds) == before and {f"clip{i}" for i in range(len(out.moments))} <= set(paths)


def test_a_stop_during_the_clips_cuts_no_more(pipe, video, monkeypatch):
    calls = FFmpegCalls(monkeypatch)
    gen = pipe.iter_search(video, "a red circle", patches=False, threshold=0.0, top_k=5, batch_frames=12,
                           moment_level=0.0)
    item = next(gen)
    while item.stage != "clips":
        item = gen.send(None)
    result = gen.send("stop")  # after the first moment's clip
    while not result.done:
        result = gen.send(None)
    assert result.stopped and len(result.moments) >= 2 and calls.clips() == 1
    assert result.moments[0].clip and not any(m.clip for m in result.moments[1:])
    assert all(m.thumbnail is not None for m in result.moments)


def test_the_clips_of_a_run_have_a_total_budget(pipe, video, monkeypatch):
    import pipelines.lens_video as lv

    monkeypatch.setattr(lv, "MAX_CLIPS_S", 2.0)
    calls = FFmpegCalls(monkeypatch)
    out = pipe.search(video, "a red circle", patches=False, threshold=0.0, top_k=5, clip_padding_s=1.0,
                      moment_level=0.0)
    seconds = [imageio_ffmpeg.count_frames_and_secs(m.clip)[1] for m in out.moments if m.clip]
    assert len(out.moments) >= 2 and sum(seconds) <= 2.0 + 0.3 and calls.clips() == len(seconds)
    assert "without a clip" in out.notice


def test_an_ffmpeg_timeout_is_a_named_outcome_not_a_crash(pipe, video, monkeypatch):
    from studio.ui.common import is_user_error

    calls = FFmpegCalls(monkeypatch, timeout_on="libx264")
    out = pipe.search(video, "a red circle", patches=False, threshold=0.0, top_k=5, moment_level=0.0)
    assert calls.clips() == 1 and len(out.moments) == 1 and out.moments[0].clip is None
    assert "took longer than" in out.notice and "left out" in out.notice
    import pipelines.lens_video as lv

    with pytest.raises(lv.FFmpegTimeout, match="`video` 'shapes.mp4'") as err:
        lv.cut_clip(video, 0.0, 1.0, "/nonexistent/out.mp4")
    assert is_user_error(err.value)
