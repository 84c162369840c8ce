"""Train the bundled demo CLIP ("shapes-clip") on synthetic captioned shapes, on a CPU, reproducibly.

The model is an open_clip CLIP built from `studio/assets/models/shapes-clip.json` (small ViT image tower, small text
tower, the stock 49408-token BPE tokenizer) and trained with CLIP's symmetric contrastive loss and a learnable
logit scale (Radford et al. 2021, fig. 3). Since a batch of synthetic captions holds many true pairs besides
the diagonal ("a red shape" is true of every red image), the targets are multi-positive: each row/column of
the similarity matrix puts uniform target mass on every caption/image that is true of it
(`studio.demo.shapes.caption_matches`), as in supervised contrastive learning (Khosla et al. 2020).
Batches are rendered on the fly from consecutive seeds, so a run is a pure function of its arguments.

    PYTHONPATH=. python scripts/train_demo_clip.py --steps 1500 --out studio/assets/models/shapes-clip.safetensors

prints the held-out zero-shot accuracies (colour, shape, position) measured with the studio's prompt ensemble
(`studio.demo.zeroshot`), on the weights exactly as saved (fp16, loaded back as fp32).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import load_file, save_file

from studio.demo.shapes import caption_matches, make_batch, swap_shape
from studio.demo.zeroshot import EVAL_SEED_OFFSET, ensemble_text, zero_shot_accuracy

CONFIG = Path(__file__).resolve().parent.parent / "studio" / "assets" / "models" / "shapes-clip.json"


def build(seed: int, config: Path = CONFIG) -> tuple[torch.nn.Module, object]:
    """The untrained model (seeded) and the stock tokenizer at the config's context length."""
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(config.stem)
    return model, open_clip.get_tokenizer(config.stem)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> CLIP input, with OpenAI's mean/std (the config sets none of its own)."""
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def evaluate(model: torch.nn.Module, tokenizer, n: int, seed: int) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        res = zero_shot_accuracy(lambda x: model.encode_image(normalise(x)),
                                 lambda names: ensemble_text(lambda t: model.encode_text(tokenizer(t)), names),
                                 n=n, seed=seed)
    model.train()
    return res.accuracy


def fp16_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors in fp16 (halves the file); integer buffers (BatchNorm counters) kept."""
    return {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
            for k, v in model.state_dict().items()}


def augment_views(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One CLIPDraw-style view per image: `CLIPScorer.augment` (random perspective 0.5, crop 0.7-0.9).

    It reads only `image_size` from the scorer, so it is called unbound here rather than copied, to train on
    exactly the views the studio scores.
    """
    from types import SimpleNamespace

    from studio.scorer import CLIPScorer

    return CLIPScorer.augment(SimpleNamespace(image_size=images.shape[-1]), images, 1, generator=gen)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to zero (open_clip's `cosine_lr`)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)  # open_clip's default for CLIP training
    p.add_argument("--seed", type=int, default=0)
    # One thread: on a CPU shared with other jobs, two threads spent most of their time waiting on each other
    # (a fwd+bwd measured 3x slower with 2 threads than with 1 under a load of ~10 on 2 cores).
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--hard-negatives", type=int, default=1, help="1: add shape-swapped captions (NegCLIP)")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (safetensors) instead")
    p.add_argument("--augment", type=float, default=0.0,
                   help="share of images seen through CLIPDraw's augmentations (studio.scorer's `augment`)")
    p.add_argument("--config", type=Path, default=CONFIG, help="open_clip model config (registered by its stem)")
    p.add_argument("--out", type=Path, default=None, help="where to write the fp16 safetensors")
    args = p.parse_args()
    if args.steps < 1:
        raise ValueError(f"`--steps` must be >= 1, got {args.steps}")
    if args.batch_size * args.steps + 1_000_000 * args.seed >= EVAL_SEED_OFFSET:
        raise ValueError("training seeds would overlap the held-out seeds; lower `--steps`/`--seed`")

    torch.set_num_threads(args.threads)
    model, tokenizer = build(args.seed, args.config)
    if args.init is not None:
        init = load_file(str(args.init))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init.items()}, strict=True)
        print(f"initialised from {args.init}", flush=True)
    if not 0.0 <= args.augment <= 1.0:
        raise ValueError(f"`--augment` must be in [0, 1], got {args.augment}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.config.stem}: {n_params / 1e6:.2f} M parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    t0 = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        seeds = np.arange(args.batch_size) + step * args.batch_size + 1_000_000 * args.seed
        images, captions, samples = make_batch(seeds)
        target = torch.from_numpy(caption_matches(samples)).float()  # (B, B) [i, j]: caption j true of image i
        if args.hard_negatives:
            # NegCLIP: each caption that names a shape also enters with that shape swapped, as an extra column
            # of the image-to-text softmax (its true images in the batch, if any, are its positives).
            rng = np.random.default_rng([args.seed, step])
            negs = [n for n in (swap_shape(s, rng) for s in samples) if n is not None]
            captions = captions + [c for c, _, _ in negs]
            neg_target = torch.from_numpy(caption_matches(samples, [(q, b) for _, q, b in negs])).float()
            target = torch.cat([target, neg_target], dim=1)  # (B, B + K)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        unknown = None
        if args.augment > 0:
            # The studio scores CLIPDraw strokes through random perspective + 0.7-0.9 crops; show the model such
            # views. They move objects, so for an augmented image a caption that names a position and is right
            # but for it is neither positive nor negative: its logit is masked out of both softmaxes.
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            aug = torch.rand(len(samples), generator=gen) < args.augment
            if aug.any():
                x[aug] = augment_views(x[aug], gen)
                queries = [(s.query, s.query_background) for s in samples]
                if args.hard_negatives:
                    queries += [(q, bg) for _, q, bg in negs]
                names_pos = torch.tensor([bool((q[:, 2] >= 0).any()) for q, _ in queries])  # (B + K,)
                loose = torch.from_numpy(caption_matches(samples, queries, ignore_position=True))
                unknown = aug[:, None] & loose & names_pos[None, :]  # (B, B + K)
                target = target.masked_fill(unknown, 0.0)
        x = normalise(x)
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T  # (B, B + K)
        b = len(samples)  # text-to-image over the batch's own captions only
        if unknown is None:
            loss_i = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
            loss_t = -(target[:, :b] / target[:, :b].sum(0, keepdim=True)
                       * F.log_softmax(logits[:, :b], dim=0)).sum(0).mean()
        else:  # rows/columns left without a positive (their own caption named a position) drop out
            logits = logits.masked_fill(unknown, -1e4)
            rows, cols = target.sum(1), target[:, :b].sum(0)
            loss_i = -((target / rows.clamp(min=1)[:, None] * F.log_softmax(logits, dim=1)).sum(1)
                       [rows > 0].mean())
            loss_t = -((target[:, :b] / cols.clamp(min=1)[None, :] * F.log_softmax(logits[:, :b], dim=0)).sum(0)
                       [cols > 0].mean())
        loss = 0.5 * (loss_i + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's clamp
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step:5d}  loss {loss.item():.4f}  scale {model.logit_scale.exp().item():6.2f}  "
                  f"{el / (step + 1):.2f} s/step  elapsed {el / 60:.1f} min", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            acc = evaluate(model, tokenizer, n=300, seed=EVAL_SEED_OFFSET)
            print(f"eval@{step + 1}: " + "  ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)
            if args.out is not None:  # a usable snapshot while the run goes on
                snap = args.out.with_name(args.out.stem + f"-step{step + 1}.safetensors")
                save_file(fp16_state(model), str(snap))
    train_min = (time.time() - t0) / 60

    # Save in fp16 (halves the file; the token embedding dominates), then evaluate the weights as saved.
    state = fp16_state(model)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(args.out), metadata={"format": "pt", "dtype": "float16", "model": args.config.stem})
        state = load_file(str(args.out))
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    acc = evaluate(model, tokenizer, n=args.eval_n, seed=EVAL_SEED_OFFSET)
    print(f"trained {args.steps} steps x {args.batch_size} in {train_min:.1f} min")
    print(f"held-out zero-shot accuracy (n={args.eval_n}, seeds from {EVAL_SEED_OFFSET}, fp16 weights): "
          + "  ".join(f"{k} {v:.3f}" for k, v in acc.items()))


if __name__ == "__main__":
    main()
