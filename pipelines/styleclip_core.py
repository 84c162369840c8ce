"""StyleCLIP's session: what every StyleCLIP task shares, knowing no task (Patashnik et al., ICCV 2021).

A `StyleCLIPSession` holds the components -- a generator with the `studio.generators` interface (a rosinality
StyleGAN2 checkpoint, or the bundled parametric shapes generator), the CLIP scorer, the precision, an optional e4e
encoder -- and the channel-relevance caches. It renders W+ latents and style vectors, embeds images with CLIP as
StyleCLIP's CLIPLoss does, draws random samples, and decides where a run starts (`plan_start`, then `begin`): a
random sample, a latent, an earlier result (anything with `as_start`), or an image, which is inverted first by the
registered inversion task on this same session, as the run's "invert" stage.

Each task is one pipeline class in its own file, on a session (diffusers' shape: separate pipelines over shared
components, `from_pipe`): styleclip_sample.py (`styleclip-sample`), styleclip_edit.py (latent optimisation,
`styleclip-edit`), styleclip_invert.py (`styleclip-invert`), styleclip_global.py (channel relevance and global
directions, `styleclip-relevance`, `styleclip-global`), styleclip_mapper.py (the latent mapper, `styleclip-mapper`,
`styleclip-mapper-apply`). `StyleCLIPPipeline` (pipelines/styleclip.py) puts them all on one session behind one
object. `StyleCLIPTaskPipeline` is their base: built from components as a session is, or on an existing session
with `from_pipe`, which it then shares (caches and encoder included); it reads the session's attributes as its own.

Also here, because several tasks use them: the start's settings (`SampleConfig`, `StartConfig`), `Start`,
`staged` (one task generator run as a stage of another, so that a Stop reaches it), `cap_frames`, StyleCLIP's
learning-rate schedule (`get_lr`) and `EditOutput`, the result of an edit of one latent (latent optimisation, the
mapper).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import get_task
from studio.generators import DEMO_GENERATOR
from studio.media import MAX_FRAMES
from studio.progress import Progress, Result
from studio.tasks import SEED_MAX, param, resolve

INVERT_TASK = "styleclip-invert"  # the registered task that turns an image into a start ("invert first")


def default_cache_dir() -> Path:
    return Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "studio")) / "styleclip"


# ----------------------------------------------------------------------------------------------------------------
# Where a run starts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SampleConfig:
    """A random start: z drawn from `seed`, mapped to w and truncated towards the mean w."""

    seed: int = param(0, 0, SEED_MAX, label="Seed", help="draws z for a random start (and the inversion's noise "
                                                          "when the start is an image)")
    truncation: float = param(0.7, 0.0, 1.0, step=0.05, label="Truncation",
                              help="w = mean + truncation (w - mean); StyleCLIP run_optimization.py --truncation 0.7")


@dataclass
class StartConfig(SampleConfig):
    """The start of an edit: a random sample (`SampleConfig`), a latent, an earlier result, or an image that is
    inverted first with `num_invert_steps` steps."""

    num_invert_steps: int = param(200, 1, 10_000, control=False,
                                  help="steps of the inversion run first when the start is an image (the page "
                                       "inverts with its own button); ours: 200, as `InvertConfig.num_steps`")


@dataclass
class Start:
    """A resolved start: W+ (1, n_latent, D) on the device, its noise maps (None: the generator's stored ones) and
    the inversion it came from, if any."""

    latent: torch.Tensor
    noise: list[torch.Tensor] | None = None
    inversion: Result | None = None  # an `InversionOutput`


@dataclass
class StartPlan:
    """Where a run starts, decided before any work (`StyleCLIPSession.plan_start`): `start` when it is known now,
    else `image`, to be inverted first in `invert_steps` steps from `seed`."""

    start: Start | None
    image: Any = None
    invert_steps: int = 0
    seed: int = 0


def staged(run: Iterator, offset: int, total: int, stage: str) -> Generator[Progress, str | None, Any]:
    """Run the task generator `run` as a stage of a longer run: its steps become `offset + step` of `total`, with
    `stage` set; what is sent in ("stop") goes to it, so it ends with its best so far. Returns its result."""
    try:
        item = next(run)
        while not item.done:
            command = yield dataclasses.replace(item, step=offset + item.step, total=total, stage=stage)
            item = run.send(command)
    finally:
        run.close()
    return item


def cap_frames(frames: list, frame: Any, last: bool) -> None:
    """Append `frame` (uint8 HWC) while fewer than MAX_FRAMES are kept, and always the last one."""
    if len(frames) < MAX_FRAMES or last:
        frames.append(frame)


def get_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleCLIP's (and rosinality projector's) schedule at progress `t` in [0, 1): linear warm-up over the first
    `rampup`, cosine ramp-down over the last `rampdown`."""
    lr_ramp = min(1.0, (1 - t) / rampdown)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    lr_ramp = lr_ramp * min(1.0, t / rampup) if rampup > 0 else lr_ramp
    return initial_lr * lr_ramp


@dataclass
class EditOutput(Result):
    """What a prompt's edit of one latent gives (latent optimisation, the latent mapper): `image` / `original`: the
    edit at `strength` / the start (PIL; `image_tensor` / `original_tensor` the same as (1, 3, H, W) in [0, 1] on
    the CPU); `latent` the edited W+, `start_latent` the start; `prompt`; `inversion`: the inversion (an
    `InversionOutput`) the start came from, when an image was edited."""

    original: Image.Image | None = None
    image_tensor: torch.Tensor | None = None
    original_tensor: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    start_latent: torch.Tensor | None = None
    prompt: str = ""
    inversion: Result | None = None

    def as_start(self, device: torch.device) -> Start:
        """The edited latent as the start of another edit, with the inversion's noise maps when it had one."""
        return start_after(self.latent, self.inversion, device)


def start_after(latent: torch.Tensor, inversion: Any, device: torch.device) -> Start:
    """A `Start` at `latent` of a result that began from `inversion` (None, or an `InversionOutput`)."""
    noise = [n.to(device) for n in inversion.noise] if inversion is not None and inversion.noise else None
    return Start(latent.to(device), noise, inversion)


# ----------------------------------------------------------------------------------------------------------------
# The session
# ----------------------------------------------------------------------------------------------------------------


class StyleCLIPSession:
    """A generator and a CLIP scorer, and what every StyleCLIP task does with them.

    `precision='bf16'` runs the generator and CLIP under autocast (meant for GPUs; CPU autocast works but is
    rarely faster); the latent, the optimiser and the losses stay fp32. `cache_dir`: where channel relevance is
    cached (default `$STUDIO_CACHE/styleclip`, else ~/.cache/studio/styleclip). `encoder`: an e4e encoder for the
    inversion's starts (`load_encoder`). `relevance` (cache path -> `ChannelRelevance`) and `published` (the
    directions given to `import_directions`) are the channel-relevance caches the global directions fill.
    """

    def __init__(self, generator: torch.nn.Module, scorer: Any, precision: str | None = None,
                 cache_dir: str | os.PathLike | None = None):
        if precision not in (None, "fp32", "bf16", "fp16"):
            raise ValueError(f"`precision` must be None, 'fp32', 'bf16' or 'fp16', got {precision!r}")
        self.scorer = scorer
        self.device = torch.device(scorer.device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.encoder: Any = None  # an e4e `Encoder4Editing`
        self.relevance: dict[str, Any] = {}  # cache file -> ChannelRelevance
        self.published: Any = None  # a ChannelRelevance from `import_directions`

    @classmethod
    def from_pretrained(cls, generator: str | None = DEMO_GENERATOR, clip: str | None = None,
                        device: str | None = None, **kwargs: Any) -> StyleCLIPSession:
        """`generator`: 'demo-shapes' (also for None), a registry name (see
        `studio.generators.checkpoints.CHECKPOINTS`), a path or 'hf:OWNER/REPO/FILE.pt'. `clip` defaults to the demo
        CLIP for the demo generator, else `STUDIO_CLIP`."""
        from studio.generators import get_generator
        from studio.hub import DEMO_CLIP
        from studio.scorer import get_scorer

        generator = generator or DEMO_GENERATOR
        if clip is None and generator == DEMO_GENERATOR:
            clip = DEMO_CLIP  # the only CLIP that knows what the demo generator draws
        scorer = get_scorer(clip, device=device)
        return cls(get_generator(generator, device=scorer.device), scorer, **kwargs)

    # -- rendering and embedding ------------------------------------------------------------------------------

    def autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return torch.autocast(self.device.type, enabled=False)

    def render(self, latent: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """W+ (B, n_latent, D) -> (B, 3, H, W) in ~[-1, 1] (stored noise unless `noise` is given)."""
        with self.autocast():
            img = self.generator.synthesis(self.generator.w_to_styles(latent), noise=noise or None)
        return img.float()

    def render_styles(self, styles: list[torch.Tensor], noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Style vectors (one (B, C) per style layer) -> (B, 3, H, W) in ~[-1, 1]."""
        with self.autocast():
            return self.generator.synthesis(styles, noise=noise or None).float()

    def _clip_input(self, img: torch.Tensor) -> torch.Tensor:
        # StyleCLIP's CLIPLoss: upsample x7 then average-pool by size/32, i.e. an area resize to 224 for CLIP.
        x = (img + 1) / 2
        s = self.scorer.image_size
        if x.shape[-1] > s:
            x = F.interpolate(x, size=(s, s), mode="area")
        return x

    def clip_embed(self, img: torch.Tensor) -> torch.Tensor:
        """Unit CLIP embeddings (B, D) of generator images in ~[-1, 1], differentiable."""
        x = self._clip_input(img)
        with self.autocast():
            return self.scorer.encode_image(x).float()

    def clip_features(self, img: torch.Tensor, layers: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`clip_embed` with the image tower's activations at `layers` from the same pass (none for ())."""
        if not layers:
            return self.clip_embed(img), []
        x = self._clip_input(img)
        with self.autocast():
            emb, acts = self.scorer.image_activations(x, layers)
        return emb.float(), [a.float() for a in acts]

    @staticmethod
    def to_unit(img: torch.Tensor) -> torch.Tensor:
        """A generator image in ~[-1, 1] -> [0, 1], detached, on the CPU."""
        return ((img.detach().float() + 1) / 2).clamp(0, 1).cpu()

    # -- samples and starts -----------------------------------------------------------------------------------

    def latent_avg(self) -> torch.Tensor:
        avg = getattr(self.generator, "latent_avg", None)
        if avg is None:
            avg = self.generator.mean_latent(4096, generator=torch.Generator().manual_seed(0))
            self.generator.latent_avg = avg
        return avg.reshape(1, -1).to(self.device)

    @torch.no_grad()
    def random_latent(self, **settings: Any) -> torch.Tensor:
        """(1, n_latent, D) W+ of a random z, truncated towards the mean latent (StyleCLIP's random starts).
        settings: `SampleConfig` fields (seed, truncation)."""
        cfg = resolve(SampleConfig(), settings)
        g = self.generator
        z = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(self.device)
        avg = self.latent_avg()
        w = avg + cfg.truncation * (g.get_latent(z) - avg)
        return w.unsqueeze(1).repeat(1, g.n_latent, 1)

    def load_encoder(self, encoder: Any) -> Any:
        """Use an e4e encoder for inversion starts: an `Encoder4Editing` or the path of an e4e checkpoint (loaded
        strictly, weights only, refused if it was trained with another generator). Returns it."""
        from studio.generators.e4e import Encoder4Editing, load_encoder

        if not isinstance(encoder, Encoder4Editing):
            encoder = load_encoder(encoder, self.generator)
        g = self.generator
        if encoder.config.n_latent != g.n_latent or encoder.config.style_dim != g.style_dim:
            raise ValueError(f"`encoder` gives W+ of {encoder.config.n_latent} x {encoder.config.style_dim}; this "
                             f"generator takes {g.n_latent} x {g.style_dim}")
        self.encoder = encoder.to(self.device).eval().requires_grad_(False)
        return self.encoder

    def is_latent(self, x: Any) -> bool:
        g = self.generator
        return isinstance(x, torch.Tensor) and x.shape[-1] == g.style_dim and (
            x.ndim == 1 or (x.ndim == 2 and x.shape[0] in (1, g.n_latent)) or (x.ndim == 3 and x.shape[:2] == (
                1, g.n_latent)))

    def known_start(self, latent_or_image: Any, cfg: SampleConfig) -> Start | None:
        """The start a run begins from, or None when `latent_or_image` is an image to invert first.

        None: a random start from `cfg.seed` and `cfg.truncation`. A W (D,) / (1, D) or W+ (n_latent, D) /
        (1, n_latent, D) latent. A result that can start an edit (`as_start`: a sample, an inversion with its noise
        maps, an edit's edited latent, a global direction's start). Anything else is an image."""
        g = self.generator
        x = latent_or_image
        if x is None:
            return Start(self.random_latent(seed=cfg.seed, truncation=cfg.truncation))
        if isinstance(x, Result) and callable(getattr(x, "as_start", None)):
            return x.as_start(self.device)
        if self.is_latent(x):
            w = x.detach().float().to(self.device)
            if w.ndim == 1 or (w.ndim == 2 and w.shape[0] == 1):
                w = w.reshape(1, 1, -1).repeat(1, g.n_latent, 1)
            elif w.ndim == 2:
                w = w[None]
            if not torch.isfinite(w).all():
                raise ValueError("`latent_or_image` holds non-finite values")
            return Start(w)
        if isinstance(x, torch.Tensor) and x.shape[-1] == g.style_dim:
            raise ValueError(f"`latent_or_image` as a latent must have shape ({g.style_dim},), (1, {g.style_dim}), "
                             f"({g.n_latent}, {g.style_dim}) or (1, {g.n_latent}, {g.style_dim}); got {tuple(x.shape)}")
        return None

    def plan_start(self, latent_or_image: Any, cfg: StartConfig) -> StartPlan:
        """Decide where a run starts (checking a latent's shape before any work): `known_start`, or an image to
        invert first in `cfg.num_invert_steps` steps from `cfg.seed`."""
        start = self.known_start(latent_or_image, cfg)
        if start is not None:
            return StartPlan(start)
        return StartPlan(None, latent_or_image, cfg.num_invert_steps, cfg.seed)

    def begin(self, plan: StartPlan, total: int) -> Generator[Progress, str | None, tuple[Start, bool, int]]:
        """The start of `plan`: at once when it is known; else its image inverted first by the registered inversion
        task (`INVERT_TASK`) on this session, as steps 1..`plan.invert_steps` of `total` (stage "invert"), a Stop
        reaching it. Returns (start, stopped, steps run)."""
        if plan.start is not None:
            return plan.start, False, 0
        # the registry, not an import: the session names the inversion task and runs it on itself (its encoder too)
        task = get_task(INVERT_TASK)
        inv = yield from staged(task.iterate(task.pipeline.from_pipe(self), image=plan.image,
                                             num_steps=plan.invert_steps, seed=plan.seed), 0, total, "invert")
        return inv.as_start(self.device), inv.stopped, inv.steps_run


# ----------------------------------------------------------------------------------------------------------------
# The tasks' base
# ----------------------------------------------------------------------------------------------------------------


def _through(name: str, writable: bool) -> property:
    """The session's attribute `name` as the pipeline's own (set through as well when `writable`)."""

    def get(self: StyleCLIPTaskPipeline) -> Any:
        return getattr(self.session, name)

    def put(self: StyleCLIPTaskPipeline, value: Any) -> None:
        setattr(self.session, name, value)

    return property(get, put if writable else None, doc=f"the session's `{name}`")


class StyleCLIPTaskPipeline:
    """The base of every StyleCLIP task's pipeline: a `session` and the task's own settings.

    Built from components (`generator`, `scorer`, `precision`, `cache_dir`, as `StyleCLIPSession`), from a model
    name (`from_pretrained`), or on an existing session or pipeline (`from_pipe`: shared, nothing copied or loaded,
    so the encoder and the relevance caches are the same). The session's state reads and writes as the pipeline's
    own (`pipe.cache_dir = ...` changes the session's), and its common methods are at hand (`pipe.render(...)`).
    """

    # the session's state, read and written through
    generator = _through("generator", writable=True)
    scorer = _through("scorer", writable=True)
    device = _through("device", writable=True)
    precision = _through("precision", writable=True)
    cache_dir = _through("cache_dir", writable=True)
    encoder = _through("encoder", writable=True)
    # the session's methods
    render = _through("render", writable=False)
    render_styles = _through("render_styles", writable=False)
    clip_embed = _through("clip_embed", writable=False)
    clip_features = _through("clip_features", writable=False)
    to_unit = _through("to_unit", writable=False)
    latent_avg = _through("latent_avg", writable=False)
    random_latent = _through("random_latent", writable=False)
    load_encoder = _through("load_encoder", writable=False)
    known_start = _through("known_start", writable=False)

    def __init__(self, generator: torch.nn.Module | None = None, scorer: Any = None, precision: str | None = None,
                 cache_dir: str | os.PathLike | None = None, *, session: StyleCLIPSession | None = None):
        if session is None:
            if generator is None or scorer is None:
                raise ValueError("`generator` and `scorer` are needed to build a StyleCLIP pipeline (or `session`)")
            session = StyleCLIPSession(generator, scorer, precision=precision, cache_dir=cache_dir)
        self.session = session

    @classmethod
    def from_pretrained(cls, generator: str | None = DEMO_GENERATOR, clip: str | None = None,
                        device: str | None = None, **kwargs: Any) -> Any:
        """The pipeline on a new session (`StyleCLIPSession.from_pretrained`: the same arguments)."""
        return cls(session=StyleCLIPSession.from_pretrained(generator, clip, device=device, **kwargs))

    @classmethod
    def from_pipe(cls, pipe: StyleCLIPSession | StyleCLIPTaskPipeline) -> Any:
        """This task's pipeline on `pipe`'s session (`pipe`: a session or any StyleCLIP pipeline), shared."""
        return cls(session=pipe if isinstance(pipe, StyleCLIPSession) else pipe.session)


__all__ = ["MAX_FRAMES", "EditOutput", "SampleConfig", "Start", "StartConfig", "StartPlan", "StyleCLIPSession",
           "StyleCLIPTaskPipeline", "cap_frames", "default_cache_dir", "get_lr", "staged", "start_after"]
