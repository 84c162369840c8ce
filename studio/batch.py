"""Batch runs of any registered task: items × seeds through the task's own generator, resumable, one manifest.

`plan(...)` turns prompts, images and seeds into `Item`s (input order; item i has a stable folder name);
`run_items(...)` runs them on one pipeline, writing each item's files with `Result.save` into a temporary folder
that is renamed into place only when complete, then appending the item's manifest line (flushed and fsynced), so a
rerun trusts nothing half-written. An item whose manifest line carries the same settings hash and whose files exist
is skipped. Under `accelerate launch` each process takes its share of the items (`PartialState.
split_between_processes`), writes a manifest shard, and the main process merges the shards in input order and
writes the contact sheet (`index.html`, `grid.png`). A result depends only on (item, seed, settings).
"""

from __future__ import annotations

import glob
import hashlib
import html
import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from studio import runner
from studio.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from studio.progress import json_safe, settings_json
from studio.runner import StopFlag
from studio.tasks import MAX_PROMPT_CHARS, SEED_MAX, Task

MANIFEST = "manifest.jsonl"
MAX_SEEDS = 10_000  # seeds in one --seeds range


def studio_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clip-creative-studio")
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------------ inputs
def parse_seeds(text: str) -> list[int]:
    """'0-9', '0,5,7' or '3' → seeds; each in [0, SEED_MAX]."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"`--seeds` must look like 0-9 or 0,5,7, got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo >= MAX_SEEDS or hi > SEED_MAX:
            raise ValueError(f"`--seeds` range {part!r} must run upwards within [0, {SEED_MAX}], at most "
                             f"{MAX_SEEDS} seeds")
        seeds.extend(range(lo, hi + 1))
    return list(dict.fromkeys(seeds))


def read_prompts(path: str | os.PathLike) -> list[tuple[Any, dict[str, Any]]]:
    """(prompt, per-item settings) per line of a prompt file: plain text (one prompt a line; blank lines and lines
    starting with # are skipped) or JSON Lines ({"prompt": ..., any setting: value}). A bad line is kept as an
    item whose error is reported, so that the rest of the file still runs."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"`--prompts` file {str(path)!r} could not be read ({type(err).__name__}: {err})") from None
    out: list[tuple[Any, dict[str, Any]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("{"):
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as err:
                out.append((ValueError(f"line {n} of {path} is not valid JSON ({err.msg})"), {}))
                continue
            if not isinstance(obj, dict) or "prompt" not in obj:
                out.append((ValueError(f"line {n} of {path}: a JSON line needs a \"prompt\""), {}))
                continue
            prompt = obj.pop("prompt")
            out.append((prompt, obj))
        else:
            out.append((s, {}))
    return out


def find_images(pattern: str) -> list[Path]:
    """A folder (its image files, sorted) or a glob pattern (matches, sorted)."""
    p = Path(pattern).expanduser()
    if not p.exists() and not glob.has_magic(pattern):
        raise ValueError(f"`--images` {pattern!r} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    else:
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    if not files:
        raise ValueError(f"`--images` {pattern!r} names no image files")
    return files


def find_videos(pattern: str) -> list[Path]:
    """A video file, a folder (its video files, sorted) or a glob pattern (matches, sorted)."""
    p = Path(pattern).expanduser()
    if not p.exists() and not glob.has_magic(pattern):
        raise ValueError(f"`--videos` {pattern!r} does not exist")
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file())
    else:
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    if not files:
        raise ValueError(f"`--videos` {pattern!r} names no video files")
    return files


@dataclass
class Item:
    """One unit of a batch run: the task's inputs, per-item settings and a seed."""

    index: int
    inputs: dict[str, Any]  # JSON-friendly: prompt text, image paths as strings
    settings: dict[str, Any]  # overrides for this item (JSON Lines settings and the seed)
    error: str | None = None  # a bad input, reported instead of run
    key: str = ""  # settings hash
    folder: str = ""

    def label(self, text_input: Any = None) -> str:
        """What the item's folder is named after: its text, else its image's (or video's) file name."""
        text = self.inputs.get(text_input.name) if text_input is not None else None
        files = [v for v in self.inputs.values() if isinstance(v, str) and Path(v).suffix.lower() in
                 IMAGE_SUFFIXES + VIDEO_SUFFIXES]
        return str(text or self.inputs.get("prompt") or (Path(files[0]).stem if files else "") or "item")


def _slug(text: str, n: int = 32) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()
    return s[:n].rstrip("-") or "item"


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "unreadable"
    return h.hexdigest()[:16]


def primary_text(task: Task):
    """The text input that `--prompts` / `--prompt` feed: the last required one (the target of a global direction,
    the edit of a text-to-image edit: what a sweep varies), else the last optional one; None when there is none."""
    texts = [i for i in task.inputs if i.kind == "text"]
    required = [i for i in texts if i.required]
    return (required or texts or [None])[-1]


def fixed_inputs(task: Task) -> list:
    """The inputs a run gives once for all its items, each by a flag of its name: the other text inputs
    (`--neutral TEXT`), folders (`--folder DIR`) and states (`--latents FILE`: a .safetensors or .npy latent, or an
    image); a per-item JSON line may set them too."""
    primary = primary_text(task)
    return [i for i in task.inputs if (i.kind == "text" and i is not primary) or i.kind in ("folder", "state")]


def _folder_digest(path: Any) -> str:
    from studio.index import scan

    try:
        files = scan(Path(str(path)))
    except (OSError, ValueError):
        return "unreadable"  # the task itself says why
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def match_masks(images: list[Path], folder: str | os.PathLike) -> dict[str, str]:
    """{image path: mask path}: each image's mask is the file of the same name (any image suffix) in `folder`;
    ValueError naming the images without one (before any work)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"`--masks` must be a folder of masks named like the images, got {str(folder)!r}")
    by_stem = {p.stem: p for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    missing = [p.name for p in images if Path(p).stem not in by_stem]
    if missing:
        raise ValueError(f"`--masks` {str(folder)!r} has no mask named like {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (a mask has its image's file name)")
    return {str(p): str(by_stem[Path(p).stem]) for p in images}


def plan(task: Task, *, prompts: list[tuple[Any, dict]] | None, images: list[Path] | None, seeds: list[int],
         settings: dict[str, Any], models: dict[str, Any], fixed: dict[str, Any] | None = None,
         masks: dict[str, str] | None = None) -> list[Item]:
    """Items = inputs × seeds in input order. The primary text input (`primary_text`) comes from `prompts`, whose
    JSON lines may also set other inputs by name; an image input takes one image per item from `images`, a "mask"
    input that image's mask from `masks` ({image: mask}, `match_masks`), an "images" input (a gallery) takes them
    all in every item; `fixed` inputs are the same in every item."""
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    names = {i.name for i in task.inputs}
    kinds = {i.kind: i for i in task.inputs}
    supported = {"text", "image", "images", "video", "folder", "state", "mask"}
    missing = [i.name for i in task.inputs if i.required and i.kind not in supported]
    if missing:
        raise ValueError(f"task {task.name!r} takes {', '.join(missing)}, which the command line cannot supply")
    base: list[tuple[dict[str, Any], dict[str, Any], str | None]] = []
    text_input = primary_text(task)
    image_input = kinds.get("image") or kinds.get("video")  # one file per item
    gallery = kinds.get("images")
    if text_input is not None and text_input.required and not prompts:
        raise ValueError(f"task {task.name!r} needs `--prompts FILE` or `--prompt TEXT` ({text_input.name}: "
                         f"{text_input.help})")
    if (image_input is not None and image_input.required or gallery is not None and gallery.required) and not images:
        flag = "--videos FILE_OR_GLOB" if image_input is not None and image_input.kind == "video" else \
            "--images DIR_OR_GLOB"
        raise ValueError(f"task {task.name!r} needs `{flag}`")
    per_line = bool(prompts) and any(set(extra) & names for _, extra in prompts)
    for i in fixed_inputs(task):
        if i.required and i.name not in fixed and not per_line:
            raise ValueError(f"task {task.name!r} needs `--{i.name.replace('_', '-')}` ({i.help})")
    texts = prompts if (text_input is not None and prompts) else [(None, {})]
    pics = [str(p) for p in images] if (image_input is not None and images) else [None]
    for prompt, extra in texts:
        for pic in pics:
            inputs: dict[str, Any] = dict(fixed)
            error = None
            if isinstance(prompt, Exception):
                error = str(prompt)
            elif prompt is not None:
                if not isinstance(prompt, str) or not prompt.strip():
                    error = f"`{text_input.name}` must be non-empty text, got {prompt!r:.80}"
                elif len(prompt) > MAX_PROMPT_CHARS:
                    error = f"`{text_input.name}` must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}"
                inputs[text_input.name] = prompt
            if pic is not None:
                inputs[image_input.name] = pic
                if "mask" in kinds and masks:
                    inputs[kinds["mask"].name] = masks[pic]
            if gallery is not None and images:
                inputs[gallery.name] = [str(p) for p in images]
            inputs.update({k: v for k, v in extra.items() if k in names})  # a JSON line's own inputs
            lacking = [i.name for i in fixed_inputs(task) if i.required and i.name not in inputs]
            if error is None and lacking:
                error = f"`{lacking[0]}` is required: give `--{lacking[0].replace('_', '-')}` or a {lacking[0]!r} key"
            base.append((inputs, {k: v for k, v in extra.items() if k not in names}, error))
    file_inputs = {i.name for i in task.inputs if i.kind in ("image", "images", "video", "state", "mask")}
    folder_inputs = {i.name for i in task.inputs if i.kind == "folder"}
    items = []
    for inputs, extra, error in base:
        # the files' contents, not only their names, decide whether an earlier run's files still stand (a folder's:
        # its images' names, sizes and times, as the index's own re-scan sees them)
        digests = {k: (_file_digest(v) if isinstance(v, str) else [_file_digest(x) for x in v])
                   for k, v in inputs.items() if k in file_inputs}
        digests.update({k: _folder_digest(v) for k, v in inputs.items() if k in folder_inputs})
        for seed in seeds:
            i = len(items)
            item_settings = {**settings, **extra, "seed": seed}
            item = Item(i, inputs, item_settings, error)
            item.key = hashlib.sha256(settings_json({"task": task.name, "inputs": inputs, "digests": digests,
                                                     "settings": item_settings, "models": models}).encode()
                                      ).hexdigest()[:20]
            item.folder = f"{i:04d}-{_slug(item.label(text_input))}-s{seed}"
            items.append(item)
    return items


def load_state(path: str) -> Any:
    """A state input given as a file: a .safetensors file holding one tensor, a .npy array (never a pickle), or an
    image (its path, which the task reads)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return str(p)
    if suffix not in (".safetensors", ".npy"):
        raise ValueError(f"a state file must be .safetensors, .npy or an image, got {path!r}")
    try:
        if suffix == ".npy":
            import numpy as np
            import torch

            return torch.from_numpy(np.load(p, allow_pickle=False))
        from safetensors.torch import load_file

        tensors = load_file(str(p))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path!r} could not be read ({type(err).__name__}: {err})") from None
    except Exception as err:  # safetensors' own errors on a corrupt file
        raise ValueError(f"{path!r} is not a safetensors file ({type(err).__name__}: {err})") from None
    if len(tensors) != 1:
        raise ValueError(f"{path!r} must hold one tensor, got {sorted(tensors)}")
    return next(iter(tensors.values()))


def _kind_of(task: Task, name: str) -> str:
    return next((i.kind for i in task.inputs if i.name == name), "")


# ---------------------------------------------------------------------------------------------------- manifest
def read_manifest(path: Path) -> dict[str, dict]:
    """Manifest lines by item folder (the last line for a folder wins); unreadable lines are ignored."""
    lines: dict[str, dict] = {}
    if not path.is_file():
        return lines
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: the item runs again
        if isinstance(line, dict) and "folder" in line:
            lines[line["folder"]] = line
    return lines


def append_line(path: Path, line: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def is_done(line: dict | None, item: Item, out: Path) -> bool:
    """The item ran before with the same settings hash, without error, and its files are all there."""
    if not line or line.get("key") != item.key or line.get("error") is not None:
        return False
    return all((out / f).is_file() for f in line.get("files", {}).values())


# --------------------------------------------------------------------------------------------------------- runs
@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    lines: list[dict] = field(default_factory=list)


class Interrupt:
    """SIGINT while a batch runs: the item in progress is stopped and not recorded (a rerun runs it again); the
    manifest and the contact sheet are written. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.stop = StopFlag()  # what the runner reads between steps
        self._old: Any = None

    @property
    def flag(self) -> bool:
        return self.stop.is_set()

    def __enter__(self) -> Interrupt:
        def handler(signum, frame):
            if self.flag:
                raise KeyboardInterrupt
            self.stop.set()

        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = None
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run_items(task: Task, pipe: Any, items: Iterable[Item], out: Path, manifest: Path, *, force: bool,
              meta: dict[str, Any], load_input: Callable[[str, str], Any], interrupt: Interrupt,
              on_step: Callable[[Item, Any], None] | None = None,
              on_item: Callable[[Item, dict, str], None] | None = None, video: str = "mp4",
              batch: int = 1) -> Summary:
    """Run `items` on `pipe`; append a manifest line per item to `manifest`. `load_input(kind, value)` turns a
    JSON input (an image path) into what the task takes; `on_step(item, progress)` and `on_item(item, line,
    status)` report progress ("done", "skipped", "failed"). `batch` > 1 runs up to that many consecutive items that
    differ only by seed as one batched optimisation (`Task.iterate_seeds`); their files and lines are those of
    one-by-one runs."""
    task.check_batch(batch)
    summary = Summary()
    previous = read_manifest(out / MANIFEST)
    previous.update(read_manifest(manifest))
    group: list[Item] = []

    def flush() -> bool:
        """Run the pending group and record it; False when an interrupt cut it short (nothing recorded)."""
        if not group:
            return True
        t0 = time.perf_counter()
        outcomes = _run_group(task, pipe, group, load_input, interrupt, on_step)
        if interrupt.flag:  # the items were cut short: not recorded, so a rerun runs them again
            return False
        share = (time.perf_counter() - t0) / len(group)
        for item, (result, error) in zip(group, outcomes):
            line = _record(task, item, result, error, out, manifest, meta, video, share, len(group))
            summary.lines.append(line)
            status = "done" if error is None else "failed"
            summary.done += error is None
            summary.failed += error is not None
            if on_item:
                on_item(item, line, status)
        group.clear()
        return True

    for item in items:
        if interrupt.flag:
            summary.interrupted = True
            break
        old = previous.get(item.folder)
        if not force and is_done(old, item, out):
            summary.skipped += 1
            summary.lines.append(old)
            if on_item:
                on_item(item, old, "skipped")
            continue
        if group and not (len(group) < batch and item.error is None and _same_but_seed(group[0], item)):
            if not flush():
                summary.interrupted = True
                break
        group.append(item)
    if not summary.interrupted and not flush():
        summary.interrupted = True
    return summary


def _same_but_seed(a: Item, b: Item) -> bool:
    """Two items that one batched run can take: the same inputs and settings, another seed."""
    if a.error is not None or b.error is not None or a.inputs != b.inputs:
        return False
    strip = lambda s: {k: v for k, v in s.items() if k != "seed"}  # noqa: E731
    return strip(a.settings) == strip(b.settings) and a.settings.get("seed") != b.settings.get("seed")


def _run_group(task: Task, pipe: Any, group: list[Item], load_input: Callable[[str, str], Any],
               interrupt: Interrupt, on_step: Callable[[Item, Any], None] | None) -> list[tuple[Any, str | None]]:
    """(result, error) per item of `group`: one run of the task, or one batched run of its seeds."""
    first = group[0]
    if first.error is not None:
        return [(None, first.error)]
    try:
        kwargs = {k: load_input(_kind_of(task, k), v) for k, v in first.inputs.items()}
        if len(group) == 1:
            gen = task.iterate(pipe, **kwargs, **first.settings)
        else:
            settings = {k: v for k, v in first.settings.items() if k != "seed"}
            gen = task.iterate_seeds(pipe, [i.settings["seed"] for i in group], **kwargs, **settings)
        result = runner.run(gen, on_step and (lambda progress: on_step(first, progress)), stop=interrupt.stop)
    except ValueError as err:  # a bad item: its line says why, the run goes on
        return [(None, str(err))] * len(group)
    except RuntimeError as err:  # out of memory, missing weights: also this item's error
        return [(None, f"{type(err).__name__}: {err}")] * len(group)
    results = result.results if len(group) > 1 else [result]
    return [(r, None) for r in results]


def _record(task: Task, item: Item, result: Any, error: str | None, out: Path, manifest: Path, meta: dict[str, Any],
            video: str, seconds: float, batched: int) -> dict:
    """Write an item's files (into a temporary folder renamed into place when complete) and its manifest line."""
    line = {"index": item.index, "folder": item.folder, "key": item.key, "task": task.name,
            "inputs": item.inputs, **meta}
    if error is None:
        tmp = out / f".partial-{item.folder}"
        shutil.rmtree(tmp, ignore_errors=True)
        paths = result.save(tmp, video=video)
        paths.update(result.save_latents(tmp))  # so that a later task can start from them
        final = out / item.folder
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        line.update(settings=json_safe(result.settings), seed=result.seed,
                    scores={k: v for k, v in json_safe(result.scores).items()},
                    timings={k: round(v, 4) for k, v in result.timings.items()},
                    files={k: f"{item.folder}/{Path(p).name}" for k, p in paths.items()},
                    notice=result.notice, error=None)
    else:
        line.update(settings=json_safe(item.settings), seed=item.settings.get("seed"), scores={}, timings={},
                    files={}, error=error)
    line["timings"]["item_s"] = round(seconds, 4)
    line["batch"] = batched  # seeds optimised together with this one (1: alone)
    append_line(manifest, line)
    return line


def merge_manifests(out: Path, items: list[Item], shards: list[Path]) -> list[dict]:
    """The manifest in input order from the shards (and the previous manifest), one line per planned item that
    has one; written atomically to out/manifest.jsonl. Returns its lines."""
    lines = read_manifest(out / MANIFEST)
    for shard in shards:
        lines.update(read_manifest(shard))
    ordered = [lines[i.folder] for i in items if i.folder in lines and lines[i.folder].get("key") == i.key]
    tmp = out / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in ordered:
            f.write(json.dumps(line, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / MANIFEST)
    for shard in shards:
        if shard != out / MANIFEST:
            shard.unlink(missing_ok=True)
    return ordered


# ------------------------------------------------------------------------------------------------ contact sheet
def _score(line: dict) -> float:
    scores = line.get("scores") or {}
    for key in ("clip_score", "score_after", "top_similarity", "psnr"):
        if isinstance(scores.get(key), (int, float)):
            return float(scores[key])
    nums = [v for v in scores.values() if isinstance(v, (int, float))]
    return float(nums[0]) if nums else float("-inf")


def _first_png(line: dict, sheet: bool = False) -> str | None:
    """The image a contact sheet shows for a line: its first PNG; with `sheet`, a task's own sheet first (Vectorize:
    the picture beside its SVG; index.html shows it, grid.png puts the source picture beside the result itself)."""
    files = line.get("files") or {}
    for k in (("sheet",) if sheet else ()) + ("png", "png0"):
        if k in files:
            return files[k]
    return next((v for v in files.values() if v.endswith(".png")), None)


def _label(line: dict) -> str:
    """What an item was made from: its prompt, else the name of its first text input (an image's file name)."""
    texts = [v for v in line["inputs"].values() if isinstance(v, str)]
    return str(line["inputs"].get("prompt") or (Path(texts[0]).name if texts else ""))


def sheet_order(lines: list[dict]) -> list[dict]:
    """The contact sheet's order: the items of one prompt (or input) together, in the order the inputs came, and
    within each the best score first. Scores of different prompts are not comparable (CLIP scores "a cat on a sofa"
    above "a red circle" for drawings of neither), so they are never ranked against each other (issue 29)."""
    first: dict[str, int] = {}
    for i, ln in enumerate(lines):
        first.setdefault(_label(ln), i)
    return sorted(lines, key=lambda ln: (first[_label(ln)], -_score(ln)))


SHEET_BORDER = 4  # white margin around each cell of grid.png, inside a grey frame
SHEET_CAPTION = 30  # pixels of caption under each cell: the prompt (or input), then seed and score


def _sheet_cell(out: Path, line: dict, thumb: int) -> Any:
    """One cell of grid.png: the result (and, for a task made from an image, that image on its left), framed, with
    its prompt or input name, seed and score written under it."""
    from PIL import Image, ImageDraw

    parts = []
    source = line["inputs"].get("image")
    if isinstance(source, str) and Path(source).is_file():
        try:
            with Image.open(source) as im:
                parts.append(im.convert("RGB"))
        except OSError:  # an unreadable source: the result alone
            pass
    with Image.open(out / _first_png(line)) as im:
        parts.append(im.convert("RGB"))
    for im in parts:
        im.thumbnail((thumb, thumb))
    b = SHEET_BORDER
    cell = Image.new("RGB", (len(parts) * thumb + 2 * b, thumb + 2 * b + SHEET_CAPTION), "white")
    draw = ImageDraw.Draw(cell)
    for k, im in enumerate(parts):
        x, y = b + k * thumb + (thumb - im.width) // 2, b + (thumb - im.height) // 2
        cell.paste(im, (x, y))
        draw.rectangle((b + k * thumb, b, b + (k + 1) * thumb - 1, b + thumb - 1), outline=(170, 170, 170))
    score = _score(line)
    chars = cell.width // 6  # PIL's default font is about 6 px a character
    label = _label(line)
    draw.text((b, b + thumb + 2), label if len(label) <= chars else label[: chars - 1] + "…", fill="black")
    draw.text((b, b + thumb + 15), f"seed {line.get('seed')}" + (f" · score {score:.1f}" if score != float("-inf")
                                                                  else ""), fill=(80, 80, 80))
    return cell


def contact_sheet(out: Path, lines: list[dict], title: str, thumb: int = 160) -> tuple[Path, Path]:
    """index.html (thumbnails with prompt, seed and score, grouped by prompt and best first within one, linking the
    files) and grid.png."""
    from PIL import Image

    ok = sheet_order([ln for ln in lines if ln.get("error") is None and _first_png(ln)])
    cards = []
    for ln in ok:
        png = _first_png(ln, sheet=True)
        label = _label(ln)
        score = _score(ln)
        links = " ".join(f'<a href="{html.escape(p)}">{html.escape(k)}</a>' for k, p in ln["files"].items())
        cards.append(f'<figure><a href="{html.escape(png)}"><img src="{html.escape(png)}" width="{thumb}"></a>'
                     f"<figcaption>{html.escape(str(label))}<br>seed {ln.get('seed')}"
                     f"{f' · score {score:.2f}' if score != float('-inf') else ''}<br>{links}</figcaption></figure>")
    failed = [ln for ln in lines if ln.get("error") is not None]
    errors = "".join(f"<li>{html.escape(ln['folder'])}: {html.escape(str(ln['error']))}</li>" for ln in failed)
    notices = list(dict.fromkeys(str(ln["notice"]) for ln in lines if ln.get("notice")))  # the demo model's, ...
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}figure{display:inline-block;margin:6px;width:"
            f"{thumb}px;vertical-align:top;font-size:12px}}.notice{{background:#fff4d6;padding:6px}}</style>"
            f"<h1>{html.escape(title)}</h1>"
            + "".join(f"<p class='notice'>⚠️ {html.escape(n)}</p>" for n in notices)
            + f"<p>{len(ok)} results, by prompt (or input) and best first within each; {len(failed)} failed.</p>"
            f"{''.join(cards)}"
            + (f"<h2>Failed</h2><ul>{errors}</ul>" if failed else ""))
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    cells = [_sheet_cell(out, ln, thumb) for ln in ok]
    cw = max([c.width for c in cells], default=thumb)
    ch = max([c.height for c in cells], default=thumb)
    cols = max(1, min(8 if cw <= thumb + 2 * SHEET_BORDER else 4, len(cells)))
    rows = max(1, -(-len(cells) // cols))
    grid = Image.new("RGB", (cols * cw, rows * ch), "white")
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % cols) * cw, (i // cols) * ch))
    grid.save(out / "grid.png")
    return index, out / "grid.png"
