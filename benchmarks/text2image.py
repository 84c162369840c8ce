"""Time the Text to Image hot paths: our generate, img2img and inpaint vs plain diffusers calls on the same
components, the rerank cost, one refine step.

Models are built from config with random weights (the cost of a forward pass does not depend on the weights), so
nothing is downloaded: `sd-turbo` is SD-Turbo's architecture (Stable Diffusion 2.1-base UNet, OpenCLIP ViT-H text
tower, SD VAE, Euler "trailing"), `tiny` the test-sized pipeline. The rerank/refine CLIP is ViT-B-32 (random) for
sd-turbo, a tiny ViT for tiny.

    python benchmarks/text2image.py                          # CPU: tiny pipeline
    python benchmarks/text2image.py --model sd-turbo --size 128 --batches 1 --refine-steps 1
    python benchmarks/text2image.py --device cuda --model sd-turbo --size 512 --batches 1 4 --refine-steps 20
    python benchmarks/text2image.py --device cuda --model sd-turbo --size 512 --steps 25 --refine-steps 0

With `--steps` > 1 our generate runs diffusers in a worker thread that reports every step (see
`Text2ImagePipeline.iter_generate` and `studio.progress.iterate_callback`); the overhead column then measures that
thread and its per-step hand-off.

Prints a Markdown table (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import machine, sync, table  # noqa: E402
from pipelines.text2image import Text2ImagePipeline  # noqa: E402
from pipelines.text2image_models import ModelPreset  # noqa: E402
from studio.device import pick_device, pick_dtype  # noqa: E402

# Architectures as data. sd-turbo: the diffusers configs of stabilityai/sd-turbo (= SD 2.1-base shapes).
CONFIGS: dict[str, dict] = {
    "sd-turbo": {
        "unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                     block_out_channels=(320, 640, 1280, 1280),
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                     cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
        "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768, scaling_factor=0.18215),
        "text": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                     num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512),
        "scheduler": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          timestep_spacing="trailing", steps_offset=1, prediction_type="epsilon"),
        "tokenizer": "clip-bpe",
        "clip": "ViT-B-32/random",
    },
    "tiny": {  # as tests/t2i_tiny.py (diffusers' get_dummy_components sizes)
        "unet": dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                     norm_num_groups=4, attention_head_dim=4),
        "vae": dict(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    latent_channels=4, norm_num_groups=4, sample_size=32),
        "text": dict(hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                     num_hidden_layers=2, max_position_embeddings=16),
        "scheduler": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          timestep_spacing="trailing", steps_offset=1, prediction_type="epsilon"),
        "tokenizer": "bytes",
        "clip": "bench-tiny-vit/random",
    },
}
TINY_CLIP = {  # registered with open_clip for the tiny run
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tokenizer(folder: Path, kind: str) -> tuple[Path, Path]:
    """vocab.json / merges.txt for transformers' CLIPTokenizer: CLIP's real BPE (from open_clip's bundled merges,
    built the way open_clip's SimpleTokenizer builds it) or a byte-level vocabulary with no merges."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    if kind == "clip-bpe":
        bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
        merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
        vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))
    return folder / "vocab.json", folder / "merges.txt"


def build_pipeline(name: str, device: torch.device, dtype: torch.dtype, folder: Path):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = CONFIGS[name]
    vocab, merges = write_tokenizer(folder, cfg["tokenizer"])
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=cfg["text"]["max_position_embeddings"])
    torch.manual_seed(0)
    text = cfg["text"] if "vocab_size" in cfg["text"] else {**cfg["text"], "vocab_size": len(tokenizer)}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text, bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**cfg["vae"]), text_encoder=text_encoder, tokenizer=tokenizer,
        unet=UNet2DConditionModel(**cfg["unet"]), scheduler=EulerDiscreteScheduler(**cfg["scheduler"]),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def timed(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Best wall time in ms of each function over `repeats` interleaved rounds after one warm-up each.

    Unlike `benchmarks.common.timeit` (median of back-to-back runs), rounds are interleaved and the minimum kept,
    so a shared machine's load cannot favour whichever variant runs first (load only ever adds time)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: min(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=list(CONFIGS), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default: fp32 on CPU, bf16/fp16 on GPU)")
    p.add_argument("--size", type=int, default=None, help="image side (default: 512 sd-turbo, 64 tiny)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=1, help="denoising steps (1: SD-Turbo's; more: a multi-step run)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 steadies timings on a busy "
                   "shared CPU)")
    p.add_argument("--refine-steps", type=int, default=5, help="refine steps to time (0 skips refine)")
    args = p.parse_args(argv)

    import open_clip

    from studio.scorer import get_scorer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.precision)
    size = args.size or (512 if args.model == "sd-turbo" else 64)
    prompt = "a photograph of an astronaut riding a horse" if args.model == "sd-turbo" else "an astronaut"
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            (Path(tmp) / "bench-tiny-vit.json").write_text(json.dumps(TINY_CLIP))
            open_clip.add_model_config(tmp)
        t0 = time.perf_counter()
        pipe = build_pipeline(args.model, device, dtype, Path(tmp))
        build_s = time.perf_counter() - t0
        scorer = get_scorer(CONFIGS[args.model]["clip"], device=str(device), precision=args.precision)
    preset = ModelPreset(num_steps=1, guidance_scale=0.0, size=size, one_step=True)
    ours = Text2ImagePipeline(pipe, None, model_name=args.model, preset=preset)
    ranked = Text2ImagePipeline(pipe, scorer, model_name=args.model, preset=preset)

    rows = []
    for b in args.batches:
        def plain(b=b):  # called in this iteration; bound for clarity
            gens = [torch.Generator("cpu").manual_seed(i) for i in range(b)]
            pipe(prompt=prompt, num_images_per_prompt=b, num_inference_steps=args.steps, guidance_scale=0.0,
                 height=size, width=size, generator=gens, output_type="pil")

        def ours_gen(b=b):
            ours(prompt, num_images=b, batch_size=b, seed=0, width=size, height=size, num_steps=args.steps)

        def rerank(b=b):
            ranked.rerank(prompt, num_images=b, batch_size=b, seed=0, width=size, height=size, num_steps=args.steps)

        t = timed({"plain": plain, "ours": ours_gen, "rerank": rerank}, device, args.repeats)
        rows.append((b, t["plain"], t["ours"], 100 * (t["ours"] / t["plain"] - 1), t["rerank"] - t["ours"]))

    # img2img and inpaint against diffusers' own pipelines over the same components (our extra work: the image's
    # VAE encoding for img2img, done once per request, the composite and the result's latent for inpaint)
    from PIL import Image

    from pipelines.text2image_img2img import Text2ImageImg2ImgPipeline
    from pipelines.text2image_inpaint import Text2ImageInpaintPipeline

    i2i, inpaint = Text2ImageImg2ImgPipeline.from_pipe(ours), Text2ImageInpaintPipeline.from_pipe(ours)
    start = Image.effect_noise((size, size), 64).convert("RGB")
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 2, 0, size, size))
    steps2 = max(2, args.steps)  # img2img at strength 0.5 runs half of them
    picture_rows = []
    for b in args.batches:
        def plain_i2i(b=b):
            gens = [torch.Generator("cpu").manual_seed(i) for i in range(b)]
            ours.session.variant("image2image")(prompt=[prompt] * b, image=[start] * b, strength=0.5,
                                                num_inference_steps=steps2, guidance_scale=0.0, generator=gens,
                                                output_type="pil")

        def ours_i2i(b=b):
            i2i(start, prompt, num_images=b, batch_size=b, seed=0, strength=0.5, num_steps=steps2)

        def plain_inpaint(b=b):
            gens = [torch.Generator("cpu").manual_seed(i) for i in range(b)]
            ours.session.variant("inpainting")(prompt=[prompt] * b, image=[start] * b, mask_image=[mask] * b,
                                               num_inference_steps=args.steps, guidance_scale=0.0, generator=gens,
                                               height=size, width=size, output_type="pil")

        def ours_inpaint(b=b):
            inpaint(start, prompt, mask, num_images=b, batch_size=b, seed=0, num_steps=args.steps, mask_blur=4)

        t = timed({"plain_i2i": plain_i2i, "ours_i2i": ours_i2i, "plain_inp": plain_inpaint,
                   "ours_inp": ours_inpaint}, device, args.repeats)
        picture_rows.append([b, t["plain_i2i"], t["ours_i2i"], 100 * (t["ours_i2i"] / t["plain_i2i"] - 1),
                             t["plain_inp"], t["ours_inp"], 100 * (t["ours_inp"] / t["plain_inp"] - 1)])

    refine_ms = refine_s = mem = None
    if args.refine_steps > 0:
        k = args.refine_steps
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ranked.refine(prompt, seed=0, num_steps=1, width=size, height=size)  # warm-up
        totals = []
        for _ in range(max(1, args.repeats // 2)):
            t0 = time.perf_counter()
            ranked.refine(prompt, seed=0, num_steps=k, width=size, height=size)
            sync(device)
            totals.append(time.perf_counter() - t0)
        refine_s = min(totals)
        refine_ms = refine_s * 1000 / (k + 1)  # k updates + 1 final evaluation
        if device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(device) / 1024**3

    print(f"\n{args.model} (random weights), {size}x{size}, {args.steps} step(s), {dtype}, {machine(device)}; "
          f"build {build_s:.1f} s; "
          f"best of {args.repeats} interleaved rounds\n")
    print(table(["batch", "plain diffusers (ms)", "our generate (ms)", "overhead (%)", "rerank adds (ms)"],
                [[b, tp, to, ov, tr] for b, tp, to, ov, tr in rows]))
    print(f"\nimg2img ({steps2} steps at strength 0.5) and inpaint (half the image masked, {args.steps} step(s)) "
          f"against diffusers' pipelines on the same components\n")
    print(table(["batch", "plain img2img (ms)", "our img2img (ms)", "overhead (%)", "plain inpaint (ms)",
                 "our inpaint (ms)", "overhead (%)"], picture_rows))
    if refine_ms is not None:
        mem_text = f", peak {mem:.2f} GiB" if mem is not None else ""
        ckpt = "on" if device.type != "cpu" else "off (CPU default)"
        print(f"\nrefine {k} steps: {refine_s:.2f} s, {refine_ms:.0f} ms per step (UNet + VAE + CLIP forward and "
              f"backward, gradient checkpointing {ckpt}) → 20 steps ≈ {21 * refine_ms / 1000:.1f} s{mem_text}")


if __name__ == "__main__":
    main()
