"""StyleCLIP inversion (task `styleclip-invert`): a real image to a W+ latent by optimisation.

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

The pipeline (`StyleCLIPInvertPipeline`) runs on a StyleCLIP session (pipelines/styleclip_core.py), whose encoder it
uses; the session runs this registered task on itself when an edit starts from an image ("invert first").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import register
from pipelines.styleclip_core import Start, StyleCLIPTaskPipeline, cap_frames, get_lr
from studio.images import resize_crop, to_pil, to_tensor, to_uint8
from studio.progress import Progress, Result
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, param, resolve, run_settings


class EncoderMissingError(ValueError):
    """`init="encoder"` without an e4e file for the generator: says where the file goes."""

    setup_problem = True  # the page keeps this message on screen until dismissed


# ----------------------------------------------------------------------------------------------------------------
# Settings, result and the reference's helpers
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

    def as_start(self, device: torch.device) -> Start:
        """The inverted latent and its noise maps as the start of an edit."""
        return Start(self.latent.to(device), [n.to(device) for n in self.noise] or None, self)


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


class StyleCLIPInvertPipeline(StyleCLIPTaskPipeline):
    """Inversion on a StyleCLIP session (see the module docstring). `invert_config`: the defaults (`InvertConfig`);
    the e4e encoder is the session's (`load_encoder`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.invert_config = InvertConfig()

    def _image_tensor(self, image: Any) -> torch.Tensor:
        """PIL / path / bytes / array / float tensor in [0, 1] -> (1, 3, size, size) in [0, 1] on the device."""
        if isinstance(image, torch.Tensor) and image.ndim == 3:
            image = image[None]
        if isinstance(image, torch.Tensor) and (image.ndim != 4 or image.shape[:2] != (1, 3)
                                                or min(image.shape[-2:]) < 8):
            raise ValueError(f"`image` must have shape (3, H, W) or (1, 3, H, W) with H, W >= 8, "
                             f"got {tuple(image.shape)}")
        image = to_tensor(image, "image")  # safe decoding, RGB, size limits; a tensor must be floats
        size = self.session.generator.size
        return resize_crop(image.float().to(self.session.device), size).clamp(0, 1)

    def _inversion_encoder(self, init: str) -> Any:
        """The encoder `init` asks for: None for "mean"; for "auto" the loaded or found one, if any."""
        if init == "mean":
            return None
        session = self.session
        if session.encoder is None:
            from studio.generators.e4e import find_encoder, how_to_get

            path = find_encoder(session.generator)
            if path is None:
                if init == "encoder":  # a setup problem: the page keeps it on screen
                    raise EncoderMissingError(f"`init` 'encoder' needs an e4e encoder for this generator: "
                                              f"{how_to_get(session.generator)}")
                return None
            session.load_encoder(path)
        return session.encoder

    def iter_invert(self, image: Any, **settings: Any) -> Iterator[Progress | InversionOutput]:
        """Project `image` (PIL, path, array, or a float tensor in [0, 1]) into W+; yields a `Progress` every step
        (a preview every `preview_every`), then the `InversionOutput` of the best iterate. Send "stop" to end early.
        settings: any `InvertConfig` field."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = resolve(self.invert_config, settings)
        if cfg.pixel_weight == 0 and cfg.clip_weight == 0 and cfg.perceptual_weight == 0:
            raise ValueError("`pixel_weight`, `perceptual_weight` and `clip_weight` cannot all be 0")
        session = self.session
        target = self._image_tensor(image)
        g, total = session.generator, cfg.num_steps
        encoder = self._inversion_encoder(cfg.init)
        layers = perceptual_layers(session.scorer) if cfg.perceptual_weight else ()

        with oom_guard("StyleCLIP inversion"):
            # 2. the start: the mean latent with random noise maps (rosinality projector), or the encoder's guess
            gen = torch.Generator().manual_seed(cfg.seed)
            with torch.no_grad():
                w_samples = g.get_latent(torch.randn(10000, g.style_dim, generator=gen).to(session.device))
                w_mean = w_samples.mean(0)
                w_std = float(((w_samples - w_mean).pow(2).sum() / 10000) ** 0.5)
                target_emb, target_acts = session.clip_features(target * 2 - 1, layers)
            noises = [torch.randn(n.shape, generator=gen).to(session.device) for n in g.make_noise()]
            t_enc = time.perf_counter()
            if encoder is not None:
                with torch.no_grad():
                    w0 = encoder.encode(target).float()
                stored = [getattr(g.noises, f"noise_{i}") for i in range(len(noises))] if noises else []
                noises = [n.detach().clone().to(session.device) for n in stored]
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
                    emb, acts = session.clip_features(img, layers)
                    if cfg.clip_weight:
                        loss = loss + cfg.clip_weight * (1 - (emb * target_emb).sum(-1)).mean()
                    if layers:
                        loss = loss + cfg.perceptual_weight * feature_distance(acts, target_acts)
                if noises and cfg.noise_weight:
                    loss = loss + cfg.noise_weight * noise_regularize(noises)
                return loss, float(F.mse_loss(x.detach().clamp(0, 1), target))

            with torch.no_grad():
                img0 = session.render(latent, noises)
                start_loss = float(loss_of(img0)[0])
                start_img = session.to_unit(img0)
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
                latent_n = latent + torch.randn(latent.shape, generator=gen).to(session.device) * strength
                img = session.render(latent_n, noises)
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
                    shown = session.to_unit(img)
                    cap_frames(frames, to_uint8(shown), step == total)
                    preview = to_pil(shown)
                if (yield Progress(step, total, preview, {"loss": value, "mse": mse})) == "stop" and step < total:
                    stopped = True
                    if preview is None:  # the video ends where the run stopped
                        frames.append(to_uint8(session.to_unit(img)))
                    break
            t_opt = time.perf_counter()

            # 4. package the best iterate, with its reconstruction error
            best_loss, best_step, best_latent, best_noise = best
            with torch.no_grad():
                out = session.render(best_latent, best_noise)
                recon = session.to_unit(out)
                perceptual = (float(feature_distance(session.clip_features(out, layers)[1], target_acts))
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
            steps_run=step, notice=session.scorer.notice,
            encoder=getattr(encoder, "source", "an Encoder4Editing module") if encoder is not None else None)

    def invert(self, image: Any, *, callback: Callable | None = None, **settings: Any) -> InversionOutput:
        """Run `iter_invert(image, **settings)` to the end; `callback(step, total, preview)` returning False stops it
        (the result is then the best iterate so far)."""
        return drain(self.iter_invert(image, **settings), callback)


register(Task(name="styleclip-invert", title="Inversion (StyleCLIP)", config=InvertConfig,
              pipeline=StyleCLIPInvertPipeline, method="iter_invert", models=("generator", "clip"),
              load=StyleCLIPInvertPipeline.from_pretrained,
              inputs=(Input("image", "image", help="the photo to find a latent for"),)))

__all__ = ["EncoderMissingError", "InversionOutput", "InvertConfig", "StyleCLIPInvertPipeline", "feature_distance",
           "noise_regularize", "perceptual_layers"]
