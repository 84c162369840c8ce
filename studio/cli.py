"""The `clip-studio` command: `clip-studio [serve flags]` starts the web app; `clip-studio run TASK ...` runs a
registered task over prompts, images and seeds (also `python -m studio run ...`), on one process or, under
`accelerate launch`, on many; `clip-studio index DIR` and `clip-studio search QUERY [--index DIR]` keep and query a
folder's image index (`pipelines/lens_index.py`).

Parsing comes before any heavy import, so `clip-studio --help` answers at once; `clip-studio run TASK --help`
lists the task's settings, which come from its config dataclass (names, types, defaults, limits, help).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from studio.defaults import DEFAULT_CLIP, DEMO_CLIP, DEMO_GENERATOR
from studio.tasks import MAX_SEED_BATCH

MODEL_FLAGS = {  # model kind (Task.models) -> (flag, environment variable, default, help)
    "clip": ("--clip", "STUDIO_CLIP", DEFAULT_CLIP, f"CLIP spec: ARCH/TAG, ARCH:/path/weights or {DEMO_CLIP}"),
    "loss_clip": ("--loss-clip", None, None, "CLIPasso's loss CLIP (a ResNet such as RN101/openai; default: --clip)"),
    "generator": ("--generator", "STUDIO_STYLEGAN", DEMO_GENERATOR, "StyleGAN2: a registry name or a checkpoint path"),
    "t2i": ("--model", "STUDIO_T2I_MODEL", None, "diffusers text-to-image model: a repo id or a folder"),
    "mapper": ("--mapper", None, None, "a trained StyleCLIP latent mapper: .safetensors from styleclip-mapper, or "
               "one of StyleCLIP's published .pt mappers"),
    "detector": ("--detector", "STUDIO_DETECTOR", None, "lens-detect's detector: clip (CLIP-named regions, the "
                 "default) or an OWL-ViT / OWLv2 repo id or folder"),
}


COMMANDS = ("run", "index", "search", "serve")
COMMANDS_HELP = """  run TASK ...     run a task over prompts, images and seeds (`clip-studio run --help` lists the
                   tasks, `clip-studio run TASK --help` its settings)
  index DIR        index a folder's images for search
  search QUERY     search an indexed folder (--index DIR)
  serve            start the web app (the default: `clip-studio` alone does it)"""


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    """" (did you mean 'search'?)" for a near miss of one of `choices`, else ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------------------------------- serve
def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"clip-studio: error: {name} must be a number, got {value!r}") from None


def _env_int(name: str) -> int | None:
    value = _env_float(name)
    if value is not None and not float(value).is_integer():
        raise SystemExit(f"clip-studio: error: {name} must be a whole number, got {value:g}")
    return None if value is None else int(value)


def parse_serve_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description="CLIP Creative Studio: start the web app (the flags below).",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"commands:\n{COMMANDS_HELP}")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for all); env GRADIO_SERVER_NAME")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port; env GRADIO_SERVER_PORT")
    p.add_argument("--share", action="store_true", help="create a temporary public gradio.live link")
    p.add_argument("--device", default=os.environ.get("STUDIO_DEVICE"),
                   help="auto, cpu, cuda[:N], mps; env STUDIO_DEVICE")
    p.add_argument("--clip", default=os.environ.get("STUDIO_CLIP"),
                   help="CLIP models offered, comma-separated, the first the default: ARCH/TAG (ViT-B-32/openai), "
                   "ARCH:/path/weights, or shapes-clip; env STUDIO_CLIP")
    p.add_argument("--generator", default=os.environ.get("STUDIO_STYLEGAN"),
                   help="StyleGAN2 generators offered, comma-separated (registry names or checkpoint paths), the "
                   "first the default; env STUDIO_STYLEGAN")
    p.add_argument("--public", action="store_true",
                   help="serve strangers: visitors pick only the listed models, uploads and run time are capped, "
                   "outputs expire (on by itself on a Hugging Face Space, where SPACE_ID is set; env STUDIO_PUBLIC=1)")
    p.add_argument("--max-upload-mb", type=float, default=_env_float("STUDIO_MAX_UPLOAD_MB"),
                   help="largest upload accepted (default 20 public, 512 local); env STUDIO_MAX_UPLOAD_MB")
    p.add_argument("--max-run-s", type=float, default=_env_float("STUDIO_MAX_RUN_S"),
                   help="stop every run after this many seconds, keeping its result (default 600 public, none "
                   "local); env STUDIO_MAX_RUN_S")
    p.add_argument("--output-ttl-s", type=float, default=_env_float("STUDIO_OUTPUT_TTL_S"),
                   help="delete outputs older than this (default 3600 public, kept local); env STUDIO_OUTPUT_TTL_S")
    p.add_argument("--max-waiting", type=int, default=_env_int("STUDIO_MAX_WAITING"),
                   help="jobs one visitor may have waiting in the queue (default 2 public, no share local); env "
                   "STUDIO_MAX_WAITING")
    p.add_argument("--upload-budget-mb", type=float, default=_env_float("STUDIO_UPLOAD_BUDGET_MB"),
                   help="uploads (and served files) Gradio's cache may hold before uploads are refused (default "
                   "2048 public, none local); env STUDIO_UPLOAD_BUDGET_MB")
    p.add_argument("--index", default=os.environ.get("STUDIO_INDEX"), metavar="DIR",
                   help="a folder of images whose index (`clip-studio index DIR`) the Lens tab searches; visitors "
                   "never name a folder; env STUDIO_INDEX")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("STUDIO_CONCURRENCY", "1")),
                   help="jobs running at once (one GPU job at a time by default); env STUDIO_CONCURRENCY")
    p.add_argument("--max-queue", type=int, default=int(os.environ.get("STUDIO_MAX_QUEUE", "32")),
                   help="requests waiting before new ones are turned away; env STUDIO_MAX_QUEUE")
    args = p.parse_args(argv)
    for flag in ("max_upload_mb", "max_run_s", "output_ttl_s", "max_waiting", "upload_budget_mb"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            p.error(f"--{flag.replace('_', '-')} must be a positive number, got {value:g}")
    if args.concurrency < 1:
        p.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.max_queue < 1:
        p.error(f"--max-queue must be at least 1 (0 would turn every request away), got {args.max_queue}")
    return args


# --------------------------------------------------------------------------------------------------------- run
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value(text: str) -> Any:
    """A --set value: JSON where it parses (numbers, true/false, lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _range(spec) -> str:
    if spec.choices is not None:
        return "one of " + ", ".join(map(str, spec.choices))
    if spec.lo is not None or spec.hi is not None:
        return f"in [{spec.lo}, {spec.hi}]"
    return ""


def task_specs(task, model: str | None = None) -> dict:
    """The task's settings as `--help` shows them: a Text to Image task's are its model family's (the config's
    `for_model(model)`, which loads nothing), so `--model <an SD 1.5 folder> --help` shows the 25 steps it runs."""
    if model and "t2i" in task.models and hasattr(task.config, "for_model"):
        from studio.tasks import specs

        return specs(task.config.for_model(model))
    return task.specs()


def run_parser(task, prog: str, model: str | None = None) -> argparse.ArgumentParser:
    """The parser of `prog run TASK`; `model`: the --model given (or its environment variable), whose family's
    defaults the settings' help shows."""
    p = argparse.ArgumentParser(prog=f"{prog} run {task.name}", description=f"{task.title}. Items are the inputs "
                                "× the seeds; each gets a folder under --out and a line in manifest.jsonl.")
    from studio.batch import fixed_inputs, primary_text

    kinds = {i.kind for i in task.inputs}
    text = primary_text(task)
    if text is not None:
        p.add_argument("--prompts", metavar="FILE", help=f"one {text.name} per line, or JSON Lines with per-item "
                       "settings and inputs ({\"prompt\": ..., \"num_steps\": ...})")
        p.add_argument("--prompt", action="append", metavar="TEXT", help=f"a {text.name}: {text.help} (repeatable)"
                       .replace("%", "%%"))
    for i in fixed_inputs(task):
        if i.name in task.models:  # a model flag of the same name (--mapper) supplies it
            continue
        meta = {"text": "TEXT", "folder": "DIR", "state": "FILE"}[i.kind]
        extra = " (.safetensors or .npy latent, or an image)" if i.kind == "state" else ""
        p.add_argument(_flag(i.name), dest=f"input_{i.name}", metavar=meta, default=None,
                       help=f"{i.help}{extra}; the same for every item{'' if i.required else ' (optional)'}"
                       .replace("%", "%%"))
    if kinds & {"image", "images"}:
        p.add_argument("--images", metavar="DIR_OR_GLOB", help="a folder of images or a glob pattern")
    if "mask" in kinds:
        p.add_argument("--masks", metavar="DIR", help="a folder of masks, each named like its image (white or opaque "
                       "= repaint)")
    if "video" in kinds:
        p.add_argument("--videos", metavar="FILE_OR_GLOB", help="a video file, a folder of videos or a glob pattern "
                       "(an item per video)")
    p.add_argument("--seeds", metavar="SEEDS", help="0-9 or 0,5,7 (default: the config's seed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting for the whole run (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume)")
    p.add_argument("--force", action="store_true", help="rerun items that are already done")
    p.add_argument("--batch", type=int, default=1, metavar="K",
                   help="optimise K seeds of the same prompt together in one batched run"
                   + (" (on the CPU each result equals its one-seed run's, byte for byte; on a GPU up to float "
                      "rounding)" if task.batch_method else f"; {task.name} runs one seed at a time, so only 1"))
    p.add_argument("--quiet", action="store_true", help="a log line per item instead of a progress bar")
    p.add_argument("--video", choices=("mp4", "gif"), default="mp4", help="video format of the frames")
    p.add_argument("--device", default=os.environ.get("STUDIO_DEVICE"), help="auto, cpu, cuda[:N], mps "
                   "(under accelerate, each process's own device)")
    for kind in task.models:
        flag, env, default, text = MODEL_FLAGS[kind]
        p.add_argument(flag, dest=kind, default=os.environ.get(env) if env else None, help=text
                       + (f"; env {env}" if env else "") + (f"; default {default}" if default else ""))
    if "t2i" in task.models:
        p.add_argument("--one-step", action=argparse.BooleanOptionalAction, default=None,
                       help="treat --model as a one-step model like sd-turbo (refine needs one); default: the known "
                       "models' presets decide, any other model is multi-step")
    group = p.add_argument_group("settings (from the task's config; default shown)")
    for name, spec in task_specs(task, model).items():
        limits = f"; {_range(spec)}" if _range(spec) else ""
        cpu = f", {spec.cpu_default!r} on a CPU" if spec.cpu_default is not None else ""
        text = f"{spec.help} (default {spec.default!r}{cpu}{limits})".replace("%", "%%")  # argparse formats with %
        kw: dict[str, Any] = {"dest": f"setting_{name}", "default": None, "help": text}
        if spec.kind == "bool":
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kw)
        elif spec.kind == "int":
            group.add_argument(_flag(name), type=int, metavar="INT", **kw)
        elif spec.kind == "float":
            group.add_argument(_flag(name), type=float, metavar="X", **kw)
        elif spec.kind == "choice":
            group.add_argument(_flag(name), choices=list(spec.choices), **kw)
        elif spec.kind == "tuple":
            group.add_argument(_flag(name), type=_value, metavar="JSON", **kw)
        else:
            group.add_argument(_flag(name), metavar="TEXT", **kw)
    return p


def run_main(argv: list[str], prog: str = "clip-studio") -> int:
    pre = argparse.ArgumentParser(prog=f"{prog} run", add_help=False)
    pre.add_argument("task", nargs="?")
    known, _ = pre.parse_known_args(argv)
    if known.task is None or known.task.startswith("-"):
        from pipelines.registry import task_names

        names = task_names()
        if "-h" in argv or "--help" in argv:
            print(f"usage: {prog} run TASK [--help] ...\n\ntasks: {', '.join(names)}")
            return 0
        print(f"{prog} run: error: name a task: {', '.join(names)}", file=sys.stderr)
        return 2
    from pipelines.registry import get_task

    try:
        task = get_task(known.task)
    except ValueError as err:
        print(f"{prog} run: error: {err}", file=sys.stderr)
        return 2
    model = None
    if "t2i" in task.models:  # the settings' defaults in --help are this model family's
        flag, env = MODEL_FLAGS["t2i"][:2]
        pre.add_argument(flag, dest="t2i", default=os.environ.get(env))
        model = pre.parse_known_args(argv)[0].t2i
    parser = run_parser(task, prog, model)
    args = parser.parse_args(argv[1:])
    try:
        return run_batch(task, args, prog)
    except ValueError as err:  # a bad flag, file or setting: one line, no traceback
        print(f"{prog} run: error: {err}", file=sys.stderr)
        return 2


def _settings_from(args: argparse.Namespace, task) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name in task.specs():
        v = getattr(args, f"setting_{name}")
        if v is not None:
            settings[name] = v
    for pair in args.set:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"`--set` takes KEY=VALUE, got {pair!r}")
        if key.strip() not in task.specs():
            raise ValueError(f"`--set` {key.strip()!r} is not a setting of {task.name}; valid: "
                             f"{', '.join(task.specs())}")
        settings[key.strip()] = _value(text)
    return settings


def _cpu_start(task, settings: dict[str, Any], device: str | None) -> str:
    """On a CPU, the settings not given start where the page's controls start (`ParamSpec.cpu_default`: the papers'
    settings take a GPU; CLIPDraw's 256 strokes × 1000 steps took many minutes); returns the line that says so."""
    smaller = {n: s for n, s in task.specs().items() if s.cpu_default is not None and n not in settings}
    if not smaller:
        return ""
    from studio.device import pick_device

    if pick_device(device).type != "cpu":
        return ""
    settings.update({n: s.cpu_default for n, s in smaller.items()})
    now = ", ".join(f"{_flag(n)} {s.cpu_default}" for n, s in smaller.items())
    paper = " ".join(f"{_flag(n)} {s.default}" for n, s in smaller.items())
    return f"on the CPU the settings start smaller, as on the page: {now} (the defaults: {paper})"


def run_batch(task, args: argparse.Namespace, prog: str) -> int:
    from studio import batch

    out = Path(args.out)
    prompts = None
    if getattr(args, "prompts", None):
        prompts = batch.read_prompts(args.prompts)
    if getattr(args, "prompt", None):
        prompts = (prompts or []) + [(p, {}) for p in args.prompt]
    images = batch.find_images(args.images) if getattr(args, "images", None) else None
    if getattr(args, "videos", None):
        images = batch.find_videos(args.videos)
    settings = _settings_from(args, task)
    cpu_note = _cpu_start(task, settings, args.device)
    seeds = batch.parse_seeds(args.seeds) if args.seeds else [int(settings.get("seed", task.specs()["seed"].default))]
    settings.pop("seed", None)
    models = {kind: getattr(args, kind) or MODEL_FLAGS[kind][2] for kind in task.models}
    load_options = {}
    if getattr(args, "one_step", None) is not None:  # part of what made the results, so part of their hash
        load_options["one_step"] = models["one_step"] = args.one_step
    # check the shared settings once, before any model loads (a per-item JSON setting is checked per item)
    from studio.tasks import resolve

    resolve(task.config(), {**settings, "seed": seeds[0]})
    fixed = {i.name: getattr(args, f"input_{i.name}", None) for i in batch.fixed_inputs(task)}
    masks = batch.match_masks(images or [], args.masks) if getattr(args, "masks", None) else None
    items = batch.plan(task, prompts=prompts, images=images, seeds=seeds, settings=settings, models=models,
                       fixed=fixed, masks=masks)
    if not 1 <= args.batch <= MAX_SEED_BATCH:
        raise ValueError(f"`--batch` must be in [1, {MAX_SEED_BATCH}], got {args.batch}")
    task.check_batch(args.batch)  # before any model loads
    if cpu_note:
        print(f"{prog} run: {cpu_note}", file=sys.stderr)

    state = _accelerate_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    out.mkdir(parents=True, exist_ok=True)
    device = str(state.device) if state is not None and world > 1 else args.device
    logging.getLogger("studio").setLevel(logging.WARNING)
    from studio.runner import ModelPool

    try:
        pipe = ModelPool().get(task, **{k: v for k, v in models.items() if k in task.models}, **load_options,
                               device=device)
    except (RuntimeError, OSError) as err:  # weights that cannot be found or loaded: say which, how to fix
        print(f"{prog} run: error: {str(err).splitlines()[0] if args.quiet else err}", file=sys.stderr)
        return 2
    mine = items
    if state is not None and world > 1:
        with state.split_between_processes(items) as share:
            mine = list(share)
    shard = out / (batch.MANIFEST if world == 1 else f".manifest.rank{rank}.jsonl")
    meta = {"studio_version": batch.studio_version(), "models": models}

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), unit="item", desc=task.name, position=rank, disable=None)

    def on_step(item, progress):
        if bar is not None:
            bar.set_postfix_str(f"{item.folder} step {progress.step}/{progress.total} · {progress.clock.line()}",
                                refresh=False)
            bar.refresh() if progress.preview is not None else None

    def on_item(item, line, status):
        if bar is not None:
            bar.update(1)
        if args.quiet or status == "failed":
            text = f"{status}: {item.folder}" + (f": {line['error']}" if line.get("error") else "")
            (bar.write(text) if bar is not None else print(text, flush=True))

    with batch.Interrupt() as interrupt:
        summary = batch.run_items(task, pipe, mine, out, shard, force=args.force, meta=meta,
                                  load_input=_load_input, interrupt=interrupt, on_step=on_step,
                                  on_item=on_item, video=args.video, batch=args.batch)
    if bar is not None:
        bar.close()
    if state is not None and world > 1:
        state.wait_for_everyone()
    counts = (summary.done, summary.skipped, summary.failed)
    if world > 1:
        counts = _gather_counts(state, counts)
    if rank == 0:
        shards = [out / f".manifest.rank{r}.jsonl" for r in range(world)] if world > 1 else [out / batch.MANIFEST]
        lines = batch.merge_manifests(out, items, shards)
        batch.contact_sheet(out, lines, f"{task.title}: {len(lines)} items")
        done, skipped, failed = counts
        word = "interrupted; " if summary.interrupted else ""
        print(f"{task.name}: {word}{done} done, {skipped} skipped, {failed} failed of {len(items)} items → "
              f"{out / batch.MANIFEST}", file=sys.stderr if failed else sys.stdout)
    if summary.interrupted:
        return 130
    return 1 if counts[2] else 0


def _load_input(kind: str, value: Any) -> Any:
    """An item's JSON input as the task takes it: state files are read (`studio.batch.load_state`), the rest (text,
    image and folder paths) go as they are."""
    if kind == "state" and isinstance(value, str):
        from studio.batch import load_state

        return load_state(value)
    return value


def _accelerate_state():
    """accelerate's process state when launched by `accelerate launch` (several processes), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and "ACCELERATE_USE_CPU" not in os.environ:
        return None
    from accelerate import PartialState

    return PartialState()


def _gather_counts(state, counts: tuple[int, int, int]) -> tuple[int, int, int]:
    import torch
    from accelerate.utils import gather

    t = torch.tensor([list(counts)], device=state.device)
    total = gather(t).sum(0).tolist()
    return int(total[0]), int(total[1]), int(total[2])


# ------------------------------------------------------------------------------------------------ index, search
def _setting_flags(p: argparse.ArgumentParser, config: type) -> None:
    """A flag per control setting of `config` (int/float ones here), default and limits in its help."""
    from studio.tasks import specs

    for name, spec in specs(config).items():
        if not spec.control or spec.kind not in ("int", "float"):
            continue
        text = f"{spec.help} (default {spec.default!r}; {_range(spec)})".replace("%", "%%")
        p.add_argument(_flag(name), dest=f"setting_{name}", type=int if spec.kind == "int" else float,
                       default=None, metavar=spec.kind.upper(), help=text)


def _settings(args: argparse.Namespace, config: type) -> dict[str, Any]:
    from studio.tasks import specs

    return {n: getattr(args, f"setting_{n}") for n in specs(config) if getattr(args, f"setting_{n}", None) is not None}


def index_parser(prog: str) -> argparse.ArgumentParser:
    from studio.index import INDEX_DIRNAME, LensIndexConfig

    p = argparse.ArgumentParser(prog=f"{prog} index", description="Index the images under DIR (recursively) into a "
                                f"LanceDB table in DIR/{INDEX_DIRNAME}. A re-index reads only new and changed files "
                                "and drops deleted ones; unreadable files are skipped and listed.")
    p.add_argument("dir", metavar="DIR", help="the folder of images")
    p.add_argument("--clip", default=None, help="CLIP spec (ARCH/TAG, ARCH:/path/weights or shapes-clip); default: "
                   "the spec that made the index, else env STUDIO_CLIP, else ViT-B-32/openai")
    p.add_argument("--device", default=os.environ.get("STUDIO_DEVICE"), help="auto, cpu, cuda[:N], mps")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _setting_flags(p, LensIndexConfig)
    return p


def search_parser(prog: str) -> argparse.ArgumentParser:
    from studio.index import LensIndexSearchConfig

    p = argparse.ArgumentParser(prog=f"{prog} search", description="Search an indexed folder by text, image or both: "
                                "QUERY is rclip's form, e.g. '\"2:golden retriever\" + ./pool.jpg - fruit' (terms "
                                "joined by + and -, an optional W: weight, image terms are paths starting with / ./ "
                                "../ or ~/). A query starting with - goes after --.")
    p.add_argument("query", metavar="QUERY", help="what to look for")
    p.add_argument("--index", default=".", metavar="DIR", help="the indexed folder (default: the current one)")
    p.add_argument("--clip", default=None, help="CLIP spec; default: the one that made the index (another is refused)")
    p.add_argument("--device", default=os.environ.get("STUDIO_DEVICE"), help="auto, cpu, cuda[:N], mps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _setting_flags(p, LensIndexSearchConfig)
    return p


def _load_index_pipeline(spec: str, device: str | None):
    """The index's pipeline, from the task table (lens-index and lens-index-search share it) through the pool."""
    from pipelines.registry import get_task
    from studio.runner import ModelPool

    logging.getLogger("studio").setLevel(logging.WARNING)
    return ModelPool().get(get_task("lens-index"), clip=spec, device=device)


def index_main(argv: list[str], prog: str = "clip-studio") -> int:
    args = index_parser(prog).parse_args(argv)
    try:
        from studio.index import ImageIndex, LensIndexConfig, check_folder
        from studio.tasks import resolve

        settings = _settings(args, LensIndexConfig)
        resolve(LensIndexConfig(), settings)  # bad settings are refused before a model loads
        folder = check_folder(args.dir, "DIR")
        spec = args.clip or ImageIndex(folder).clip_spec or os.environ.get("STUDIO_CLIP") or MODEL_FLAGS["clip"][2]
        pipe = _load_index_pipeline(spec, args.device)
        bar = None
        if not (args.quiet or args.json):
            from tqdm import tqdm

            bar = tqdm(unit="img", desc=f"index {args.dir}", disable=None)

        from studio.batch import Interrupt

        def on_progress(progress):
            if bar is not None and "images_total" in progress.metrics:
                bar.total = progress.metrics["images_total"]
                bar.n = progress.metrics["images_done"]
                bar.set_postfix_str(progress.clock.line(), refresh=False)
                bar.refresh()

        from studio import runner

        with Interrupt() as interrupt:  # Ctrl-C stops after the batch in progress, keeping what was indexed
            try:
                item = runner.run(pipe.iter_index(folder, **settings), on_progress, stop=interrupt.stop)
            finally:
                if bar is not None:
                    bar.close()
    except (ValueError, RuntimeError, OSError) as err:
        print(f"{prog} index: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    report = item.report()
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        for path, why in item.skipped:
            print(f"skipped: {path}: {why}", file=sys.stderr)
        word = "stopped; " if item.stopped else ""
        ann = {"built": "; approximate index built", "updated": "; approximate index updated"}.get(item.ann, "")
        print(f"{args.dir}: {word}{item.rows} images indexed with {item.clip_spec} ({item.new} new, {item.changed} "
              f"changed, {item.deleted} deleted, {item.unchanged} unchanged, {len(item.skipped)} skipped){ann} → "
              f"{item.location}")
    return 130 if item.stopped else 0


def search_main(argv: list[str], prog: str = "clip-studio") -> int:
    args = search_parser(prog).parse_args(argv)
    try:
        from studio.index import ImageIndex, LensIndexSearchConfig, check_folder
        from studio.tasks import resolve

        settings = _settings(args, LensIndexSearchConfig)
        resolve(LensIndexSearchConfig(), settings)  # bad settings are refused before a model loads
        folder = check_folder(args.index, "--index")
        spec = args.clip or ImageIndex.open(folder, name="--index").clip_spec
        out = _load_index_pipeline(spec, args.device).search(folder, args.query, **settings)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"{prog} search: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"query": out.query, "rows": out.rows, "hidden": out.hidden, "approximate": out.approximate,
                          "results": [{"rank": i + 1, "similarity": round(s, 4), "path": p}
                                      for i, (p, s) in enumerate(zip(out.paths, out.similarities))]},
                         indent=1, ensure_ascii=False))
        return 0
    print(f"query: {out.query} · {out.rows} images" + (" (approximate)" if out.approximate else ""))
    print(f"{'rank':>4}  {'similarity':>10}  path")
    for i, (p, s) in enumerate(zip(out.paths, out.similarities)):
        print(f"{i + 1:>4}  {s:>10.2f}  {p}")
    if out.hidden:
        print(f"{out.hidden} more below the threshold ({settings.get('threshold', 0.0):g})")
    if not out.paths:
        print("no results" + (" above the threshold" if out.hidden else ""))
    return 0


# -------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None, prog: str = "clip-studio") -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    import warnings

    from studio.defaults import DemoModelWarning

    # a demo stand-in is said once, by the scorer's log line; the Python warning (with a source line) repeated it
    warnings.simplefilter("ignore", DemoModelWarning)
    if argv and argv[0] == "run":
        raise SystemExit(run_main(argv[1:], prog))
    if argv and argv[0] == "index":
        raise SystemExit(index_main(argv[1:], prog))
    if argv and argv[0] == "search":
        raise SystemExit(search_main(argv[1:], prog))
    if argv and argv[0] == "serve":
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):  # the web app takes no word of its own: a mistyped command
        print(f"{prog}: error: unknown command {argv[0]!r}{_did_you_mean(argv[0], COMMANDS)}; commands: "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    args = parse_serve_args(argv, prog)
    from studio.app import serve

    serve(args, prog)


if __name__ == "__main__":
    main()
