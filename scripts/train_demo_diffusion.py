"""Train the bundled demo diffusion model ("shapes-diffusion") on the demo shapes, on a CPU, reproducibly.

A latent diffusion model in Stable Diffusion's own classes, small enough to train on a shared 2-core CPU:
an `AutoencoderKL` (64x64 RGB <-> 16x16x4 latents, downsampling 4), a `CLIPTextModel` with a `CLIPTokenizer`
whose byte-level BPE vocabulary is built here from the demo captions' words (nothing is downloaded), a
`UNet2DConditionModel` with cross-attention on the text, and a `DPMSolverMultistepScheduler` (20 steps) over
the DDPM noise schedule it was trained with. Saved as a diffusers folder that
`StableDiffusionPipeline.from_pretrained(folder)` loads, floats in fp16 (the package cap is 12 MB).

Data: `studio.demo.shapes.make_sample` (the images and captions the demo CLIP was trained on: six colours, five
shapes, five positions, sizes, fills, backgrounds), rendered from consecutive seeds, so a run is a pure
function of its arguments. Three stages:

1. the autoencoder: L1 + MSE reconstruction, with pixels far from the background weighted 10x (`--fg-weight`),
   and a small KL term (SD's VAE recipe without the GAN and the perceptual loss, which flat-coloured drawings do
   not need);
2. the training set encoded once to latent means and standard deviations; `scaling_factor` = 1 / std of the
   latents, as SD sets it;
3. the UNet and the text encoder together (the text encoder is trained, not frozen: no pretrained one can be
   had offline), epsilon prediction with min-SNR-5 loss weighting (Hang et al. 2023), 10% of captions dropped to
   "" so that classifier-free guidance works (Ho & Salimans 2022), and an EMA of the weights that is saved.

    PYTHONPATH=. python scripts/train_demo_diffusion.py --out studio/assets/models/shapes-diffusion

ends by measuring the saved folder, loaded back through `StableDiffusionPipeline`, with a pixel oracle
(`studio.demo.oracle`: dominant colour and best-fitting shape; no CLIP): prompts "a {colour} {shape}" at seeds
0-9 and the share of images whose dominant ink is the asked colour and whose shape is the asked one.

Status: no model is bundled yet; what was measured on the shared 2-core CPU (load 9-15, one thread) so far:
- downsampling 8 (8x8x8 latents, VAE channels 8/16/32/64), unweighted loss, 450 VAE steps of 8 (4-6 min): the VAE
  painted the background only; with the foreground weighting (stage 1), blobs at the right places (PSNR 16.5 dB,
  dominant colour kept in 28% of 32 one-shape images, shape in 19%);
- downsampling 4 (16x16x4), weighted, 350 steps (12 min at load 13): outlines and positions right, colours mostly
  wrong (PSNR 20.2 dB; colour kept in 19%, shape in 25%); 700 steps (10.7 min at load ~11): still brownish
  (PSNR 21.5 dB; colour 25%, shape 41%): hue is what the small decoder learns last, so try more VAE steps or a
  flatter learning-rate schedule before the UNet's stage;
- the UNet (8x8 latents, channels 32/64, 1.1 M parameters): 2-3 s/step at batch 48 under that load, so the defaults'
  600-1600 steps take 30-75 min: the autoencoder needs more steps than a 30-50 minute budget leaves for both.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from studio.demo.shapes import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    COLOUR_NAMES,
    FILLS,
    KINDS,
    POSITION_PHRASES,
    SHAPES,
    SIZES,
    make_batch,
)

IMAGE_SIZE = 64  # the demo scenes' size (studio.demo.shapes.IMAGE_SIZE); at 32 a pixel oracle tells shapes apart
# in only 77% of the demo images themselves (small outlined ones), so the model works at 64
LATENT_SIZE = IMAGE_SIZE // 4
LATENT_CHANNELS = 4
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Share of one-shape scenes is raised from make_sample's defaults (25% two shapes, 10% scribbles): a 1 M-parameter
# UNet given a half hour learns one object per caption first, which is what the prompts people try ask for.
TWO_OBJECT_PROB = 0.15
SCRIBBLE_PROB = 0.05


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer: CLIP's byte-level BPE, with a vocabulary of the demo captions' words built here.
def caption_words() -> list[str]:
    """Every word a demo caption can hold, as CLIP's pre-tokeniser splits it (lower case, ':' on its own)."""
    words: list[str] = []
    phrases = [*CAPTION_TEMPLATES, *POSITION_PHRASES.values(), "two shapes: a {} and a {}", "on a {} background",
               " ".join([*COLOUR_NAMES, *KINDS, *SIZES, *FILLS, *BACKGROUNDS, "shape", "shapes"])]
    for text in phrases:
        for w in text.replace("{}", " ").replace(":", " : ").split():
            if w not in words:
                words.append(w)
    return words


def build_tokenizer(folder: Path, max_length: int = 32):
    """Write vocab.json + merges.txt for `caption_words()` and return the `CLIPTokenizer` read back from them.

    The vocabulary is laid out as CLIP's is: the 256 byte symbols, the same with the end-of-word mark `</w>`,
    then one token per merge, then the two special tokens. Each caption word gets the merges that make it one
    token; any other text falls back to byte pieces (which the model has never seen, as its card says), so nothing
    is ever out of vocabulary.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())  # the 256 byte symbols of byte-level BPE (GPT-2's bytes_to_unicode)
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in caption_words():
        # The pieces the merges so far make of the word (BPE: lowest-ranked adjacent pair first), then new merges,
        # ranked after all the others, that join those pieces left to right: every earlier word is one token
        # already, so no new merge can touch it, and this word ends as one token too.
        ranks = {m: i for i, m in enumerate(merges)}
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda q: ranks.get(q, len(ranks)))
            if pair not in ranks:
                break
            i = next(j for j in range(len(parts) - 1) if (parts[j], parts[j + 1]) == pair)
            parts[i:i + 2] = [pair[0] + pair[1]]
        while len(parts) > 1:
            merges.append((parts[0], parts[1]))
            vocab.append(parts[0] + parts[1])
            parts[:2] = [parts[0] + parts[1]]
    vocab += [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    # Read back from the files (vocab.json + merges.txt is what every transformers version's CLIPTokenizer reads).
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=max_length)


# ---------------------------------------------------------------------------------------------------------------
# Models, from config (seeded).
def build_vae():
    from diffusers import AutoencoderKL

    # Three levels -> downsampling 4 (64x64 -> 16x16x4). Downsampling 8 as in SD (8x8x8 latents, channels
    # 8/16/32/64) learnt only coloured blobs in 450 steps (PSNR 16.5 dB, colour kept in 28% of images); at 4 each
    # latent cell describes a 4x4 patch, which a small decoder learns quickly.
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=IMAGE_SIZE,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
                         mid_block_add_attention=False)  # flat drawings need no global context


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, projection_dim=64)
    return CLIPTextModel(cfg)


def build_unet(width: int = 64):
    from diffusers import UNet2DConditionModel

    # Two levels over the 16x16 latents (16x16, 8x8), cross-attention on the text at both, as in SD's blocks.
    w = width
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(w, 2 * w), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)


def noise_scheduler():
    from diffusers import DDPMScheduler

    # Stable Diffusion's schedule (scaled linear, 0.00085 -> 0.012, 1000 steps).
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)


# ---------------------------------------------------------------------------------------------------------------
def render(seeds: np.ndarray) -> tuple[torch.Tensor, list[str]]:
    """(B, 3, 64, 64) images in [-1, 1] and their captions."""
    images, captions, _ = make_batch(seeds, two_object_prob=TWO_OBJECT_PROB, scribble_prob=SCRIBBLE_PROB)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, captions


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to a tenth."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def train_vae(vae, args) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    t0 = time.time()
    for step in range(args.vae_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 50)
        x, _ = render(np.arange(args.vae_batch) + step * args.vae_batch + 10_000_000 * args.seed)
        post = vae.encode(x).latent_dist
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / z[0].numel()  # per latent element
        # Shapes cover a few percent of the pixels: unweighted, the autoencoder first learns to paint the background
        # alone (a first run's did, after 450 steps). Pixels far from the background (the border's median) weigh
        # up to `fg_weight` times more.
        bg = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2).median(dim=2).values
        far = ((x - bg[:, :, None, None]).norm(dim=1, keepdim=True) / 0.5).clamp(max=1.0)  # (B, 1, H, W)
        w = 1.0 + (args.fg_weight - 1.0) * far
        err = (rec - x).abs() + (rec - x) ** 2
        loss = (w * err).sum() / (w.sum() * 3) + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == args.vae_steps - 1:
            el = time.time() - t0
            print(f"vae step {step:5d}  loss {loss.item():.4f}  kl {kl.item():.3f}  {el / (step + 1):.2f} s/step  "
                  f"elapsed {el / 60:.1f} min", flush=True)


@torch.no_grad()
def encode_dataset(vae, n: int, seed: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Latent means and stds (n, 4, 16, 16) and captions of the UNet's training set (seeds from 100e6 on)."""
    means, stds, caps = [], [], []
    for start in range(0, n, chunk):
        x, c = render(np.arange(start, min(n, start + chunk)) + 100_000_000 + 10_000_000 * seed)
        post = vae.encode(x).latent_dist
        means.append(post.mean)
        stds.append(post.std)
        caps += c
    return torch.cat(means), torch.cat(stds), caps


def train_unet(unet, text_encoder, tokenizer, vae, latents, args) -> tuple[dict, dict]:
    """Returns the EMA state dicts of the UNet and the text encoder."""
    mean, std, caps, scale = latents
    sched = noise_scheduler()
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema = {f"u.{k}": v.detach().clone() for k, v in unet.state_dict().items()}
    ema |= {f"t.{k}": v.detach().clone() for k, v in text_encoder.state_dict().items()}
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, 100)
        idx = torch.randint(0, len(caps), (args.batch_size,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch_size,), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        drop = torch.rand(args.batch_size, generator=gen) < args.caption_dropout
        texts = ["" if d else caps[i] for d, i in zip(drop.tolist(), idx.tolist())]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        hidden = text_encoder(ids)[0]
        pred = unet(zt, t, encoder_hidden_states=hidden).sample
        # min-SNR-gamma weighting for epsilon prediction: min(SNR, gamma) / SNR.
        w = torch.clamp(snr[t], max=args.snr_gamma) / snr[t]
        loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for prefix, model in (("u.", unet), ("t.", text_encoder)):
                for k, v in model.state_dict().items():
                    e = ema[prefix + k]
                    if v.is_floating_point():
                        e.mul_(decay).add_(v, alpha=1 - decay)
                    else:
                        e.copy_(v)
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"unet step {step:5d}  loss {loss.item():.4f}  {el / (step + 1):.2f} s/step  "
                  f"elapsed {el / 60:.1f} min", flush=True)
        if args.snapshot_every and (step + 1) % args.snapshot_every == 0 and step + 1 < args.steps and args.out:
            # A usable snapshot (EMA weights, a full folder) while the run goes on.
            import copy

            u, te = copy.deepcopy(unet), copy.deepcopy(text_encoder)
            u.load_state_dict({k[2:]: v for k, v in ema.items() if k.startswith("u.")})
            te.load_state_dict({k[2:]: v for k, v in ema.items() if k.startswith("t.")})
            save_pipeline(args.out.with_name(args.out.name + f"-step{step + 1}"), vae, te, tokenizer, u)
    return ({k[2:]: v for k, v in ema.items() if k.startswith("u.")},
            {k[2:]: v for k, v in ema.items() if k.startswith("t.")})


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet) -> None:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(noise_scheduler().config)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    # Floats in fp16 (the package cap). The text encoder's fp16 values are stored as fp32 (0.8 MB): transformers
    # loads a checkpoint in its stored dtype while diffusers loads fp32, and `StableDiffusionPipeline.from_pretrained`
    # with no dtype must not mix the two.
    pipe.to(torch.float16)
    text_encoder.to(torch.float32)
    pipe.save_pretrained(str(out), safe_serialization=True)
    pipe.to(torch.float32)


def evaluate(folder: Path, seeds: int = 10, steps: int = 20, guidance: float = 5.0) -> dict:
    """Oracle hit rates of the saved folder: prompts "a {colour} {shape}" at seeds 0..seeds-1."""
    from diffusers import StableDiffusionPipeline

    from studio.demo.oracle import measure, shape_name

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    table = {}
    for colour in COLOUR_NAMES:
        for shape in SHAPES:
            prompt = f"a {colour} {shape}"
            gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
            images = pipe([prompt] * seeds, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                          output_type="np").images
            hits_c = hits_s = hits = 0
            for img in images:
                c_ok = measure(img).dominant_colour == colour
                s_ok = shape_name(img) == shape
                hits_c += c_ok
                hits_s += s_ok
                hits += c_ok and s_ok
            table[prompt] = {"colour": hits_c, "shape": hits_s, "both": hits}
            print(f"{prompt:22s} colour {hits_c:2d}/{seeds}  shape {hits_s:2d}/{seeds}  both {hits:2d}/{seeds}",
                  flush=True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae-steps", type=int, default=350)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--fg-weight", type=float, default=10.0, help="loss weight of shape pixels vs background")
    p.add_argument("--kl-weight", type=float, default=1e-4)  # per element; keeps the latents near N(0, 1)-sized
    p.add_argument("--n-images", type=int, default=6000, help="size of the UNet's encoded training set")
    p.add_argument("--steps", type=int, default=600, help="UNet + text encoder steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32, help="UNet channels at the top level (x2 below)")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--snr-gamma", type=float, default=5.0)
    p.add_argument("--ema", type=float, default=0.995)  # a window of ~200 of the 600 steps
    p.add_argument("--seed", type=int, default=0)
    # One thread, as for the demo CLIP: on a CPU shared with other jobs two threads mostly wait on each other.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--snapshot-every", type=int, default=200)
    p.add_argument("--eval-seeds", type=int, default=10, help="seeds per prompt in the final oracle check; 0: none")
    p.add_argument("--out", type=Path, default=None, help="the diffusers folder to write")
    args = p.parse_args()
    for name in ("vae_steps", "steps", "batch_size", "vae_batch", "n_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1, got {getattr(args, name)}")

    torch.set_num_threads(args.threads)
    t_start = time.time()
    out_tok = (args.out or Path("/tmp/shapes-diffusion-tokenizer")) / "tokenizer"
    tokenizer = build_tokenizer(out_tok)
    torch.manual_seed(args.seed)
    vae = build_vae()
    text_encoder = build_text_encoder(tokenizer)
    unet = build_unet(args.width)
    for name, m in (("vae", vae), ("text encoder", text_encoder), ("unet", unet)):
        print(f"{name}: {sum(q.numel() for q in m.parameters()) / 1e6:.3f} M parameters", flush=True)
    print(f"tokenizer: {len(tokenizer)} tokens, {len(caption_words())} caption words", flush=True)

    # 1. the autoencoder
    train_vae(vae, args)
    vae.eval().requires_grad_(False)
    t_vae = time.time() - t_start
    if args.out is not None:  # to inspect while the UNet trains
        vae.save_pretrained(str(args.out.with_name(args.out.name + "-vae")))
    # 2. the UNet's training set, encoded once
    mean, std, caps = encode_dataset(vae, args.n_images, args.seed)
    scale = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=scale)
    print(f"encoded {len(caps)} images; latent std {1 / scale:.3f} -> scaling_factor {scale:.4f}", flush=True)
    # 3. the UNet and the text encoder
    u_state, t_state = train_unet(unet, text_encoder, tokenizer, vae, (mean, std, caps, scale), args)
    unet.load_state_dict(u_state)
    text_encoder.load_state_dict(t_state)
    train_min = (time.time() - t_start) / 60
    print(f"trained in {train_min:.1f} min (vae {t_vae / 60:.1f} min)", flush=True)

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_pipeline(args.out, vae, text_encoder, tokenizer, unet)
        size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
        print(f"wrote {args.out} ({size / 1e6:.2f} MB)", flush=True)
        if args.eval_seeds:
            table = evaluate(args.out, seeds=args.eval_seeds)
            n = args.eval_seeds
            for key in ("colour", "shape", "both"):
                rate = sum(r[key] for r in table.values()) / (n * len(table))
                print(f"{key} hit rate over {len(table)} prompts x {n} seeds: {rate:.3f}")
            worst = min(r["both"] for r in table.values())
            print(f"prompts with both >= 8/10: {sum(r['both'] >= 0.8 * n for r in table.values())}/{len(table)}; "
                  f"worst {worst}/{n}")


if __name__ == "__main__":
    main()
