"""StyleCLIP global directions (the paper's Sec. 6): channel relevance (task `styleclip-relevance`) and the edit
along a global direction from a neutral to a target text (task `styleclip-global`).

Each StyleSpace channel's CLIP relevance is precomputed once per generator and CLIP (StyleCLIP's `GetFs`): for
`num_samples` random styles, the channel moves by +-`magnitude` std, both images are embedded with CLIP, and the
normalised difference of the embeddings is averaged over the samples (the paper: 100 image pairs, +-5 std); toRGB
channels are left out, as StyleCLIP does. By default its first-order limit is computed instead, from the Jacobian
of the CLIP embedding (`method='jacobian'`, ~8x less work for FFHQ). The result is cached on disk, keyed by the
generator's checkpoint hash, the CLIP spec and these settings; the running sums are kept on disk too, so a stopped
precompute resumes where it stopped. Or the relevance is StyleCLIP's published one (`fs3.npy`, CLIP ViT-B/32):
`import_directions`, or `<checkpoint name>.fs3.npy` next to the generator's checkpoint, read with
`numpy.load(allow_pickle=False)`; the channels' std is computed from the generator (StyleCLIP ships it pickled).
An edit then takes the text direction (target - neutral over a prompt-template ensemble, `GetDt`), keeps the
channels whose relevance to it is at least beta, and moves them by alpha std (`GetBoundary`, `SplitS`); alpha 4.1
and beta 0.15 are the StyleCLIP global-direction notebook's.

The pipeline (`StyleCLIPGlobalPipeline`, both tasks) runs on a StyleCLIP session (pipelines/styleclip_core.py),
which holds the in-memory relevance caches (`relevance`, `published`) that every pipeline on it shares.
A global-direction run whose relevance is not cached yet computes it first, inline, as its
"relevance" stage (and an image start is inverted first, as its "invert" stage), so that Stop reaches both.
A stopped relevance run returns the average over the samples done, marked stopped; only their running sums are
kept (`*.partial.pt`), and the next run goes on from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import register
from pipelines.styleclip_core import Start, StartConfig, StyleCLIPTaskPipeline, staged, start_after
from studio.images import to_pil
from studio.progress import Progress, Result, json_safe
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve, run_settings

GRID_SAMPLES = 4  # samples shown in a relevance result's image
THUMB = 128  # px: their largest side
RELEVANCE_METHODS = ("finite", "jacobian")
TEMPLATE_SETS = ("imagenet", "curated", "shapes")
DIRECTION_SOURCES = ("auto", "published", "computed")
FS3_SUFFIX = ".fs3.npy"  # published directions next to a checkpoint: stylegan2-ffhq-config-f.pt -> ...-f.fs3.npy
PUBLISHED_CLIP_ARCHS = ("ViT-B-32",)  # StyleCLIP's fs3.npy files are CLIP ViT-B/32 (OpenAI) directions
SAVE_PARTIAL_S = 60.0  # a running relevance precompute writes its partial sums at most this often


# ----------------------------------------------------------------------------------------------------------------
# Settings and results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RelevanceConfig:
    """Settings of the channel-relevance precompute (StyleCLIP `GetFs`)."""

    num_samples: int = param(100, 1, 100_000, ui=(1, 500), label="Relevance samples (computed once per generator, "
                                                                  "then cached)",
                             help="random styles the channel directions are averaged over; StyleCLIP (paper, "
                                  "global directions): 100 image pairs")
    seed: int = param(0, 0, SEED_MAX, control=False, help="draws the styles for the statistics and the samples")
    magnitude: float = param(5.0, 1e-3, 100.0, control=False,
                             help="each channel moves by +- magnitude std; StyleCLIP: +-5")
    method: str = param("jacobian", choices=RELEVANCE_METHODS, control=False,
                        help="'jacobian' (ours, the default): the first-order limit of StyleCLIP's finite differences "
                             "from D reverse-mode rows per sample, ~8x less work for FFHQ; 'finite': StyleCLIP's own "
                             "(2 x channels passes per sample; close to 'jacobian' only for a small magnitude)")
    batch_size: int = param(32, 1, 4096, control=False, help="images per generator + CLIP pass; ours: 32")
    std_samples: int = param(2000, 2, 10**6, control=False,
                             help="mapped random z for each channel's std; StyleCLIP's manipulator keeps 2000 styles")
    use_cache: bool = param(True, control=False, help="read and write the on-disk cache (and the pipeline's own)")


@dataclass
class GlobalDirectionConfig(StartConfig):
    """Settings of one global-direction edit; the relevance it needs is `RelevanceConfig`'s with these samples,
    method and cache use."""

    alpha: float = param(4.1, -100.0, 100.0, ui=(-10.0, 10.0), step=0.1, label="α: strength (std units)",
                         help="how far the kept channels move, in std units; StyleCLIP global-direction notebook: 4.1")
    beta: float = param(0.15, 0.0, 1.0, ui=(0.0, 0.5), step=0.01,
                        label="β: disentanglement (keep channels with relevance ≥ β)",
                        help="channels whose |relevance| to the text direction is below beta stay; StyleCLIP "
                             "global-direction notebook: 0.15 (the paper uses 0.08-0.3)")
    num_samples: int = param(100, 1, 100_000, ui=(1, 500), label="Relevance samples (computed once per generator, "
                                                                  "then cached)",
                             help="samples of the channel relevance it uses (`RelevanceConfig.num_samples`); "
                                  "StyleCLIP: 100")
    relevance_method: str = param("jacobian", choices=RELEVANCE_METHODS, control=False,
                                  help="`RelevanceConfig.method`: 'jacobian' (ours, the default) or StyleCLIP's "
                                       "'finite' differences")
    directions: str = param("auto", choices=DIRECTION_SOURCES, control=False,
                            help="where the channel relevance comes from: 'published' (StyleCLIP's fs3.npy for this "
                                 "generator, `import_directions` or the file next to the checkpoint), 'computed' "
                                 "(`iter_relevance`, cached), 'auto': published when there is one for this generator "
                                 "and CLIP, else computed")
    templates: str | None = param(None, choices=TEMPLATE_SETS, nullable=True, control=False,
                                  help="prompt templates of the text direction; None: 'shapes' for the demo CLIP, "
                                       "else 'imagenet' (StyleCLIP GetDt: CLIP's 80 ImageNet templates)")
    use_cache: bool = param(True, control=False, help="use (and fill) the relevance cache")


@dataclass
class ChannelRelevance:
    """Per-StyleSpace-channel CLIP directions (StyleCLIP's `fs3`) and channel statistics."""

    relevance: torch.Tensor  # (C, D) unit CLIP direction of each channel; zeros for channels not analysed
    std: torch.Tensor  # (C,) standard deviation of each style channel over mapped random z
    analysed: torch.Tensor  # (C,) bool: False for toRGB channels (StyleCLIP leaves them out)
    layer_sizes: list[int]  # channels per style layer, in `generator.style_layers` order
    layer_names: list[str]
    num_samples: int
    generator_id: str
    path: str | None = None  # the cache file (or the published file it was imported from)
    source: str = "computed"  # or "published" (an fs3-layout file, `import_directions`)

    def to_fs3(self) -> np.ndarray:
        """The relevance in StyleCLIP's `fs3.npy` layout: (analysed channels, D) float32, the rows of every non-toRGB
        style layer in `layer_names` order (which is StyleCLIP's), channels in order within a layer."""
        return self.relevance[self.analysed].float().numpy().astype(np.float32)

    def locate(self, flat_index: int) -> tuple[str, int]:
        """(layer name, channel within layer) of a flat channel index."""
        start = 0
        for name, size in zip(self.layer_names, self.layer_sizes):
            if flat_index < start + size:
                return name, flat_index - start
            start += size
        raise ValueError(f"`flat_index` must be < {start}, got {flat_index}")


@dataclass
class RelevanceOutput(Result):
    """A channel-relevance run. `relevance`: the `ChannelRelevance` (over the samples done when stopped, then not
    cached); `cached`: read from the cache instead of computed; `image`: the first samples analysed, side by side.
    scores: channels (analysed), samples (done)."""

    task = "styleclip-relevance"
    relevance: ChannelRelevance | None = None
    cached: bool = False


@dataclass
class GlobalDirectionOutput(Result):
    """A global-direction edit. `image` / `original`: after / before (PIL); scores: clip_score and
    clip_score_before (CLIPScore of after / before for the target text). `latent` is the start W+ (the edit lives
    in StyleSpace: `styles` are the edited style vectors, `direction` the per-layer delta s for alpha = 1);
    `top_channels`: (layer, channel, relevance) of the channels moved, largest |relevance| first. A run stopped
    before the edit shows the start as `image`, with `num_channels` 0."""

    task = "styleclip-global"
    original: Image.Image | None = None
    image_tensor: torch.Tensor | None = None  # (1, 3, H, W) in [0, 1], CPU
    original_tensor: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    styles: list[torch.Tensor] = field(default_factory=list)
    direction: list[torch.Tensor] = field(default_factory=list)
    neutral: str = ""
    target: str = ""
    num_channels: int = 0
    top_channels: list[tuple[str, int, float]] = field(default_factory=list)
    inversion: Result | None = None  # the `InversionOutput` the start came from
    directions: str = ""  # where the relevance came from: "published" or "computed"

    def as_start(self, device: torch.device) -> Start:
        """The start of this edit (the edit lives in StyleSpace), as the start of another."""
        return start_after(self.latent, self.inversion, device)


def _thumbnail(image: Image.Image) -> Image.Image:
    if max(image.size) <= THUMB:
        return image
    factor = -(-max(image.size) // THUMB)  # whole factor: the same pixels on every run
    return image.reduce(factor)


def _side_by_side(images: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width
    return out


# ----------------------------------------------------------------------------------------------------------------
# The methods
# ----------------------------------------------------------------------------------------------------------------


class StyleCLIPGlobalPipeline(StyleCLIPTaskPipeline):
    """Channel relevance and global-direction edits on a StyleCLIP session (see the module docstring).
    `relevance_config` / `global_config`: the defaults (`RelevanceConfig`, `GlobalDirectionConfig`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.relevance_config = RelevanceConfig()
        self.global_config = GlobalDirectionConfig()

    # -- channel relevance ----------------------------------------------------------------------------------

    def _relevance_stem(self, cfg: RelevanceConfig, num_samples: int | None) -> str:
        gid = self.session.generator.identity()
        clip_id = hashlib.sha256(str(self.session.scorer.spec).encode()).hexdigest()[:12]
        detail = f"m{cfg.magnitude:g}" if cfg.method == "finite" else "jac"
        count = "" if num_samples is None else f"-n{num_samples}"
        return f"relevance-{gid[:16]}-{clip_id}{count}-s{cfg.seed}-{detail}"

    def _relevance_path(self, cfg: RelevanceConfig) -> Path:
        return self.session.cache_dir / f"{self._relevance_stem(cfg, cfg.num_samples)}.pt"

    def cached_relevance(self, cfg: RelevanceConfig) -> ChannelRelevance | None:
        """The relevance for `cfg` from the session's memory or the disk cache, else None."""
        path = self._relevance_path(cfg)
        if str(path) in self.session.relevance:
            return self.session.relevance[str(path)]
        if not path.is_file():
            return None
        layers = self.session.generator.style_layers
        sizes = [layer.channels for layer in layers]
        data = torch.load(path, map_location="cpu", weights_only=True)
        if [int(x) for x in data["layer_sizes"]] != sizes:
            return None
        rel = ChannelRelevance(data["relevance"], data["std"], data["analysed"].bool(), sizes,
                               [layer.name for layer in layers], int(data["num_samples"]),
                               self.session.generator.identity(), str(path))
        self.session.relevance[str(path)] = rel
        return rel

    def _relevance_draws(self, cfg: RelevanceConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(z for the channel statistics (std_samples, D), one z (1, D) per sample), all from `cfg.seed` (CPU)."""
        gen = torch.Generator().manual_seed(cfg.seed)
        z_std = torch.randn(cfg.std_samples, self.session.generator.style_dim, generator=gen)
        return z_std, [torch.randn(1, self.session.generator.style_dim, generator=gen) for _ in range(cfg.num_samples)]

    def _base_styles(self, z: torch.Tensor) -> list[torch.Tensor]:
        g = self.session.generator
        with torch.no_grad():
            return g.w_to_styles(g.get_latent(z.to(self.session.device)).unsqueeze(1).repeat(1, g.n_latent, 1))

    def _show_styles(self, styles: list[torch.Tensor]) -> Image.Image:
        with torch.no_grad(), self.session.autocast():
            return to_pil(self.session.to_unit(self.session.generator.synthesis(styles).float()))

    def _jacobian_directions(self, base: list[torch.Tensor], batch_size: int,
                             max_rows: int | None = None) -> torch.Tensor:
        """(C, D) d n / d s_c for every style channel c at `base`, n the unit CLIP embedding.

        Reverse mode, `batch_size` rows of the Jacobian per pass: the sample is replicated k times and copy i
        back-propagates the one-hot cotangent e_(d0+i), so its style gradients are row d0+i of the Jacobian.
        `max_rows` (benchmarks) stops after that many rows, returning (C, rows).
        """
        g, rows = self.session.generator, []
        dim = None
        d0 = 0
        while (dim is None or d0 < dim) and (max_rows is None or d0 < max_rows):
            k = batch_size if dim is None else min(batch_size, dim - d0)
            styles = [s.detach().repeat(k, 1).requires_grad_(True) for s in base]
            with self.session.autocast():
                img = g.synthesis(styles).float()
            emb = self.session.clip_embed(img)  # (k, D)
            dim = emb.shape[-1]
            k = min(k, dim - d0)
            cot = torch.zeros_like(emb)
            cot[torch.arange(k), d0 + torch.arange(k)] = 1.0
            grads = torch.autograd.grad(emb, styles, grad_outputs=cot)
            rows.append(torch.cat([gr[:k].float() for gr in grads], dim=1))  # (k, C), kept on the device
            d0 += k
        return torch.cat(rows).t().cpu()  # (C, D): one transfer per sample

    @torch.no_grad()
    def _finite_directions(self, base: list[torch.Tensor], channels: list[int], std: torch.Tensor,
                           magnitude: float, batch_size: int) -> torch.Tensor:
        """(C, D) unit differences n(s + m std_c e_c) - n(s - m std_c e_c) for `channels` (zeros elsewhere)."""
        g = self.session.generator
        offsets = np.cumsum([0] + [s.shape[1] for s in base])
        layer_of = np.searchsorted(offsets, np.arange(offsets[-1]), side="right") - 1
        out: torch.Tensor | None = None
        step = max(1, batch_size // 2)
        for k0 in range(0, len(channels), step):
            chunk = channels[k0:k0 + step]
            n = len(chunk)
            styles = [s.repeat(2 * n, 1) for s in base]  # rows [0, n): minus, [n, 2n): plus
            for r, c in enumerate(chunk * 2):
                li = int(layer_of[c])
                styles[li][r, c - offsets[li]] += (1.0 if r >= n else -1.0) * magnitude * std[c]
            with self.session.autocast():
                img = g.synthesis(styles).float()
            emb = self.session.clip_embed(img)  # (2n, D) normalised
            diff = F.normalize(emb[n:] - emb[:n], dim=-1).cpu()
            if out is None:
                out = torch.zeros(int(offsets[-1]), diff.shape[-1])
            out[chunk] = diff
        return out

    def _partial_path(self, cfg: RelevanceConfig) -> Path:
        """The running sums of a relevance precompute (any sample count: sample k is the same z for every count)."""
        return self.session.cache_dir / f"{self._relevance_stem(cfg, None)}-std{cfg.std_samples}.partial.pt"

    def _read_partial(self, cfg: RelevanceConfig, sizes: list[int]
                      ) -> tuple[torch.Tensor, int] | None:
        """(sum of the per-sample directions, samples done) from the partial cache, when it fits `cfg`."""
        path = self._partial_path(cfg)
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            acc, done = data["acc"], int(data["done"])
        except Exception:  # a torn or foreign file: start again (it is overwritten on the next save)
            return None
        if [int(x) for x in data["layer_sizes"]] != sizes or not 0 < done <= cfg.num_samples:
            return None
        return acc.float(), done

    def _write_partial(self, cfg: RelevanceConfig, acc: torch.Tensor, done: int,
                       sizes: list[int]) -> None:
        path = self._partial_path(cfg)
        if path.is_file():  # never replace the sums of more samples (a larger run's) with fewer
            try:
                if int(torch.load(path, map_location="cpu", weights_only=True)["done"]) > done:
                    return
            except Exception:  # a torn file: replace it
                pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
        torch.save({"acc": acc, "done": torch.tensor(done), "layer_sizes": torch.tensor(sizes)}, tmp)
        os.replace(tmp, path)

    @torch.no_grad()
    def channel_std(self, **settings: Any) -> torch.Tensor:
        """(C,) std of every style channel over `std_samples` mapped random z (StyleCLIP `GetCodeMS`; it ships
        them as a pickle, `S_mean_std`, which is not read here): the mapping network and the affine layers only.
        settings: `RelevanceConfig` fields (seed, std_samples)."""
        cfg = resolve(self.relevance_config, settings)
        g = self.session.generator
        z_std, _ = self._relevance_draws(dataclasses.replace(cfg, num_samples=0))
        w = g.get_latent(z_std.to(self.session.device)).unsqueeze(1).repeat(1, g.n_latent, 1)
        return torch.cat([s.float().std(0) for s in g.w_to_styles(w)]).cpu()

    def iter_relevance(self, **settings: Any) -> Iterator[Progress | RelevanceOutput]:
        """Each non-toRGB StyleSpace channel's unit CLIP direction (StyleCLIP `GetFs`), cached on disk.

        Yields a `Progress` per sample (its image as the preview; metrics: samples done and `eta_s`, the seconds
        left at this run's pace), then the `RelevanceOutput`; a cached relevance is returned at once. settings: any
        `RelevanceConfig` field. `method='jacobian'` (the default): the first-order limit of StyleCLIP's finite
        differences, the normalised derivative of the unit embedding with respect to each channel from D (CLIP
        width) reverse-mode rows per sample, `batch_size` rows per generator + CLIP pass on the device: about
        3 * D instead of 2 * channels pass-equivalents. `method='finite'` (StyleCLIP's): for each sample style s
        and channel c, render s +- magnitude * std_c, embed both with CLIP, normalise the difference of the
        normalised embeddings; 2 * channels * num_samples passes (FFHQ 1024: 6048 channels -> 1.2 M passes for
        100 samples). Either way the per-sample directions are averaged and normalised again; large +-5 std moves
        are not linear, so the two agree closely only for a small magnitude.

        Resumable: the running sum over the samples done is kept on disk (`*.partial.pt` in the cache folder,
        written on Stop, at the end, and at most every SAVE_PARTIAL_S seconds), and the next run with the same
        generator, CLIP, seed and method starts after them -- with this or a larger `num_samples` (sample k is the
        same draw for every count). On "stop" the average over the samples done is returned, marked stopped; only
        a finished run writes the final cache.
        """
        t0 = time.perf_counter()
        cfg = resolve(self.relevance_config, settings)
        g = self.session.generator
        layers = g.style_layers
        sizes, names = [layer.channels for layer in layers], [layer.name for layer in layers]
        z_std, z_samples = self._relevance_draws(cfg)
        cached = self.cached_relevance(cfg) if cfg.use_cache else None
        shown = min(GRID_SAMPLES, cfg.num_samples)

        def result(rel: ChannelRelevance, thumbs: list[Image.Image], done: int, stopped: bool,
                   resumed: int = 0) -> RelevanceOutput:
            run = max(1, done - resumed)
            return RelevanceOutput(
                image=_side_by_side(thumbs), relevance=rel, cached=cached is not None, seed=cfg.seed,
                scores={"channels": int(rel.analysed.sum()), "samples": done, "resumed_from": resumed},
                timings={"total_s": time.perf_counter() - t0, "per_step_s": (time.perf_counter() - t0) / run},
                settings=run_settings(cfg), stopped=stopped, steps_run=0 if cached else done - resumed,
                notice=self.session.scorer.notice)

        with oom_guard("StyleCLIP channel relevance"):
            if cached is not None:
                thumbs = [_thumbnail(self._show_styles(self._base_styles(z))) for z in z_samples[:shown]]
                yield result(cached, thumbs, cached.num_samples, False)
                return

            # 1. channel statistics over mapped random z (StyleCLIP `GetCodeMS`)
            with torch.no_grad():
                w = g.get_latent(z_std.to(self.session.device)).unsqueeze(1).repeat(1, g.n_latent, 1)
                std = torch.cat([s.float().std(0) for s in g.w_to_styles(w)])  # (C,)
            analysed = torch.cat([torch.full((c,), not layer.is_rgb) for c, layer in zip(sizes, layers)])
            channels = analysed.nonzero().flatten().tolist()

            # 2. +- magnitude * std per channel (or the Jacobian), per sample, batched; resumed after the samples
            # a stopped run left on disk
            partial = self._read_partial(cfg, sizes) if cfg.use_cache else None
            acc: torch.Tensor | None = None  # (C, D) sum over samples of unit embedding differences
            resumed = 0
            if partial is not None:
                acc, resumed = partial
            thumbs = [_thumbnail(self._show_styles(self._base_styles(z))) for z in z_samples[:min(resumed, shown)]]
            stopped, done = False, resumed
            t_run, saved_at = time.perf_counter(), time.perf_counter()
            for done, z in enumerate(z_samples[resumed:], start=resumed + 1):
                base = self._base_styles(z)
                if cfg.method == "jacobian":
                    with torch.enable_grad():
                        diff = F.normalize(self._jacobian_directions(base, cfg.batch_size), dim=-1)
                else:
                    diff = self._finite_directions(base, channels, std, cfg.magnitude, cfg.batch_size)
                acc = diff if acc is None else acc + diff
                preview = self._show_styles(base)
                if len(thumbs) < shown:
                    thumbs.append(_thumbnail(preview))
                per_sample = (time.perf_counter() - t_run) / (done - resumed)
                if cfg.use_cache and done < cfg.num_samples and time.perf_counter() - saved_at > SAVE_PARTIAL_S:
                    self._write_partial(cfg, acc, done, sizes)
                    saved_at = time.perf_counter()
                metrics = {"samples": done, "eta_s": per_sample * (cfg.num_samples - done)}
                command = yield Progress(done, cfg.num_samples, preview, metrics)
                if command == "stop" and done < cfg.num_samples:
                    stopped = True
                    break
            if cfg.use_cache and done > resumed:  # the work done is kept, finished or not
                self._write_partial(cfg, acc, done, sizes)
            relevance = F.normalize(acc / done, dim=-1) * analysed[:, None]

        # 3. cache (only a finished run)
        path = self._relevance_path(cfg)
        rel = ChannelRelevance(relevance, std.cpu(), analysed, sizes, names, done, g.identity(),
                               None if stopped else str(path))
        if not stopped and cfg.use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
            torch.save({"relevance": relevance, "std": std.cpu(), "analysed": analysed,
                        "layer_sizes": torch.tensor(sizes), "num_samples": torch.tensor(done)}, tmp)
            os.replace(tmp, path)
            self.session.relevance[str(path)] = rel
        yield result(rel, thumbs, done, stopped, resumed)

    def channel_relevance(self, *, callback: Callable | None = None, **settings: Any) -> RelevanceOutput:
        """Run `iter_relevance(**settings)` to the end; `callback(done, total, preview)` returning False stops it.
        The `ChannelRelevance` is the result's `relevance`."""
        return drain(self.iter_relevance(**settings), callback)

    # -- published directions (StyleCLIP's fs3.npy) ---------------------------------------------------------

    def fs3_layout(self) -> str:
        """The layout a published-directions array must have for this generator and CLIP, in words."""
        layers = [layer for layer in self.session.generator.style_layers if not layer.is_rgb]
        n = sum(layer.channels for layer in layers)
        return (f"a float array of shape ({n}, {self.session.scorer.embed_dim}): one unit CLIP direction per "
                f"StyleSpace channel of the {len(layers)} non-toRGB modulated convolutions, in StyleCLIP's order (the "
                "4x4 conv, then each resolution's upsampling conv and second conv; channels in order within a "
                "layer), as StyleCLIP's GetFs writes fs3.npy (6048 x 512 for a 1024-px generator and CLIP ViT-B/32)")

    def import_directions(self, source: Any, **settings: Any) -> ChannelRelevance:
        """Read published channel relevance (StyleCLIP's `fs3.npy`) for this generator and use it for the global
        directions (`directions='auto'` or `'published'`). Returns the `ChannelRelevance`.

        `source`: a `.npy` path (read with `numpy.load(allow_pickle=False)`) or an array, in StyleCLIP's layout
        (`fs3_layout()`); its rows go to the non-toRGB channels of `generator.style_layers` (the same order), the
        toRGB channels get none. The channels' std, which StyleCLIP ships as a pickle, is computed from the
        generator instead (`channel_std`; settings: `RelevanceConfig`'s seed and std_samples). A file of another
        shape, with toRGB rows, of rows that are not unit vectors, or not finite is refused with ValueError naming
        the expected layout. The array does not say which CLIP made it: StyleCLIP's are CLIP ViT-B/32 (OpenAI).
        """
        cfg = resolve(self.relevance_config, settings)
        layout = self.fs3_layout()
        where = "array"
        if isinstance(source, np.ndarray):
            arr = source
        else:
            where = repr(str(source))
            path = Path(source)
            if path.suffix != ".npy" or not path.is_file():
                raise ValueError(f"`source` {where}: not a .npy file; expected {layout}")
            try:
                arr = np.load(path, allow_pickle=False)
            except ValueError as err:  # an object array (a pickle inside) or not an .npy file at all
                raise ValueError(f"`source` {where} cannot be read without unpickling ({err}); expected {layout}"
                                 ) from None
        g = self.session.generator
        layers = g.style_layers
        sizes = [layer.channels for layer in layers]
        analysed = torch.cat([torch.full((c,), not layer.is_rgb) for c, layer in zip(sizes, layers)])
        n, dim = int(analysed.sum()), self.session.scorer.embed_dim
        if arr.ndim == 4 and arr.shape[0] == n and arr.shape[-1] == dim:
            raise ValueError(f"`source` {where} has shape {arr.shape}: StyleCLIP's per-sample embeddings "
                             f"(single_channel.npy), not the averaged directions; expected {layout}")
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"`source` {where} has shape {arr.shape} and dtype {arr.dtype}; expected {layout}")
        if arr.shape == (dim, n) and n != dim:
            raise ValueError(f"`source` {where} has shape {arr.shape}: transposed; expected {layout}")
        if arr.shape == (sum(sizes), dim):
            raise ValueError(f"`source` {where} has shape {arr.shape}: a row for every style channel, toRGB ones "
                             f"included; expected {layout}")
        if arr.shape != (n, dim):
            raise ValueError(f"`source` {where} has shape {arr.shape}; expected {layout}")
        if not np.isfinite(arr).all():
            raise ValueError(f"`source` {where} holds non-finite values; expected {layout}")
        norms = np.linalg.norm(arr.astype(np.float64), axis=1)
        if not np.all((np.abs(norms - 1) < 1e-3) | (norms == 0)):
            bad = int(np.argmax(np.abs(norms - 1) * (norms != 0)))
            raise ValueError(f"`source` {where}: row {bad} has length {norms[bad]:.4g}, not 1 (GetFs normalises "
                             f"every row); expected {layout}")
        relevance = torch.zeros(sum(sizes), dim)
        relevance[analysed] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        analysed = analysed & (relevance.abs().sum(-1) > 0)  # an all-zero row: a channel nobody analysed
        std = self.channel_std(seed=cfg.seed, std_samples=cfg.std_samples)
        rel = ChannelRelevance(relevance, std, analysed, sizes, [layer.name for layer in layers], 0, g.identity(),
                               None if isinstance(source, np.ndarray) else str(source), source="published")
        self.session.published = rel
        return rel

    def published_file(self) -> Path | None:
        """The published-directions file for this generator, if one is where it belongs: `<checkpoint>.fs3.npy`
        next to the checkpoint it was loaded from, or in `$STUDIO_STYLEGAN_DIR` (default
        ~/.cache/studio/stylegan2) under the checkpoint's name; e.g. stylegan2-ffhq-config-f.fs3.npy for
        ffhq-1024."""
        from studio.generators.checkpoints import checkpoint_dir

        source = getattr(self.session.generator, "checkpoint_path", None)
        if not source:
            return None
        source = Path(source)
        for candidate in (source.with_name(source.stem + FS3_SUFFIX), checkpoint_dir() / (source.stem + FS3_SUFFIX)):
            if candidate.is_file():
                return candidate
        return None

    def published_directions(self, required: bool = False) -> ChannelRelevance | None:
        """The published relevance for this generator and CLIP: one given to `import_directions`, else the file
        `published_file()` finds when the CLIP is the one StyleCLIP's files were made with; else None, or (with
        `required`) a ValueError saying what is missing."""
        rel = self.session.published
        if rel is not None:
            return rel
        path = self.published_file()
        arch = getattr(getattr(self.session.scorer, "source", None), "arch", None)
        kind = getattr(getattr(self.session.scorer, "source", None), "kind", None)
        clip_ok = arch in PUBLISHED_CLIP_ARCHS and kind not in ("demo", "random")
        if path is not None and clip_ok:
            return self.import_directions(path)
        if required:
            if path is None:
                raise ValueError("`directions` 'published': no published directions for this generator; put "
                                 "StyleCLIP's fs3.npy next to its checkpoint as <checkpoint name>.fs3.npy (see "
                                 "`published_file`) or call `import_directions`")
            raise ValueError(f"`directions` 'published': {path} holds CLIP {'/'.join(PUBLISHED_CLIP_ARCHS)} "
                             f"directions, but this pipeline's CLIP is {self.session.scorer.spec!r} ({kind} weights); "
                             "use that CLIP, or directions='computed'")
        return None

    # -- global directions ----------------------------------------------------------------------------------

    def text_direction(self, neutral: str, target: str,
                       templates: str | list[str] | None = None) -> torch.Tensor:
        """Unit CLIP text direction target - neutral over a prompt-template ensemble (StyleCLIP `GetDt`)."""
        if templates is None:
            templates = "shapes" if getattr(self.session.scorer, "is_demo", False) else "imagenet"
        emb = self.session.scorer.encode_prompts([neutral, target], templates=templates)
        return F.normalize(emb[1] - emb[0], dim=0).cpu()

    @staticmethod
    def style_direction(relevance: ChannelRelevance, text_dir: torch.Tensor, beta: float) -> tuple[torch.Tensor, int]:
        """Flat delta s for alpha = 1 and the number of channels kept (StyleCLIP `GetBoundary` + `SplitS`)."""
        r = relevance.relevance @ text_dir  # (C,)
        r = torch.where(r.abs() < beta, torch.zeros_like(r), r) * relevance.analysed
        kept = int((r != 0).sum())
        if kept == 0:
            best = float((relevance.relevance @ text_dir).abs().max())
            if best < 1e-6:  # no channel responds: the texts embed alike, lowering beta cannot help
                raise ValueError("`neutral` and `target` give no direction to move along: CLIP embeds them (nearly) "
                                 "the same; make the target say what should change")
            raise ValueError(f"`beta` {beta:g} leaves no channels to move: the largest channel relevance for this "
                             f"edit is {best:.3f}; set beta below {best:.3f} (StyleCLIP uses 0.08-0.3)")
        return r / r.abs().max() * relevance.std, kept

    def iter_global_direction(self, latent_or_image: Any = None, neutral: str = "",
                              target: str = "", **settings: Any) -> Iterator[Progress | GlobalDirectionOutput]:
        """Edit along StyleCLIP's global direction from `neutral` to `target` text.

        `latent_or_image` as for `iter_edit` (None: a random start from `seed`; an image is inverted first).
        Yields the stages' progress ("invert" for an image, "relevance" when it is not cached yet), then one step
        for the edit itself (its image as the preview), then the `GlobalDirectionOutput`. settings: any
        `GlobalDirectionConfig` field. A beta above every channel's relevance raises ValueError saying how far to
        lower it. Stopped before the edit, the result is the start image, marked stopped.
        """
        t0 = time.perf_counter()
        # 1. check inputs
        neutral, target = check_text(neutral, "neutral"), check_text(target, "target")
        cfg = resolve(self.global_config, settings)
        rel_settings = {"num_samples": cfg.num_samples, "method": cfg.relevance_method, "use_cache": cfg.use_cache}
        rcfg = resolve(self.relevance_config, rel_settings)
        plan = self.session.plan_start(latent_or_image, cfg)
        rel = None if cfg.directions == "computed" else self.published_directions(cfg.directions == "published")
        source = "computed" if rel is None else "published"
        if rel is None and cfg.use_cache:
            rel = self.cached_relevance(rcfg)
        n_inv = plan.invert_steps
        n_rel = 0 if rel is not None else cfg.num_samples
        total = n_inv + n_rel + 1

        with oom_guard("StyleCLIP global direction"):
            # 2. the start latent, and the relevance
            start, stopped, steps = yield from self.session.begin(plan, total)
            t_start = time.perf_counter()
            if rel is None and not stopped:
                out = yield from staged(self.iter_relevance(**rel_settings), n_inv, total, "relevance")
                rel, stopped, steps = out.relevance, out.stopped, n_inv + out.steps_run
            t_rel = time.perf_counter()

            # 3. direction in StyleSpace and the edit
            with torch.no_grad():
                styles = self.session.generator.w_to_styles(start.latent)
                with self.session.autocast():
                    img0 = self.session.generator.synthesis(styles, noise=start.noise).float()
                text = self.session.scorer.encode_text([target]).to(self.session.device)
                before = 100 * float((self.session.clip_embed(img0) * text).sum().clamp(min=0))
            original = self.session.to_unit(img0)
            edited, delta_layers, kept, top, after, img1 = styles, [], 0, [], before, original
            if not stopped:
                text_dir = self.text_direction(neutral, target, cfg.templates)  # (D,)
                delta, kept = self.style_direction(rel, text_dir, cfg.beta)
                delta_layers = list(delta.to(self.session.device).split(rel.layer_sizes))
                with torch.no_grad():
                    edited = [s + cfg.alpha * d for s, d in zip(styles, delta_layers)]
                    with self.session.autocast():
                        img = self.session.generator.synthesis(edited, noise=start.noise).float()
                    after = 100 * float((self.session.clip_embed(img) * text).sum().clamp(min=0))
                img1, steps = self.session.to_unit(img), total
                r = rel.relevance @ text_dir
                order = r.abs().argsort(descending=True)[:kept][:10].tolist()
                top = [(*rel.locate(i), float(r[i])) for i in order]
                yield Progress(total, total, to_pil(img1), {"clip_score": after}, stage="edit")
            t_edit = time.perf_counter()

        # 4. package; an edit that lowered the target's CLIPScore says so (issue 16: it said nothing)
        worse = None if stopped or after >= before else (
            f"The edit lowered the CLIPScore for “{target}” ({before:.1f} → {after:.1f}): along this direction the "
            "image moves away from the target. Try a smaller α or its opposite sign, another β, or neutral and target "
            "texts that differ only in what should change.")
        yield GlobalDirectionOutput(
            image=to_pil(img1), original=to_pil(original), image_tensor=img1, original_tensor=original,
            latent=start.latent.cpu(), styles=[s.cpu() for s in edited], direction=[d.cpu() for d in delta_layers],
            neutral=neutral, target=target, num_channels=kept, top_channels=top, inversion=start.inversion,
            directions=source,
            scores={"clip_score": after, "clip_score_before": before},
            timings={"start_s": t_start - t0, "relevance_s": t_rel - t_start, "edit_s": t_edit - t_rel,
                     "total_s": time.perf_counter() - t0},
            seed=cfg.seed, settings={"neutral": neutral, "target": target, **json_safe(dataclasses.asdict(cfg))},
            stopped=stopped, steps_run=steps,
            notice=" ".join(n for n in (worse, self.session.scorer.notice) if n) or None)

    def global_direction(self, latent_or_image: Any = None, neutral: str = "", target: str = "",
                         *, callback: Callable | None = None, **settings: Any) -> GlobalDirectionOutput:
        """Run `iter_global_direction(...)` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_global_direction(latent_or_image, neutral, target, **settings), callback)


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------

register(Task(name="styleclip-global", title="Global direction (StyleCLIP)", config=GlobalDirectionConfig,
              pipeline=StyleCLIPGlobalPipeline, method="iter_global_direction", models=("generator", "clip"),
              load=StyleCLIPGlobalPipeline.from_pretrained,
              inputs=(Input("latent_or_image", "state", required=False,
                            help="None (a random start from the seed), a latent, an earlier result, or an image to "
                                 "invert first"),
                      Input("neutral", "text", help="what the image shows now, e.g. 'a face'"),
                      Input("target", "text", help="what it should show, e.g. 'a smiling face'"))))
register(Task(name="styleclip-relevance", title="Channel relevance (StyleCLIP)", config=RelevanceConfig,
              pipeline=StyleCLIPGlobalPipeline, method="iter_relevance", models=("generator", "clip"),
              load=StyleCLIPGlobalPipeline.from_pretrained, inputs=()))

__all__ = ["ChannelRelevance", "GlobalDirectionConfig", "GlobalDirectionOutput", "RelevanceConfig", "RelevanceOutput",
           "StyleCLIPGlobalPipeline"]
