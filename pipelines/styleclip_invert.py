"""StyleCLIP inversion (task `styleclip-invert`): a real image to a W+ latent by optimisation, and where an edit
starts.

After rosinality/stylegan2-pytorch `projector.py`: start from the mean w of 10 000 mapped random z, Adam with its
ramped learning rate (`get_lr`), noise on the latent (`latent_noise` times the std of w) ramped down to zero over
the first `noise_ramp` of the run, and the per-layer noise maps optimised too with its multi-scale autocorrelation
penalty (`noise_regularize`) and renormalised after every step. The loss is pixel MSE, a perceptual term in place
of the projector's LPIPS (whose VGG weights are not here): the scorer's image-tower activations at two depths, as
CLIPasso's geometric loss reads them, each unit-normalised over channels and compared by squared distance (LPIPS,
Zhang et al. 2018, Eq. 1, with unit layer weights), and a CLIP-embedding term (1 - cos between the embeddings of
the render and of the target). The result is the best iterate seen (lowest loss; the start counts as step 0), not
the last one, so a Stop keeps it; the kept latent is the one that was rendered and scored (with the latent noise
of that step), so its image's loss is exactly the lowest loss reported.

Optionally an e4e encoder (`studio.generators.e4e`, Tov et al. 2021) gives the start in one forward pass
(`init`: "auto" uses one when it is loaded or found, "encoder" requires one, "mean" never does); the optimisation
then refines the encoder's guess, starting from the generator's stored noise maps, which e4e renders with.

This module is one part of `pipelines.styleclip.StyleCLIPPipeline` (the one entry point): `InversionMixin` holds
the inversion's methods and uses the pipeline's core (`render`, `_clip_embed`, `to_unit`, `generator`, `device`,
`invert_config`). Its task is registered in pipelines/styleclip.py, next to the class. Also here, because every
edit starts from one of them: `SampleConfig` (a random start: seed and truncation) and `StartConfig` (that, or an
image inverted first), `Start`, and `staged`, which runs one task generator as a stage of another ("invert" before
an edit) so that a Stop reaches it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image

from studio.images import resize_crop, to_pil, to_tensor, to_uint8
from studio.progress import Progress, Result
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, param, resolve, run_settings

if TYPE_CHECKING:
    from pipelines.styleclip import StyleCLIPPipeline

MAX_FRAMES = 120  # video frames kept: the first ones and the last


# ----------------------------------------------------------------------------------------------------------------
# Where an edit starts
# ----------------------------------------------------------------------------------------------------------------



class EncoderMissingError(ValueError):
    """`init="encoder"` without an e4e file for the generator: says where the file goes."""

    setup_problem = True  # the page keeps this message on screen until dismissed

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
    inversion: InversionOutput | None = None

    @classmethod
    def of(cls, inv: InversionOutput, device: torch.device) -> Start:
        return cls(inv.latent.to(device), [n.to(device) for n in inv.noise] or None, inv)


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


# ----------------------------------------------------------------------------------------------------------------
# Settings, result and the references' helpers
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class InvertConfig:
    """Settings of one inversion; the defaults are rosinality `projector.py`'s except where marked ours."""

    num_steps: int = param(200, 1, 10_000, ui=(10, 1000), step=10, label="Inversion steps",
                           help="optimisation steps; ours: 200 (rosinality projector.py --step 1000 with LPIPS)")
    lr: float = param(0.1, 1e-6, 10.0, control=False, help="Adam's peak learning rate; rosinality projector --lr 0.1")
    pixel_weight: float = param(1.0, 0.0, 1e9, control=False,
                                help="weight of the pixel MSE in [0, 1] units; ours: 1 (projector --mse 0, with LPIPS)")
    perceptual_weight: float = param(1.0, 0.0, 1e9, ui=(0.0, 5.0), step=0.1, label="Perceptual weight",
                                     help="weight of the distance between the scorer's image-tower activations of "
                                          "render and target (channel-normalised, as LPIPS), in place of the "
                                          "projector's LPIPS; rosinality projector weighs LPIPS 1; ours: 1")
    clip_weight: float = param(1.0, 0.0, 1e9, control=False,
                               help="weight of 1 - cos between the CLIP embeddings of render and target; ours: 1")
    init: str = param("auto", choices=("auto", "mean", "encoder"), label="Start from",
                      help="where the optimisation starts: 'mean' the mean latent (rosinality projector), "
                           "'encoder' an e4e encoder's one-pass guess (the pipeline's `encoder`, or the file "
                           "`studio.generators.e4e.find_encoder` finds), 'auto' the encoder when there is one")
    noise_weight: float = param(1e5, 0.0, 1e9, control=False,
                                help="noise-map autocorrelation penalty; rosinality projector --noise_regularize 1e5")
    latent_noise: float = param(0.05, 0.0, 1e9, control=False,
                                help="noise on the latent, in units of the std of w; rosinality projector --noise 0.05")
    noise_ramp: float = param(0.75, 1e-3, 1.0, control=False,
                              help="fraction of the run over which the latent noise falls to 0; rosinality projector "
                                   "--noise_ramp 0.75")
    seed: int = param(0, 0, SEED_MAX, label="Seed", help="draws the mean-latent samples, the starting noise maps and "
                                                         "the latent noise: the same seed gives the same inversion")
    preview_every: int = param(10, 1, 10_000, control=False, help="steps between previews and video frames; ours: 10")


@dataclass
class InversionOutput(Result):
    """An inverted image. `image`: the reconstruction of the best iterate (PIL); `target`: the input as the
    generator sees it (shortest side to its size, centre crop). scores: the reconstruction error of the kept iterate
    as mse (pixels in [0, 1]), psnr (dB) and perceptual (the activation distance of `perceptual_weight`'s term);
    start_mse and start_loss (the start: the mean latent's or the encoder's image), encoder_mse (when an encoder gave
    the start), loss (the lowest seen, that of the kept iterate), best_step (0: the start itself). `latent`
    (1, n_latent, D) and `noise` (its noise maps; empty for generators without any) start an edit; `frames` show the
    run; `encoder` names the e4e file used, if any."""

    task = "styleclip-invert"
    target: Image.Image | None = None
    image_tensor: torch.Tensor | None = None  # (1, 3, H, W) in [0, 1], CPU
    target_tensor: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    noise: list[torch.Tensor] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # loss at every step
    mses: list[float] = field(default_factory=list)  # pixel MSE (as `scores["mse"]`) of each step's iterate
    encoder: str | None = None


def get_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleCLIP's (and rosinality projector's) schedule: linear warm-up, cosine ramp-down over the last quarter."""
    lr_ramp = min(1.0, (1 - t) / rampdown)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    lr_ramp = lr_ramp * min(1.0, t / rampup)
    return initial_lr * lr_ramp


def noise_regularize(noises: list[torch.Tensor]) -> torch.Tensor:
    """rosinality projector: squared autocorrelation of each noise map at shifts of one, over a pyramid."""
    loss = torch.zeros(())
    for noise in noises:
        size = noise.shape[2]
        loss = loss.to(noise.device)
        while True:
            loss = (loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean().pow(2)
                    + (noise * torch.roll(noise, shifts=1, dims=2)).mean().pow(2))
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean([3, 5])
            size //= 2
    return loss


def perceptual_layers(scorer: Any) -> tuple[int, ...]:
    """The image-tower depths the perceptual term reads: ResNet stages 2 and 3, or ViT blocks n/3 and 2n/3 (the
    layers of CLIPasso's geometric loss, `CLIPassoPipeline.geometric_layers`; a short copy, not a shared base)."""
    visual = scorer.model.visual
    if hasattr(visual, "layer1"):
        return (2, 3)
    n = len(visual.transformer.resblocks)
    return tuple(sorted({n // 3, min(n - 1, (2 * n) // 3)}))


def feature_distance(acts: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style distance (unit layer weights): per layer, unit-normalise every position's feature vector (the
    channel axis: dim 1 of a ResNet map, the last of ViT tokens), then the mean over positions of the squared
    distance; summed over layers. Each layer's term lies in [0, 4]."""
    total = torch.zeros((), device=acts[0].device)
    for a, b in zip(acts, target):
        dim = 1 if a.ndim == 4 else -1
        total = total + (F.normalize(a, dim=dim) - F.normalize(b, dim=dim)).pow(2).sum(dim).mean()
    return total


# ----------------------------------------------------------------------------------------------------------------
# The inversion
# ----------------------------------------------------------------------------------------------------------------


class InversionMixin:
    """`iter_invert` / `invert` of `StyleCLIPPipeline` (see the module docstring)."""

    def _image_tensor(self: StyleCLIPPipeline, image: Any) -> torch.Tensor:
        """PIL / path / bytes / array / float tensor in [0, 1] -> (1, 3, size, size) in [0, 1] on the device."""
        if isinstance(image, torch.Tensor) and image.ndim == 3:
            image = image[None]
        if isinstance(image, torch.Tensor) and (image.ndim != 4 or image.shape[:2] != (1, 3)
                                                or min(image.shape[-2:]) < 8):
            raise ValueError(f"`image` must have shape (3, H, W) or (1, 3, H, W) with H, W >= 8, "
                             f"got {tuple(image.shape)}")
        image = to_tensor(image, "image")  # safe decoding, RGB, size limits; a tensor must be floats
        size = self.generator.size
        return resize_crop(image.float().to(self.device), size).clamp(0, 1)

    encoder: Any = None  # an e4e `Encoder4Editing` for the `init` "encoder" start (`load_encoder`)

    def load_encoder(self: StyleCLIPPipeline, encoder: Any) -> Any:
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

    def _inversion_encoder(self: StyleCLIPPipeline, init: str) -> Any:
        """The encoder `init` asks for: None for "mean"; for "auto" the loaded or found one, if any."""
        if init == "mean":
            return None
        if self.encoder is None:
            from studio.generators.e4e import find_encoder, how_to_get

            path = find_encoder(self.generator)
            if path is None:
                if init == "encoder":  # a setup problem: the page keeps it on screen
                    raise EncoderMissingError(f"`init` 'encoder' needs an e4e encoder for this generator: "
                                              f"{how_to_get(self.generator)}")
                return None
            self.load_encoder(path)
        return self.encoder

    def _clip_features(self: StyleCLIPPipeline, img: torch.Tensor, layers: tuple[int, ...]
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`_clip_embed` with the image tower's activations at `layers` from the same pass (none for ())."""
        if not layers:
            return self._clip_embed(img), []
        x = (img + 1) / 2
        s = self.scorer.image_size
        if x.shape[-1] > s:
            x = F.interpolate(x, size=(s, s), mode="area")
        with self._autocast():
            emb, acts = self.scorer.image_activations(x, layers)
        return emb.float(), [a.float() for a in acts]

    def iter_invert(self: StyleCLIPPipeline, image: Any, **settings: Any) -> Iterator[Progress | InversionOutput]:
        """Project `image` (PIL, path, array, or a float tensor in [0, 1]) into W+; yields a `Progress` every step
        (a preview every `preview_every`), then the `InversionOutput` of the best iterate. Send "stop" to end early.
        settings: any `InvertConfig` field."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = resolve(self.invert_config, settings)
        if cfg.pixel_weight == 0 and cfg.clip_weight == 0 and cfg.perceptual_weight == 0:
            raise ValueError("`pixel_weight`, `perceptual_weight` and `clip_weight` cannot all be 0")
        target = self._image_tensor(image)
        g, total = self.generator, cfg.num_steps
        encoder = self._inversion_encoder(cfg.init)
        layers = perceptual_layers(self.scorer) if cfg.perceptual_weight else ()

        with oom_guard("StyleCLIP inversion"):
            # 2. the start: the mean latent with random noise maps (rosinality projector), or the encoder's guess
            gen = torch.Generator().manual_seed(cfg.seed)
            with torch.no_grad():
                w_samples = g.get_latent(torch.randn(10000, g.style_dim, generator=gen).to(self.device))
                w_mean = w_samples.mean(0)
                w_std = float(((w_samples - w_mean).pow(2).sum() / 10000) ** 0.5)
                target_emb, target_acts = self._clip_features(target * 2 - 1, layers)
            noises = [torch.randn(n.shape, generator=gen).to(self.device) for n in g.make_noise()]
            t_enc = time.perf_counter()
            if encoder is not None:
                with torch.no_grad():
                    w0 = encoder.encode(target).float()
                stored = [getattr(g.noises, f"noise_{i}") for i in range(len(noises))] if noises else []
                noises = [n.detach().clone().to(self.device) for n in stored]
            else:
                w0 = w_mean.detach().reshape(1, 1, -1).repeat(1, g.n_latent, 1)
            t_enc = time.perf_counter() - t_enc
            latent = w0.clone().requires_grad_(True)
            noises = [n.requires_grad_(True) for n in noises]
            optimizer = torch.optim.Adam([latent, *noises], lr=cfg.lr)

            def loss_of(img: torch.Tensor) -> tuple[torch.Tensor, float]:
                """(total loss, pixel MSE of the image as shown: clamped to [0, 1]) of a render against the target."""
                x = (img + 1) / 2
                loss = cfg.pixel_weight * F.mse_loss(x, target)
                if cfg.clip_weight or layers:
                    emb, acts = self._clip_features(img, layers)
                    if cfg.clip_weight:
                        loss = loss + cfg.clip_weight * (1 - (emb * target_emb).sum(-1)).mean()
                    if layers:
                        loss = loss + cfg.perceptual_weight * feature_distance(acts, target_acts)
                if noises and cfg.noise_weight:
                    loss = loss + cfg.noise_weight * noise_regularize(noises)
                return loss, float(F.mse_loss(x.detach().clamp(0, 1), target))

            with torch.no_grad():
                img0 = self.render(latent, noises)
                start_loss = float(loss_of(img0)[0])
                start_img = self.to_unit(img0)
            start_mse = float(F.mse_loss(start_img, target.cpu()))
            frames = [to_uint8(start_img)]
            best = (start_loss, 0, latent.detach().clone(), [n.detach().clone() for n in noises])
            losses: list[float] = []
            mses: list[float] = []
            t_setup = time.perf_counter()

            # 3. optimise; keep the iterate with the lowest loss: the latent as rendered (latent noise included)
            stopped, step = False, 0
            for step in range(1, total + 1):
                t = (step - 1) / total
                optimizer.param_groups[0]["lr"] = get_lr(t, cfg.lr)
                strength = w_std * cfg.latent_noise * max(0.0, 1 - t / cfg.noise_ramp) ** 2
                latent_n = latent + torch.randn(latent.shape, generator=gen).to(self.device) * strength
                img = self.render(latent_n, noises)
                loss, mse = loss_of(img)
                value = float(loss.detach())
                if value < best[0]:  # what this loss belongs to, before the step moves it
                    best = (value, step, latent_n.detach().clone(), [n.detach().clone() for n in noises])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # rosinality noise_normalize_
                    for n in noises:
                        n.sub_(n.mean()).div_(n.std())
                losses.append(value)
                mses.append(mse)
                preview = None
                if step % cfg.preview_every == 0 or step == total:
                    shown = self.to_unit(img)
                    cap_frames(frames, to_uint8(shown), step == total)
                    preview = to_pil(shown)
                if (yield Progress(step, total, preview, {"loss": value, "mse": mse})) == "stop" and step < total:
                    stopped = True
                    if preview is None:  # the video ends where the run stopped
                        frames.append(to_uint8(self.to_unit(img)))
                    break
            t_opt = time.perf_counter()

            # 4. package the best iterate, with its reconstruction error
            best_loss, best_step, best_latent, best_noise = best
            with torch.no_grad():
                out = self.render(best_latent, best_noise)
                recon = self.to_unit(out)
                perceptual = (float(feature_distance(self._clip_features(out, layers)[1], target_acts))
                              if layers else float("nan"))
        mse = float(F.mse_loss(recon, target.cpu()))
        scores = {"mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-10)), "start_mse": start_mse,
                  "start_loss": start_loss, "loss": best_loss, "best_step": best_step}
        if layers:
            scores["perceptual"] = perceptual
        timings = {"setup_s": t_setup - t0, "optimise_s": t_opt - t_setup, "per_step_s": (t_opt - t_setup) / step,
                   "total_s": time.perf_counter() - t0}
        if encoder is not None:
            scores["encoder_mse"] = start_mse
            timings["encode_s"] = t_enc
        yield InversionOutput(
            image=to_pil(recon), target=to_pil(target), image_tensor=recon, target_tensor=target.cpu(),
            latent=best_latent.cpu(), noise=[n.cpu() for n in best_noise], losses=losses, mses=mses, frames=frames,
            scores=scores, timings=timings, seed=cfg.seed, settings=run_settings(cfg), stopped=stopped,
            steps_run=step, notice=self.scorer.notice,
            encoder=getattr(encoder, "source", "an Encoder4Editing module") if encoder is not None else None)

    def invert(self: StyleCLIPPipeline, image: Any, *, callback: Any = None, **settings: Any) -> InversionOutput:
        """Run `iter_invert(image, **settings)` to the end; `callback(step, total, preview)` returning False stops it
        (the result is then the best iterate so far)."""
        return drain(self.iter_invert(image, **settings), callback)
