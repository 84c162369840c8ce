"""Video moment search (CLIP Lens): the moments of a video that match a text or an example image.

Follows CLIFS (Johan Modin, github.com/johanmodin/clifs, "Contrastive Language-Image Forensic Search"): frames are
sampled at `fps` (CLIFS: one a second), each is encoded whole and as overlapping patches (CLIFS: 360-px patches at
50 % overlap plus the full frame) so that small objects are found, a frame scores the best of its crops, and a
query returns the best-scoring frames. Here adjacent matching frames are merged into moments (start, end, peak),
each with a thumbnail, its score and a short clip cut with the ffmpeg binary that imageio-ffmpeg brings.

* Decoding is a stream (imageio's ffmpeg reader, ffmpeg's own `fps` filter doing the sampling): one frame is in
  memory at a time. The duration is read from the file's header and checked against `max_duration_s` (default
  2 h) before any frame is decoded; a file ffmpeg cannot read is a `ValueError` naming it and ffmpeg's reason.
* A frame "matches" when its score is at least `moment_level` of the way from the median frame's score to the
  best frame's (a relative cut: CLIP similarities are not comparable across models, and most frames of a video
  are not the moment asked for); runs of matching frames are moments, ranked by their peak score. Moments whose
  peak is below `threshold` (cosine × 100) are hidden, and the result's notice says how many.
* Frame embeddings are cached by the video's content hash (and the CLIP and sampling settings) under
  `$STUDIO_CACHE/lens-video` (else ~/.cache/studio/lens-video), at most `MAX_CACHE_ENTRIES` videos and
  `MAX_CACHE_BYTES` in all, oldest dropped first; the next query on the same video decodes nothing.

On the run protocol: `iter_search(video, query, **settings)` yields a `Progress` per sampled frame while indexing
(frames done / total, the ETA in `metrics["eta_s"]`, the frame as a preview every `preview_every` frames) and ends
with `LensMoments`; a stop searches the frames indexed so far (and caches nothing). A cached video yields one step.
The task is registered as `lens-video`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from pipelines.registry import register
from studio.images import load_image
from studio.media import VIDEO_SUFFIXES
from studio.progress import Progress, Result
from studio.prompts import TEMPLATE_SETS
from studio.runner import drain
from studio.scorer import CLIPScorer, get_scorer, oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve, run_settings

MAX_FRAMES = 20_000  # sampled frames per video (2 h at 1 fps is 7,200): the embeddings of each are kept
MAX_VIDEO_BYTES = 8 * 1024**3
MAX_PATCHES = 64  # patches per frame (a 720-px 16:9 frame at the defaults has 3)
MAX_CACHE_ENTRIES = 32
MAX_CACHE_BYTES = 2 * 1024**3
THUMB_SIDE = 320
FFMPEG_TIMEOUT_S = 120  # one ffmpeg call at most (a thumbnail, a clip); a timeout is `FFmpegTimeout`, named
MAX_CLIP_S = 30.0  # one moment's clip at most (around its peak), whatever its length and padding
MAX_CLIPS_S = 120.0  # the clips of one run in all, in seconds of video: later moments get no clip
MEDIA_BUDGET_S = 60.0  # wall time of one run's thumbnails and clips in all (a video costly to decode: 8192 px)
AFTER_STOP_S = 10.0  # after a stop, the thumbnails of the moments found so far get at most this long


def default_cache_dir() -> Path:
    return Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "studio")) / "lens-video"


@dataclass
class LensVideoConfig:
    """Settings of video moment search: defaults (with where they come from) and limits."""

    fps: float = param(1.0, 0.1, 5.0, step=0.1, label="Frames per second sampled",
                       help="frames sampled per second of video (CLIFS: 1); at most "
                            f"{MAX_FRAMES} frames per video")
    patches: bool = param(True, label="Search patches too",
                          help="encode overlapping patches of each frame besides the whole frame, so small objects "
                               "are found (CLIFS); off: whole frames only, several times faster")
    patch_size: int = param(360, 32, 2048, label="Patch size (px)",
                            help="side of the square patches, in pixels of the frame after `max_side` (CLIFS: 360)")
    patch_overlap: float = param(0.5, 0.0, 0.9, step=0.05, label="Patch overlap",
                                 help="overlap of neighbouring patches (CLIFS: 50 %)")
    max_side: int = param(720, 64, 1920, control=False, label="Frame size (longest side)",
                          help="frames are decoded at most this long on their longer side (720: a 16:9 frame gives "
                               "3 patches of 360 px; full HD would give 45)")
    top_k: int = param(5, 1, 50, label="Moments", help="moments returned, best first")
    threshold: float = param(20.0, 0.0, 100.0, step=0.5, label="Score threshold",
                             help="moments whose best frame scores below this (cosine × 100) are hidden, and "
                                  "counted in the notice (20: about where real CLIPs' matches start; the demo "
                                  "CLIP's matches score 50-70)")
    moment_level: float = param(0.5, 0.0, 1.0, step=0.05, label="Moment level",
                                help="a frame joins a moment when its score is at least this fraction of the way "
                                     "from the median frame's score to the best frame's (0.5: halfway)")
    merge_gap_s: float = param(0.5, 0.0, 60.0, step=0.5, control=False, label="Merge tolerance (s)",
                               help="two moments are one when the gap between them is shorter than the sampling "
                                    "interval plus this: a frame that dips below the moment level (a blur, a turn) "
                                    "does not split one appearance in two (at 1 fps, 0.5 s merges across one "
                                    "missing frame, not two)")
    clip_padding_s: float = param(1.0, 0.0, 30.0, step=0.5, label="Clip padding (s)",
                                  help="seconds of video kept before and after each moment in its clip")
    max_duration_s: float = param(7200.0, 1.0, 86400.0, control=False, label="Longest video (s)",
                                  help="longer videos are refused before decoding (2 h, the issue's cap)")
    templates: str = param("auto", choices=("auto", *TEMPLATE_SETS),
                           label="Prompt templates",
                           help="prompt ensemble of a text query: 'auto' is 'shapes' for the demo CLIP, else "
                                "'curated' (as in zero-shot labels)")
    use_cache: bool = param(True, control=False, label="Use the embedding cache",
                            help="reuse (and store) the frame embeddings of a video by its content hash")
    batch_frames: int = param(8, 1, 256, control=False, help="frames encoded per batch (their crops together)")
    preview_every: int = param(10, 1, 10_000, control=False, help="a frame preview every this many frames")
    seed: int = param(0, 0, SEED_MAX, control=False, help="unused: the search is deterministic")


@dataclass
class Moment:
    """One matching stretch of the video: `start_s`..`end_s` (the sampled frames' times, the end one interval on),
    its best frame at `peak_s` with `score` (cosine × 100), and that frame as `thumbnail`."""

    start_s: float
    end_s: float
    peak_s: float
    score: float
    frames: int
    thumbnail: Image.Image | None = None
    clip: str | None = None  # the moment's clip, cut during the run (None: stopped, or past the clip budget)

    def label(self) -> str:
        return f"{_clock(self.start_s)}–{_clock(self.end_s)} · {self.score:.1f}"


def _clock(t: float) -> str:
    m, s = divmod(t, 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


@dataclass
class LensMoments(Result):
    """Moments of `video` matching `query`, best first (`images`: their thumbnails). `times_s` and
    `frame_scores` are every sampled frame's time and score; `hidden`: moments below the threshold; `cached`:
    the embeddings came from the cache. `save()` adds `lens-video.json` and a copy of each moment's clip
    `lens-video-<i>.mp4` (`clip_padding_s` around it, at most `MAX_CLIP_S`, cut with ffmpeg during the run, at
    the analysis size `max_side`); save runs no ffmpeg."""

    task = "lens-video"
    video: str = ""
    query: str = ""
    moments: list[Moment] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    frame_scores: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    hidden: int = 0
    cached: bool = False
    clip_padding_s: float = 1.0

    def image_metadata(self, i: int) -> dict[str, Any]:
        m = self.moments[i]
        return {**self.metadata(), "rank": i + 1, "start_s": m.start_s, "end_s": m.end_s, "score": round(m.score, 4)}

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        import shutil

        from pipelines.lens import _folder, _write_json

        out = _folder(folder, self.task)
        paths = super().save(out, video, fps)
        for i, m in enumerate(self.moments):
            if m.clip and Path(m.clip).is_file():
                target = out / f"{self.task}-{i}.mp4"
                if Path(m.clip).resolve() != target.resolve():
                    shutil.copyfile(m.clip, target)
                paths[f"clip{i}"] = target
        paths["json"] = _write_json(out / f"{self.task}.json", {
            "video": Path(self.video).name, "query": self.query, "duration_s": self.duration_s, "hidden": self.hidden,
            "moments": [{"start_s": m.start_s, "end_s": m.end_s, "peak_s": m.peak_s, "score": m.score,
                         "frames": m.frames} for m in self.moments],
            "frames": {"times_s": self.times_s, "scores": self.frame_scores}})
        return paths


# ------------------------------------------------------------------------------------------------------- ffmpeg
def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class FFmpegTimeout(RuntimeError):
    """ffmpeg took longer than it was given on a video (one that is costly to decode): an expected outcome with a
    message for the page, not a bug."""

    user_facing = True


def _fit(side: int) -> str:
    """An ffmpeg scale filter: at most `side` px on the longer side, aspect kept, never enlarged."""
    return f"scale=w='min(iw,{side})':h='min(ih,{side})':force_original_aspect_ratio=decrease"


def _run_ffmpeg(cmd: list[str], timeout: float, what: str, video: str | Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=max(0.1, timeout))
    except subprocess.TimeoutExpired:  # subprocess.run has killed ffmpeg
        raise FFmpegTimeout(f"`video` {Path(video).name!r}: ffmpeg took longer than {timeout:.0f} s to {what}") \
            from None


def cut_clip(video: str | Path, start_s: float, duration_s: float, path: str | Path, *, max_side: int | None = None,
             timeout: float = FFMPEG_TIMEOUT_S) -> Path:
    """`duration_s` seconds of `video` from `start_s` as an H.264 MP4 (re-encoded, so the cut is frame-exact), at
    most `max_side` px on its longer side (None: the video's size). `FFmpegTimeout` after `timeout` seconds."""
    out = Path(path)
    fit = f"{_fit(max_side)}," if max_side else ""
    cmd = [_ffmpeg(), "-v", "error", "-nostdin", "-y", "-ss", f"{start_s:.3f}", *ffmpeg_input(Path(video)),
           "-t", f"{duration_s:.3f}", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-vf",
           f"{fit}pad=ceil(iw/2)*2:ceil(ih/2)*2", str(out.resolve())]
    done = _run_ffmpeg(cmd, timeout, f"cut a clip at {start_s:.1f} s", video)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"ffmpeg could not cut a clip of {Path(video).name!r}: {_reason(done.stderr)}")
    return out


def grab_frame(video: str | Path, t: float, side: int = THUMB_SIDE, *, timeout: float = FFMPEG_TIMEOUT_S
               ) -> Image.Image:
    """The frame of `video` at `t` seconds (ffmpeg seeks; nothing before it is decoded), at most `side` long
    (scaled by ffmpeg: a full frame of a huge video never reaches Python). `FFmpegTimeout` after `timeout` s."""
    cmd = [_ffmpeg(), "-v", "error", "-nostdin", "-ss", f"{t:.3f}", *ffmpeg_input(Path(video)), "-frames:v", "1",
           "-vf", _fit(side), "-f", "image2pipe", "-vcodec", "png", "-"]
    done = _run_ffmpeg(cmd, timeout, f"read the frame at {t:.1f} s", video)
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"ffmpeg could not read the frame at {t:.2f} s of {Path(video).name!r}: "
                           f"{_reason(done.stderr)}")
    img = Image.open(io.BytesIO(done.stdout)).convert("RGB")
    img.thumbnail((side, side))
    return img


def _reason(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else str(stderr)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "ffmpeg version",
                                                                                         "built with", "configuration",
                                                                                         "lib"))]
    return (lines[-1] if lines else "no reason given")[:300]


# The containers a video upload may be, by their first bytes, and the ffmpeg demuxer that reads each. ffmpeg picks
# its demuxer from a file's content, not its name, and its DASH, HLS and concat demuxers open further files (by
# absolute path or ../) named inside a "video": a 486-byte manifest named .mp4 made the server read its own files.
# So every ffmpeg call on an upload forces the demuxer of the container found here, whitelists only these demuxers
# (nested opens included) and only the `file` protocol, and turns QuickTime's external data references off.
CONTAINERS = {"mov": "MP4/QuickTime", "matroska": "Matroska/WebM", "avi": "AVI"}
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid")


def sniff_container(head: bytes) -> str | None:
    """The ffmpeg demuxer for a file that starts with `head` (16 bytes are enough), or None if it is none of
    `CONTAINERS`: an ISO base media box (MP4, MOV, M4V), an EBML header (Matroska, WebM), or RIFF AVI."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mov"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def ffmpeg_input(path: Path) -> list[str]:
    """ffmpeg's input arguments for the checked video `path`: its demuxer forced (`check_video` found it), only
    that family of demuxers and the `file` protocol allowed, the path given as a `file:` URL (so no name is read
    as another protocol)."""
    demuxer = sniff_container(_head(path))
    if demuxer is None:  # check_video refused it already; a file changed since is refused again
        raise ValueError(f"`video` {path.name!r} is not a video container ffmpeg may read here")
    drefs = ["-enable_drefs", "0"] if demuxer == "mov" else []
    return ["-f", demuxer, "-format_whitelist", ",".join(CONTAINERS), "-protocol_whitelist", "file", *drefs,
            "-i", f"file:{path.resolve()}"]


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)


def check_video(video: Any) -> Path:
    """The path of an existing video file with a known suffix whose content is one of `CONTAINERS` (by its first
    bytes, before ffmpeg sees it), else `ValueError` naming `video`."""
    if isinstance(video, dict) and "path" in video:  # a Gradio FileData
        video = video["path"]
    video = getattr(video, "name", video) if not isinstance(video, (str, os.PathLike)) else video
    if not isinstance(video, (str, os.PathLike)) or not str(video).strip():
        raise ValueError(f"`video` must be the path of a video file, got {video!r:.80}")
    path = Path(video).expanduser()
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"`video` {path.name!r} must be one of {', '.join(VIDEO_SUFFIXES)}")
    if not path.is_file():
        raise ValueError(f"`video` {str(path)!r} is not a file")
    size = path.stat().st_size
    if size > MAX_VIDEO_BYTES:
        raise ValueError(f"`video` {path.name!r} is {size / 1024**3:.1f} GB; at most {MAX_VIDEO_BYTES // 1024**3} GB")
    if sniff_container(_head(path)) is None:
        raise ValueError(f"`video` {path.name!r} is not a video file: its content is none of "
                         f"{', '.join(CONTAINERS.values())} (playlists and manifests are not read)")
    return path


def open_video(path: Path, fps: float, max_side: int, max_duration_s: float
               ) -> tuple[Iterator[np.ndarray], dict[str, Any], int]:
    """(a stream of (H, W, 3) uint8 frames sampled `fps` times a second, at most `max_side` long, the metadata,
    frames to expect). ffmpeg's `fps` filter picks the frame nearest each sampling time i / fps. Only the header
    has been read when the duration is checked against `max_duration_s`."""
    import imageio_ffmpeg

    m = int(max_side)
    scale = f"scale='if(gt(iw,ih),min(iw,{m}),-2)':'if(gt(iw,ih),-2,min(ih,{m}))'"
    *input_params, _, url = ffmpeg_input(path)  # read_frames puts "-i url" after input_params itself
    stream = imageio_ffmpeg.read_frames(url, pix_fmt="rgb24", input_params=input_params,
                                        output_params=["-vf", f"fps={fps:g},{scale}"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the frame size for reading differs from the source": as asked
            meta = next(stream)
    except (OSError, RuntimeError, StopIteration) as err:
        stream.close()
        raise ValueError(f"`video` {path.name!r} could not be decoded: {_reason(str(err))}") from None
    duration = float(meta.get("duration") or math.inf)
    problem = None
    if not math.isfinite(duration) or duration <= 0:
        problem = f"`video` {path.name!r}: its duration could not be read from the file's header"
    elif duration > max_duration_s:
        problem = f"`video` {path.name!r} is {duration:.0f} s long; at most `max_duration_s` = {max_duration_s:.0f} s"
    expected = max(1, math.ceil(duration * fps - 1e-6)) if problem is None else 0
    if problem is None and expected > MAX_FRAMES:
        problem = (f"`video` {path.name!r} would give {expected} frames at `fps` {fps:g}; at most {MAX_FRAMES} "
                   f"(lower `fps`)")
    if problem is not None:
        stream.close()  # ends ffmpeg
        raise ValueError(problem)
    w, h = meta["size"]

    def frames() -> Iterator[np.ndarray]:
        try:
            for raw in stream:
                yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        except (OSError, RuntimeError) as err:
            raise ValueError(f"`video` {path.name!r} could not be decoded: {_reason(str(err))}") from None
        finally:
            stream.close()

    return frames(), {**meta, "duration": duration, "size": (w, h)}, expected


def patch_boxes(w: int, h: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Square patches of `size` px over a w×h frame at `overlap`, the last row and column flush with the edge."""
    if size >= min(w, h):
        return []
    step = max(1, int(round(size * (1 - overlap))))

    def starts(n: int) -> list[int]:
        s = list(range(0, n - size + 1, step))
        return s if s[-1] == n - size else s + [n - size]

    return [(x, y, x + size, y + size) for y in starts(h) for x in starts(w)]


# --------------------------------------------------------------------------------------------------------- cache
class EmbeddingCache:
    """Frame embeddings on disk: `<key>.npy` (float16, (frames, crops, D), read with allow_pickle=False) and
    `<key>.json` (times, duration); bounded by entries and bytes, the least recently used dropped first."""

    def __init__(self, folder: str | Path, max_entries: int = MAX_CACHE_ENTRIES, max_bytes: int = MAX_CACHE_BYTES):
        self.folder = Path(folder)
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        arr, meta = self.folder / f"{key}.npy", self.folder / f"{key}.json"
        if not (arr.is_file() and meta.is_file()):
            return None
        try:
            emb = np.load(arr, allow_pickle=False)
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if emb.ndim != 3 or emb.shape[0] != len(info.get("times_s", [])):
            return None
        os.utime(meta)  # recently used
        return emb, info

    def put(self, key: str, emb: np.ndarray, info: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.npy"
        np.save(tmp, emb.astype(np.float16), allow_pickle=False)
        os.replace(tmp, self.folder / f"{key}.npy")
        (self.folder / f"{key}.json").write_text(json.dumps(info), encoding="utf-8")
        self._trim()

    def _trim(self) -> None:
        metas = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for i, meta in enumerate(metas):
            arr = meta.with_suffix(".npy")
            total += (arr.stat().st_size if arr.is_file() else 0) + meta.stat().st_size
            if i >= self.max_entries or total > self.max_bytes:
                arr.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> content hash: a re-query reads nothing


def file_hash(path: Path) -> str:
    """The SHA-256 of the file's bytes, remembered for the same path, size and modification time."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo in _HASHES:
        return _HASHES[memo]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if len(_HASHES) > 1024:
        _HASHES.clear()
    _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


# -------------------------------------------------------------------------------------------------- the pipeline
class LensVideoPipeline:
    """CLIFS-style moment search on the shared scorer.

    >>> vs = LensVideoPipeline.from_pretrained("shapes-clip")  # doctest: +SKIP
    >>> vs.search("clip.mp4", "a red circle").moments[0].start_s  # doctest: +SKIP
    """

    def __init__(self, scorer: CLIPScorer, config: LensVideoConfig | None = None,
                 cache_dir: str | Path | None = None):
        self.scorer = scorer
        self.config = config or LensVideoConfig()
        self.cache = EmbeddingCache(cache_dir if cache_dir is not None else default_cache_dir())
        self.crops_encoded = 0  # images through the encoder (tests count work with it)

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: str | None = None, **kwargs: Any) -> "LensVideoPipeline":
        return cls(get_scorer(spec, device=device), **kwargs)

    def search(self, video: Any, query: str | None = None, *, query_image: Any = None,
               callback: Callable | None = None, **settings: Any) -> LensMoments:
        """Run `iter_search` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_search(video, query, query_image=query_image, **settings), callback)

    def iter_search(self, video: Any, query: str | None = None, *, query_image: Any = None, **settings: Any
                    ) -> Iterator[Progress | LensMoments]:
        """The top-k moments of `video` for a text `query` (or an example `query_image`)."""
        t0 = time.perf_counter()
        # 1. check inputs (the duration is checked before any decoding, in open_video)
        cfg = resolve(self.config, settings)
        path = check_video(video)
        if query is None and query_image is None:
            raise ValueError("`query` is missing: give a text (or `query_image`, an example image)")
        text = check_text(query, "query") if query is not None else ""
        example = load_image(query_image, "query_image") if query_image is not None else None
        q = self._query(text, example, cfg)
        # 2. index: the cached embeddings, or decode and encode the sampled frames
        key = self._key(path, cfg) if cfg.use_cache else ""
        hit = self.cache.get(key) if cfg.use_cache else None
        stopped, cached = False, hit is not None
        if hit is not None:
            emb, info = torch.from_numpy(hit[0].astype(np.float32)), hit[1]
            times, duration = info["times_s"], info["duration_s"]
        else:
            run = self._index(path, cfg)
            item = next(run)
            while not isinstance(item, tuple):
                sent = yield item  # the runner's "stop" goes on to the indexing loop, which ends with what it has
                stopped = stopped or sent == "stop"
                item = run.send(sent)
            emb, times, duration = item
            if cfg.use_cache and not stopped and len(times):
                self.cache.put(key, emb.numpy(), {"times_s": times, "duration_s": duration, "spec": self.scorer.spec})
        t_index = time.perf_counter() - t0
        # 3. score frames (best crop), merge matching runs into moments
        scores = (100.0 * (emb @ q)).amax(dim=1).tolist() if len(times) else []
        moments, hidden = find_moments(times, scores, duration, 1.0 / cfg.fps, cfg)
        t_search = time.perf_counter() - t0 - t_index
        # 4. thumbnails and clips: steps of the run, at the analysis size, within the run's media budget
        base = 0 if cached else len(times)
        media = self._media(path, moments, duration, cfg, base, stopped)
        item = next(media)
        while not isinstance(item, tuple):
            item = media.send((yield item))
        moments, stopped_in_media, problems = item
        stopped = stopped or stopped_in_media
        if cached and not moments:  # one step for a cached video with nothing found
            preview = grab_frame(path, 0.0, timeout=FFMPEG_TIMEOUT_S)
            stopped = (yield Progress(1, 1, preview, {"frames_done": float(len(times)), "cached": 1.0})) == "stop"
        notice = self.scorer.notice
        if hidden:
            problems.insert(0, f"{hidden} weaker moment{'s' if hidden != 1 else ''} hidden (best frame below the "
                               f"score threshold {cfg.threshold:g}).")
        for extra in problems:
            notice = f"{notice} {extra}" if notice else extra
        inputs = {"query": text} if text else {}
        yield LensMoments(images=[m.thumbnail for m in moments], video=str(path), query=text or "example image",
                          moments=moments, times_s=times, frame_scores=scores, duration_s=duration, hidden=hidden,
                          cached=cached, clip_padding_s=cfg.clip_padding_s,
                          scores={"top_score": moments[0].score} if moments else {}, seed=cfg.seed,
                          timings={"index_s": t_index, "search_s": t_search, "total_s": time.perf_counter() - t0},
                          settings=run_settings(cfg, **inputs), stopped=stopped, notice=notice,
                          steps_run=max(1, base + len(moments)) if cached else len(times))

    # ------------------------------------------------------------------------------------------------ helpers
    def _media(self, path: Path, moments: list[Moment], duration: float, cfg: LensVideoConfig, base: int,
               stopped: bool) -> Iterator[Any]:
        """Give each moment its thumbnail and clip, a `Progress` step each (numbered on from `base`), then yield
        (the moments that have a thumbnail, whether a "stop" came in, notices). Bounded: each clip at most
        `MAX_CLIP_S` around its peak and `MAX_CLIPS_S` in all, cut at `cfg.max_side`; every ffmpeg call within what
        is left of `MEDIA_BUDGET_S` (a timeout ends the media with a notice). After a stop (before or during
        this) no clip is cut, and the thumbnails left get at most `AFTER_STOP_S`."""
        start = time.monotonic()
        deadline = start + (AFTER_STOP_S if stopped else MEDIA_BUDGET_S)
        clip_left = MAX_CLIPS_S
        folder = None
        kept: list[Moment] = []
        problems: list[str] = []
        unclipped = 0
        def left() -> float:  # seconds the next ffmpeg call may take
            if time.monotonic() >= deadline:
                raise FFmpegTimeout(f"`video` {path.name!r}: the time for thumbnails and clips was spent")
            return min(FFMPEG_TIMEOUT_S, deadline - time.monotonic())

        for i, m in enumerate(moments):
            try:
                m.thumbnail = grab_frame(path, m.peak_s, timeout=left())
                if not stopped and clip_left > 0:
                    lo = max(0.0, m.start_s - cfg.clip_padding_s, m.peak_s - MAX_CLIP_S / 2)
                    hi = min(duration or m.end_s + cfg.clip_padding_s, m.end_s + cfg.clip_padding_s, lo + MAX_CLIP_S)
                    length = min(max(hi - lo, 0.1), clip_left)
                    if folder is None:
                        from studio.outputs import new_folder

                        folder = new_folder("lens-video-clips")
                    m.clip = str(cut_clip(path, lo, length, folder / f"lens-video-{i}.mp4", max_side=cfg.max_side,
                                          timeout=left()))
                    clip_left -= length
                else:
                    unclipped += 1
            except FFmpegTimeout as err:
                if m.thumbnail is not None:
                    kept.append(m)
                    unclipped += 1
                left = len(moments) - len(kept)
                problems.append(f"{err}; {left} moment{'s' if left != 1 else ''} left out (this server gives a "
                                f"run's thumbnails and clips {MEDIA_BUDGET_S:g} s).")
                break
            kept.append(m)
            if not stopped:
                if (yield Progress(base + i + 1, base + len(moments), m.thumbnail, {"clips_done": float(i + 1)},
                                   "clips")) == "stop":
                    stopped = True
                    deadline = min(deadline, time.monotonic() + AFTER_STOP_S)
        if unclipped and not stopped and clip_left <= 0:
            problems.append(f"{unclipped} moment{'s' if unclipped != 1 else ''} without a clip (at most "
                            f"{MAX_CLIPS_S:g} s of clips per run).")
        yield kept, stopped, problems

    def _query(self, text: str, example: Image.Image | None, cfg: LensVideoConfig) -> torch.Tensor:
        """(D,) unit query embedding on the CPU."""
        from pipelines.lens_detect import _strip_article

        with torch.no_grad(), oom_guard("CLIP Lens video query"):
            if example is not None:
                x = torch.from_numpy(np.asarray(example, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
                return self.scorer.encode_image(x)[0].float().cpu()
            templates = cfg.templates if cfg.templates != "auto" else ("shapes" if self.scorer.is_demo else "curated")
            name = _strip_article(text) if self.scorer.is_demo else text
            return self.scorer.encode_prompts([name], templates)[0].float().cpu()

    def _key(self, path: Path, cfg: LensVideoConfig) -> str:
        what = {"file": file_hash(path), "clip": self.scorer.spec, "weights": self.scorer.source.kind,
                "fps": cfg.fps, "patches": cfg.patches, "patch_size": cfg.patch_size, "overlap": cfg.patch_overlap,
                "max_side": cfg.max_side, "dim": self.scorer.embed_dim}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]

    def _index(self, path: Path, cfg: LensVideoConfig) -> Iterator[Any]:
        """Yield a Progress per sampled frame (a "stop" sent in ends the decoding), then (embeddings (F, C, D) on
        the CPU, frame times, duration)."""
        frames, meta, expected = open_video(path, cfg.fps, cfg.max_side, cfg.max_duration_s)
        duration = meta["duration"]
        w, h = meta["size"]
        boxes = patch_boxes(w, h, cfg.patch_size, cfg.patch_overlap) if cfg.patches else []
        if len(boxes) > MAX_PATCHES:  # refused before a frame is decoded
            frames.close()
            raise ValueError(f"`patch_size` {cfg.patch_size} at `patch_overlap` {cfg.patch_overlap:g} gives "
                             f"{len(boxes)} patches per {w}×{h} frame; at most {MAX_PATCHES} (use larger patches "
                             f"or less overlap)")
        chunks: list[torch.Tensor] = []
        times: list[float] = []
        batch: list[np.ndarray] = []
        t_start = time.perf_counter()
        stop = False
        try:
            i = 0
            while not stop and i < expected:
                frame = next(frames, None)
                if frame is None:
                    break
                batch.append(frame)
                times.append(round(i / cfg.fps, 6))
                i += 1
                if len(batch) == cfg.batch_frames or i == expected:
                    chunks.append(self._encode(batch, boxes))
                    done = len(times)
                    for j, fr in enumerate(batch):  # one step per frame of the batch just encoded
                        k = done - len(batch) + j + 1
                        rate = (time.perf_counter() - t_start) / done
                        preview = Image.fromarray(fr) if k % cfg.preview_every == 0 or k == 1 else None
                        if (yield Progress(k, expected, preview, {"frames_done": float(k),
                                                                  "eta_s": rate * (expected - k)}, "index")) == "stop":
                            stop = True
                            break
                    batch = []
            if batch and not stop:  # the stream ended before the expected count
                chunks.append(self._encode(batch, boxes))
                for j in range(len(batch)):
                    k = len(times) - len(batch) + j + 1
                    if (yield Progress(k, max(expected, len(times)), None, {"frames_done": float(k), "eta_s": 0.0},
                                       "index")) == "stop":
                        stop = True
                        break
        finally:
            frames.close()
        emb = torch.cat(chunks) if chunks else torch.empty(0, 1 + len(boxes), self.scorer.embed_dim)
        times = times[: len(emb)]
        yield emb, times, duration

    def _encode(self, frames: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
        """(B, 1 + P, D) unit embeddings (CPU) of each frame whole and of its patches, all crops in one batch."""
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
        with torch.no_grad(), oom_guard("CLIP Lens video indexing"):
            x = x.to(self.scorer.device)
            emb = self.scorer.encode_image(x)[:, None]  # whole frames: CLIP's shortest side + centre crop (CLIFS)
            parts = [x[:, :, y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]
            if parts:
                p = torch.stack(parts, 1).flatten(0, 1)  # (B·P, 3, ps, ps), frame-major
                emb = torch.cat([emb, self.scorer.encode_image(p).view(len(frames), len(parts), -1)], dim=1)
        self.crops_encoded += len(frames) * (1 + len(parts))
        return emb.float().cpu()


def find_moments(times: list[float], scores: list[float], duration: float, interval: float, cfg: LensVideoConfig
                 ) -> tuple[list[Moment], int]:
    """Runs of matching frames (see the module's docstring) as moments, best first, and how many were hidden by the
    threshold; at most `cfg.top_k` are returned."""
    if not scores:
        return [], 0
    s = np.asarray(scores)
    best, median = float(s.max()), float(np.median(s))
    level = median + cfg.moment_level * (best - median)
    match = s >= level - 1e-9
    moments: list[Moment] = []
    i = 0
    while i < len(s):
        if not match[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(s) and match[j + 1]:
            j += 1
        peak = i + int(np.argmax(s[i:j + 1]))
        moment = Moment(times[i], min(duration, times[j] + interval), times[peak], float(s[peak]), j - i + 1)
        last = moments[-1] if moments else None
        if last is not None and moment.start_s - last.end_s < interval + cfg.merge_gap_s - 1e-9:
            # one appearance with a short dip: the earlier run grows to the end of this one, keeping the better peak
            better = moment.score > last.score
            moments[-1] = Moment(last.start_s, moment.end_s, moment.peak_s if better else last.peak_s,
                                 max(last.score, moment.score), last.frames + moment.frames)
        else:
            moments.append(moment)
        i = j + 1
    moments.sort(key=lambda m: (-m.score, m.start_s))
    shown = [m for m in moments if m.score >= cfg.threshold]
    return shown[: cfg.top_k], len(moments) - len(shown)


def _load(clip: str | None = None, device: str | None = None) -> LensVideoPipeline:
    return LensVideoPipeline.from_pretrained(clip, device=device)


register(Task(name="lens-video", title="Video moment search (CLIP Lens, CLIFS)", config=LensVideoConfig,
              pipeline=LensVideoPipeline, method="iter_search", models=("clip",), load=_load,
              inputs=(Input("video", "video", help=f"a video file ({', '.join(VIDEO_SUFFIXES)})"),
                      Input("query", "text", help="what to look for, e.g. a white car"),
                      Input("query_image", "example_image", required=False, help="an example image to look for"))))
