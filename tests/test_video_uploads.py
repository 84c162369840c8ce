"""A "video" upload must never make ffmpeg open another file (issue 22, item 2).

ffmpeg picks its demuxer from a file's content, not its name: a 400-byte MPEG-DASH manifest named `.mp4` whose
BaseURL is a video on the server made Video moments send back that video's thumbnail and clips. HLS playlists and
ffconcat lists do the same where ffmpeg's own checks let them. Now the content is sniffed before ffmpeg runs (only
MP4/QuickTime, Matroska/WebM and AVI), and every ffmpeg call forces that demuxer, whitelists only those demuxers and
the `file` protocol, and turns QuickTime's external data references off. The attack files are written here.
"""

from __future__ import annotations

import io
import subprocess

import pytest
from PIL import Image

import pipelines.lens_video as lv
from studio.demo.scenes import Appearance, write_shapes_video


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A video on the server that no visitor may see: a red circle for its whole length."""
    path = tmp_path_factory.mktemp("server") / "secret.mp4"
    write_shapes_video(path, duration_s=2.0, fps=5, size=(64, 64), appearances=[Appearance("red", "circle", 0.0, 2.0)])
    return path


def dash(target: str) -> bytes:
    return (f'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            f'mediaPresentationDuration="PT2S" minBufferTime="PT1S" '
            f'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet mimeType="video/mp4">'
            f'<Representation id="1" bandwidth="1000" width="64" height="64"><BaseURL>{target}</BaseURL>'
            f'</Representation></AdaptationSet></Period></MPD>').encode()


def manifests(secret, folder) -> dict[str, bytes]:
    rel = "../" * 8 + str(secret).lstrip("/")  # from the upload folder up to / and down again
    return {
        "dash-absolute": dash(str(secret)),
        "dash-relative": dash(rel),
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2,\n{secret}\n#EXT-X-ENDLIST\n".encode(),
        "ffconcat": f"ffconcat version 1.0\nfile {secret}\n".encode(),
    }


def plain_ffmpeg_frame(path) -> bytes:
    """What ffmpeg returns for `path` with no forced format (how every call ran before)."""
    cmd = [lv._ffmpeg(), "-v", "error", "-nostdin", "-i", str(path), "-frames:v", "1", "-f", "image2pipe",
           "-vcodec", "png", "-"]
    return subprocess.run(cmd, capture_output=True, timeout=60).stdout


def test_the_dash_attack_file_works_on_plain_ffmpeg(secret, tmp_path):
    """The control: the attack file is real. Plain ffmpeg opens the manifest and returns the secret's frame."""
    upload = tmp_path / "upload.mp4"
    upload.write_bytes(dash(str(secret)))
    frame = plain_ffmpeg_frame(upload)
    assert frame, "this ffmpeg no longer follows DASH manifests: the attack needs updating"
    r, g, b = Image.open(io.BytesIO(frame)).convert("RGB").resize((1, 1), Image.BOX).getpixel((0, 0))
    assert r > g + 10 and r > b + 10  # the secret's red circle


@pytest.mark.parametrize("kind", ["dash-absolute", "dash-relative", "hls", "ffconcat"])
def test_manifests_named_mp4_are_refused_before_ffmpeg_runs(secret, tmp_path, monkeypatch, kind):
    upload = tmp_path / "uploads" / "deep" / "video.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(manifests(secret, upload.parent)[kind])

    def tripwire(*args, **kwargs):
        raise AssertionError("ffmpeg was started on the upload")

    monkeypatch.setattr(subprocess, "Popen", tripwire)
    monkeypatch.setattr(subprocess, "run", tripwire)
    with pytest.raises(ValueError, match=r"`video` 'video.mp4' is not a video file"):
        lv.check_video(str(upload))
    for call in (lambda: lv.grab_frame(upload, 0.0), lambda: lv.cut_clip(upload, 0.0, 1.0, tmp_path / "c.mp4"),
                 lambda: lv.open_video(upload, 1.0, 64, 60.0)):
        with pytest.raises(ValueError, match="not a video container"):
            call()


def test_ffmpeg_is_held_to_the_sniffed_demuxer_even_if_the_sniff_were_fooled(secret, tmp_path, monkeypatch):
    """Defence in depth: were a manifest taken for an MP4, the forced demuxer and the whitelists still keep ffmpeg
    from opening what it names; the read fails instead of returning the secret's pixels."""
    upload = tmp_path / "upload.mp4"
    upload.write_bytes(dash(str(secret)))
    monkeypatch.setattr(lv, "sniff_container", lambda head: "mov")
    with pytest.raises(RuntimeError, match="could not read the frame"):
        lv.grab_frame(upload, 0.0)
    with pytest.raises(RuntimeError, match="could not cut a clip"):
        lv.cut_clip(upload, 0.0, 1.0, tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="could not be decoded"):
        lv.open_video(upload, 1.0, 64, 60.0)


def test_the_moments_task_refuses_the_manifest_by_name(secret, tmp_path, demo_scorer):
    upload = tmp_path / "holiday.mp4"
    upload.write_bytes(dash(str(secret)))
    pipe = lv.LensVideoPipeline(demo_scorer, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="'holiday.mp4' is not a video file"):
        pipe.search(str(upload), "a red circle")


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mjpeg"),
                                          (".mkv", "libx264"), (".mov", "libx264")])
def test_real_videos_of_every_accepted_container_still_read(tmp_path, suffix, codec):
    path = tmp_path / f"v{suffix}"
    cmd = [lv._ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:size=32x32:rate=5:duration=1",
           "-c:v", codec, *(["-pix_fmt", "yuv420p"] if codec != "mjpeg" else []), str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert lv.check_video(str(path)) == path
    frames, meta, expected = lv.open_video(path, 5.0, 32, 60.0)
    got = list(frames)
    assert len(got) >= expected - 1 and got[0][..., 2].mean() > 150  # blue
    assert lv.grab_frame(path, 0.5).getpixel((16, 16))[2] > 150
    assert lv.cut_clip(path, 0.0, 0.5, tmp_path / f"clip{suffix}.mp4").stat().st_size > 0
