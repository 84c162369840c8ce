"""The shared CLIP scorer: one resident model per (spec, device, precision), used by every tab and pipeline.

`get_scorer()` hands out the one `CLIPScorer` for a key, loading it once even when several Gradio worker
threads ask at the same moment. The scorer encodes text (cached) and images (differentiable, resized and
normalised inside), computes CLIPScore (Hessel et al. 2021: 100·max(cos, 0)), builds prompt-template
ensembles (Radford et al. 2021), and applies CLIPDraw's augmentations (Frans et al. 2021) batched on the
scorer's device.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from studio import defaults
from studio.defaults import DemoModelWarning  # noqa: F401  (re-exported: the API filters it from here)
from studio.device import pick_device, pick_dtype, precision_name
from studio.hub import DEMO_CLIP, MODELS_DIR, ClipSource, load_state_dict, real_weights_within_reach, resolve_clip
from studio.images import resize_crop
from studio.prompts import get_templates

log = logging.getLogger("studio.scorer")
DEFAULT_CLIP = os.environ.get("STUDIO_CLIP", defaults.DEFAULT_CLIP)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's preprocessing statistics
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_CHUNK = 8  # texts per text-encoder batch, always (see CLIPScorer._encode_fresh)


class StudioOOMError(RuntimeError):
    """The GPU ran out of memory during a request; caches were freed and the server lives on."""

    user_facing = True  # its message is written for users: the page shows it, the log gets one line


@contextlib.contextmanager
def oom_guard(what: str) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into a clear `StudioOOMError` after freeing cached memory."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise StudioOOMError(
            f"The GPU ran out of memory during {what}. Try a smaller batch, canvas or model, or close other "
            f"GPU programs. ({str(err).splitlines()[0]})"
        ) from None


class CLIPScorer:
    """A loaded CLIP model with the encoders, scores and augmentations the pipelines need."""

    def __init__(self, model: torch.nn.Module, tokenizer, source: ClipSource, device: torch.device,
                 dtype: torch.dtype, text_cache_size: int = 4096):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source
        self.spec = source.spec
        self._checked_at = time.monotonic()  # when a demo stand-in last looked for its real weights
        self.device = device
        self.dtype = dtype
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pp = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = source.mean or pp.get("mean") or OPENAI_MEAN
        std = source.std or pp.get("std") or OPENAI_STD
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.embed_dim = int(model.text_projection.shape[-1] if hasattr(model, "text_projection")
                             and isinstance(model.text_projection, torch.Tensor) else model.visual.output_dim)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._lock = threading.Lock()  # guards the text cache; model forward passes are thread-safe in eval
        self.text_cache_hits = 0
        self.text_cache_misses = 0
        self._batch_invariant: dict[tuple[int, int], bool] = {}

    # ---- description -------------------------------------------------------------------------------------
    @property
    def is_demo(self) -> bool:
        return self.source.is_demo

    @property
    def notice(self) -> str | None:
        return self.source.notice

    def prompt_notice(self, *texts: str) -> str | None:
        """The notice of a result made for `texts`: the model's own, and with the demo CLIP the words of the
        prompts it does not know, since it scores those arbitrarily (issue 29: "a cat on a sofa" scored 71.4, above
        "a red circle")."""
        unknown: list[str] = []
        if self.source.is_demo:
            from studio.demo.shapes import unknown_words

            unknown = list(dict.fromkeys(w for t in texts if isinstance(t, str) for w in unknown_words(t)))
        extra = (f"The demo CLIP does not know {', '.join(repr(w) for w in unknown[:12])}"
                 f"{' …' if len(unknown) > 12 else ''}: its score for this prompt means little (it knows colours, "
                 "shapes, positions, sizes, filled/outlined and backgrounds).") if unknown else None
        return " ".join(n for n in (self.notice, extra) if n) or None

    def __repr__(self) -> str:
        return (f"CLIPScorer(spec={self.spec!r}, arch={self.source.arch!r}, weights={self.source.kind}, "
                f"device={self.device}, dtype={precision_name(self.dtype)}, image_size={self.image_size})")

    # ---- text --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _refuse_cut_texts(self, texts: list[str], tokens: torch.Tensor) -> None:
        """CLIP reads a fixed number of tokens (77 for OpenAI's) and the tokenizer cuts longer texts without a word;
        refuse them instead, so what the user wrote is what CLIP reads. A row whose last slot is used is full or
        cut; where the tokenizer can count (`encode`), only a text that really overflows is refused."""
        if tokens.ndim != 2 or not bool((tokens[:, -1] != 0).any()):
            return
        context = tokens.shape[1]
        encode = getattr(self.tokenizer, "encode", None)
        for text, row in zip(texts, tokens):
            if row[-1] == 0:
                continue
            n = len(encode(text)) + 2 if callable(encode) else None  # + start and end tokens
            if n is None or n > context:
                count = f" is {n} tokens long" if n else " fills or overflows the context"
                raise ValueError(f"the text {text[:60]!r}{'…' if len(text) > 60 else ''}{count}; CLIP reads "
                                 f"{context} tokens (about {4 * context} characters) and would silently drop the "
                                 "rest: shorten it")

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) float32 L2-normalised embeddings; each string is encoded once and kept in an LRU cache."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError(f"`texts` must be a non-empty list of strings, got {texts!r}")
        for t in texts:
            if not isinstance(t, str):
                raise ValueError(f"`texts` must hold strings, got {type(t).__name__}: {t!r}")
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
            self.text_cache_hits += len(texts) - sum(1 for t in texts if t in missing)
            self.text_cache_misses += len(missing)
        if missing:
            with oom_guard("text encoding"):
                emb = self._encode_fresh(missing)
            with self._lock:
                for t, e in zip(missing, emb):
                    self._text_cache[t] = e
                    self._text_cache.move_to_end(t)
                while len(self._text_cache) > self._text_cache_size:
                    self._text_cache.popitem(last=False)
                found = {t: self._text_cache.get(t) for t in texts}
            # A string evicted between the two steps (tiny caches only) is recomputed from this batch.
            fresh = dict(zip(missing, emb))
            return torch.stack([found[t] if found[t] is not None else fresh[t] for t in texts])
        with self._lock:
            for t in texts:
                self._text_cache.move_to_end(t)
            return torch.stack([self._text_cache[t] for t in texts])

    def _encode_fresh(self, texts: list[str]) -> torch.Tensor:
        """Encode texts in chunks of exactly TEXT_CHUNK (the last one padded with empty strings), so that a text's
        embedding depends on the text alone, not on what else was asked with it: a matrix product's last bits
        change with its shape, and the cache keeps whichever batch met a text first (the same seed once gave
        CLIPScores 66.6 and 67.2 in one server, after another tab had encoded the prompt among other labels)."""
        out = []
        for i in range(0, len(texts), TEXT_CHUNK):
            part = texts[i:i + TEXT_CHUNK]
            tokens = self.tokenizer(part + [""] * (TEXT_CHUNK - len(part)))
            self._refuse_cut_texts(part, tokens[:len(part)])
            tokens = tokens.to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1)[:len(part)])
        return torch.cat(out)

    def encode_prompts(self, classnames: Sequence[str],
                       templates: str | Sequence[str] = "curated") -> torch.Tensor:
        """(N, D) prompt-ensemble embeddings: the renormalised mean over templates of each class's embedding."""
        if isinstance(classnames, str) or len(classnames) == 0:
            raise ValueError(f"`classnames` must be a non-empty list of strings, got {classnames!r}")
        temps = get_templates(templates)
        texts = [t.format(c) for c in classnames for t in temps]
        emb = self.encode_text(texts).view(len(classnames), len(temps), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    # ---- images ------------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] → (B,3,S,S) normalised in the model's dtype: shortest side to S, centre crop."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a (B, 3, H, W) float tensor in [0, 1], got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"`images` must be floats in [0, 1], got dtype {images.dtype}")
        x = images.to(self.device, torch.float32)
        x = resize_crop(x, self.image_size)
        x = (x - self.mean) / self.std
        return x.to(self.dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) float32 L2-normalised embeddings, differentiable with respect to `images`."""
        with oom_guard("image encoding"):
            emb = self.model.encode_image(self.preprocess(images)).float()
        return F.normalize(emb, dim=-1)

    def batch_invariant(self, n: int, k: int) -> bool:
        """Whether encoding k·n images in one call gives, bit for bit, the embeddings and input gradients of k calls
        of n images each (probed once per (n, k) on seeded random images, then remembered).

        Kernels are chosen by batch shape, not content: ViT-B-32 on the CPU passes, the demo ResNet does not (oneDNN
        picks another convolution algorithm for a bigger batch), GPU BLAS rarely does. Several seeds optimised in
        one batch (`CLIPDrawPipeline.iterate_seeds`) encode together only where this holds, so that each seed's
        drawing equals the one its own run makes."""
        if not (isinstance(n, int) and isinstance(k, int) and n >= 1 and k >= 1):
            raise ValueError(f"`n` and `k` must be positive ints, got {n!r}, {k!r}")
        if k == 1:
            return True
        key = (n, k)
        if key not in self._batch_invariant:
            gen = torch.Generator().manual_seed(0)
            s = self.image_size
            x = torch.rand(k * n, 3, s, s, generator=gen).to(self.device).requires_grad_(True)
            w = torch.randn(k * n, self.embed_dim, generator=gen).to(self.device)
            with torch.enable_grad():
                whole = self.encode_image(x)
                (g_whole,) = torch.autograd.grad((whole * w).sum(), x)
                parts, g_parts = [], []
                for i in range(k):
                    xi = x[i * n:(i + 1) * n].detach().requires_grad_(True)
                    e = self.encode_image(xi)
                    parts.append(e.detach())
                    g_parts.append(torch.autograd.grad((e * w[i * n:(i + 1) * n]).sum(), xi)[0])
            self._batch_invariant[key] = bool(torch.equal(whole.detach(), torch.cat(parts))
                                              and torch.equal(g_whole, torch.cat(g_parts)))
        return self._batch_invariant[key]

    @staticmethod
    def similarity(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, N) cosine similarities of normalised embeddings."""
        return image_emb @ text_emb.t()

    @torch.no_grad()
    def score(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, N) CLIPScore: 100 · max(cos, 0) (Hessel et al. 2021, with w = 100 as most tools report it)."""
        return 100.0 * self.similarity(self.encode_image(images), self.encode_text(texts)).clamp(min=0)

    @torch.no_grad()
    def rank(self, images: torch.Tensor, labels: Sequence[str],
             templates: str | Sequence[str] = "curated") -> torch.Tensor:
        """(B, N) zero-shot probabilities over `labels`, using the model's learnt temperature."""
        logit_scale = self.model.logit_scale.exp().float() if hasattr(self.model, "logit_scale") else 100.0
        logits = logit_scale * self.similarity(self.encode_image(images), self.encode_prompts(labels, templates))
        return logits.softmax(dim=-1)

    def image_activations(self, images: torch.Tensor,
                          layers: Sequence[int] = (2, 3)) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final embedding and intermediate activations, differentiable (CLIPasso's geometric loss).

        Layers are ResNet stages 1-4 for ResNet towers and transformer block indices (0-based) for ViTs.
        Returns (emb (B, D) normalised, [activation per layer]), activations in float32.
        """
        visual = self.model.visual
        if hasattr(visual, "layer1"):  # open_clip ModifiedResNet
            n = 4
            modules = {i: getattr(visual, f"layer{i}") for i in range(1, 5)}
        elif hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
            n = len(visual.transformer.resblocks)
            modules = dict(enumerate(visual.transformer.resblocks))
        else:
            raise ValueError(f"`image_activations` supports ResNet and ViT towers, not {type(visual).__name__}")
        for i in layers:
            if i not in modules:
                raise ValueError(f"`layers` must be in {sorted(modules)} for this {n}-layer tower, got {i}")
        acts: dict[int, torch.Tensor] = {}
        hooks = [modules[i].register_forward_hook(lambda m, a, out, i=i: acts.__setitem__(i, out)) for i in layers]
        try:
            emb = self.encode_image(images)
        finally:
            for h in hooks:
                h.remove()
        return emb, [acts[i].float() for i in layers]

    def augment(self, images: torch.Tensor, n: int, distortion: float = 0.5,
                crop: tuple[float, float] = (0.7, 0.9), generator: torch.Generator | None = None,
                fill: float = 1.0, shared: bool = False) -> torch.Tensor:
        """(B·n, 3, S, S) differentiable random perspective + random resized crop, batched (CLIPDraw's augments).

        Matches torchvision's RandomPerspective(distortion, p=1, fill=1) followed by RandomResizedCrop(S,
        scale=crop, ratio=(3/4, 4/3)), but all n·B samples are drawn in one grid_sample on the scorer's device.
        Output i·B + b is augmentation i of image b. `shared=True` draws only n transforms and applies
        transform i to every image (so a second call with the same generator state gives the same n transforms
        whatever B is: CLIPasso augments B sketches and their one photo alike and encodes the photo's n views
        once instead of B times).
        """
        if not isinstance(n, int) or n < 1 or n > 64:
            raise ValueError(f"`n` must be an int in [1, 64], got {n!r}")
        if not 0.0 <= distortion < 1.0:
            raise ValueError(f"`distortion` must be in [0, 1), got {distortion}")
        lo, hi = crop
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"`crop` must satisfy 0 < lo <= hi <= 1, got {crop}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"`images` must be (B, 3, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        m = n if shared else b * n
        dev = images.device
        s = self.image_size

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device="cpu").to(dev)

        # Random resized crop in the (perspective-warped) image, in pixels: area fraction and aspect ratio.
        area = (lo + (hi - lo) * rand(m)) * (h * w)
        log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(m)
        ratio = torch.exp(log_r)
        cw = torch.sqrt(area * ratio).clamp(max=w)
        ch = torch.sqrt(area / ratio).clamp(max=h)
        cx0 = (w - cw) * rand(m)
        cy0 = (h - ch) * rand(m)
        # Output pixel centres → crop coordinates (pixels of the warped image).
        t = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s
        xs = cx0[:, None, None] + cw[:, None, None] * t[None, None, :]  # (m, 1, S)
        ys = cy0[:, None, None] + ch[:, None, None] * t[None, :, None]  # (m, S, 1)
        xs, ys = torch.broadcast_tensors(xs, ys)
        # Random perspective: corners move inwards by up to distortion·half-size (torchvision's sampling).
        hw, hh = w / 2.0, h / 2.0
        dx = distortion * hw * rand(m, 4)
        dy = distortion * hh * rand(m, 4)
        src = torch.tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], device=dev, dtype=torch.float32)
        sign = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], device=dev, dtype=torch.float32)
        dst = src[None] + sign[None] * torch.stack([dx, dy], dim=-1)  # (m, 4, 2) where the corners land
        hom = _homography(dst, src[None].expand(m, 4, 2))  # warped → source pixel coordinates
        pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(m, -1, 3)  # (m, S*S, 3)
        mapped = pts @ hom.transpose(1, 2)
        sx = mapped[..., 0] / mapped[..., 2]
        sy = mapped[..., 1] / mapped[..., 2]
        grid = torch.stack([(sx + 0.5) / w * 2 - 1, (sy + 0.5) / h * 2 - 1], dim=-1).view(m, s, s, 2)
        # Points that land inside the image sample it (border-clamped, so crop edges never blend in the fill);
        # points the perspective pushed outside read as `fill`, as torchvision's fill does.
        inside = ((sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)).view(m, 1, s, s)
        if shared and b > 1:  # transform i for each image b, at output i·B + b
            grid, inside = grid.repeat_interleave(b, dim=0), inside.repeat_interleave(b, dim=0)
        out = F.grid_sample(images.repeat(n, 1, 1, 1), grid.to(images.dtype), mode="bilinear",
                            padding_mode="border", align_corners=False)
        return torch.where(inside, out, torch.full_like(out, fill))


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(m, 3, 3) homographies H with H·src_i ∝ dst_i for 4 point pairs each (m, 4, 2), by a batched solve."""
    m = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (m, 8, 8)
    rhs = torch.cat([u, v], dim=1)  # (m, 8)
    sol = torch.linalg.solve(a.double(), rhs.double()).float()
    return torch.cat([sol, torch.ones(m, 1, device=src.device)], dim=1).view(m, 3, 3)


# ---- the shared cache ----------------------------------------------------------------------------------------
_SCORERS: OrderedDict[tuple, CLIPScorer] = OrderedDict()
_LOADING: dict[tuple, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()
MAX_MODELS = int(os.environ.get("STUDIO_MAX_MODELS", "2"))  # resident CLIP models before the oldest is released


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip logs 'No pretrained weights loaded ... initialized randomly' when built without weights."""
    drop, root = _DropRandomInit(), logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


RANDOM_WEIGHTS_SEED = 0  # the seed of `ARCH/random` models


def _register_demo_config() -> None:
    import open_clip

    if DEMO_CLIP not in open_clip.list_models():
        open_clip.add_model_config(MODELS_DIR / f"{DEMO_CLIP}.json")


def _build(source: ClipSource, device: torch.device, dtype: torch.dtype) -> CLIPScorer:
    import open_clip

    if source.is_demo:
        _register_demo_config()
    quiet = _quiet_random_init_warning() if source.weights is not None else contextlib.nullcontext()
    # Random weights (ARCH/random) come from a fixed seed, without touching the caller's random state: the same
    # spec is the same model in every process (accelerate's, a rerun's), so its results reproduce like real ones.
    with quiet, torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = open_clip.create_model(source.arch, pretrained=None, load_weights=False,
                                       force_quick_gelu=source.quick_gelu, device="cpu")
    if source.weights is not None:
        sd = load_state_dict(source.weights)
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k != "attn_mask"]  # buffer some checkpoints omit
        if missing or unexpected:
            raise ValueError(
                f"weights {str(source.weights)!r} do not fit architecture {source.arch!r}: "
                f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}"
            )
    model = model.to(device=device, dtype=dtype)
    tokenizer = open_clip.get_tokenizer(source.arch)
    return CLIPScorer(model, tokenizer, source, device, dtype)


def get_scorer(spec: str | None = None, device: str | torch.device | None = None,
               precision: str | None = None, allow_demo: bool = True) -> CLIPScorer:
    """The one shared scorer for (spec, device, precision); loads it on first use, thread-safely.

    `spec` defaults to `STUDIO_CLIP` (else 'ViT-B-32/openai'); see `studio.hub.resolve_clip` for the forms.
    Real weights that cannot be had fall back to the bundled demo model with `scorer.notice` set, unless
    `allow_demo=False`.
    """
    spec, dev, key = _key(spec, device, precision, allow_demo)
    dtype = key[2]
    with _REGISTRY_LOCK:
        stand_in = _SCORERS.get(key)
        recheck = stand_in is not None and _recheck_due(stand_in)
    if recheck and real_weights_within_reach(spec):  # outside the lock: the probe may take seconds
        with _REGISTRY_LOCK:
            if _SCORERS.get(key) is stand_in:  # not _release: a job may still be running on it
                del _SCORERS[key]
    with _REGISTRY_LOCK:
        if key in _SCORERS:
            _SCORERS.move_to_end(key)
            return _SCORERS[key]
        lock = _LOADING.setdefault(key, threading.Lock())
    with lock:  # one loader per key; others wait here and then find it in the cache
        with _REGISTRY_LOCK:
            if key in _SCORERS:
                return _SCORERS[key]
        try:
            source = resolve_clip(spec, allow_demo=allow_demo)
            with oom_guard(f"loading CLIP {spec!r}"):
                scorer = _build(source, dev, dtype)
        except BaseException as err:
            with _REGISTRY_LOCK:  # a failing spec leaves no loader entry behind (the table cannot grow)
                _LOADING.pop(key, None)
            # A half-built model is held by reference cycles through the traceback's frames: break them now,
            # or every failed load keeps its gigabytes until some later collection.
            err.__traceback__ = None
            del err
            gc.collect()
            raise
        _warn_once(source)
        with _REGISTRY_LOCK:
            _SCORERS[key] = scorer
            _LOADING.pop(key, None)
            while len(_SCORERS) > max(1, MAX_MODELS):
                _release(_SCORERS.popitem(last=False)[1])
        return scorer


_WARNED: set[tuple[str, str]] = set()


def _warn_once(source: ClipSource) -> None:
    """A Python warning and a log line, once per spec, when what loaded is not what was asked for (the demo
    model standing in) or cannot answer (random weights): the API must not switch silently."""
    if source.notice is None or source.kind not in ("demo", "random") or source.spec == DEMO_CLIP:
        return
    if (source.spec, source.kind) in _WARNED:
        return
    _WARNED.add((source.spec, source.kind))
    log.warning("%s", source.notice)
    warnings.warn(source.notice, DemoModelWarning, stacklevel=3)


RECHECK_S = 60.0  # how often a demo stand-in looks again for the real weights it stands in for


def _key(spec: str | None, device: str | torch.device | None, precision: str | None,
         allow_demo: bool) -> tuple[str, torch.device, tuple]:
    """(spec as used, device, the cache key) for `get_scorer`'s arguments."""
    spec = (spec or os.environ.get("STUDIO_CLIP") or DEFAULT_CLIP).strip()
    dev = pick_device(device)
    return spec, dev, (spec, str(dev), pick_dtype(dev, precision), allow_demo)


def _recheck_due(scorer: CLIPScorer, claim: bool = True) -> bool:
    """Whether a demo model standing in for real weights should look for them again (once a minute). `claim`
    records the look as taken, so one caller does it (get_scorer, holding the lock); `is_loaded` only asks."""
    if not scorer.source.is_demo or scorer.source.spec == DEMO_CLIP:
        return False
    now = time.monotonic()
    if now - scorer._checked_at < RECHECK_S:
        return False
    if claim:
        scorer._checked_at = now
    return True


def is_loaded(spec: str | None = None, device: str | torch.device | None = None, precision: str | None = None,
              allow_demo: bool = True) -> bool:
    """Whether `get_scorer` with these arguments would return at once (the model is resident, and it is not a
    demo stand-in about to give way to real weights that have become available)."""
    spec, _, key = _key(spec, device, precision, allow_demo)
    with _REGISTRY_LOCK:
        scorer = _SCORERS.get(key)
    if scorer is None:
        return False
    return not (_recheck_due(scorer, claim=False) and real_weights_within_reach(spec))


def _release(scorer: CLIPScorer) -> None:
    scorer.model.to("cpu")
    scorer._text_cache.clear()
    if scorer.device.type == "cuda":
        torch.cuda.empty_cache()


def release(spec: str | None = None) -> int:
    """Drop resident scorers (all, or those of one spec) and free their GPU memory; returns how many."""
    with _REGISTRY_LOCK:
        keys = [k for k in _SCORERS if spec is None or k[0] == spec]
        for k in keys:
            _release(_SCORERS.pop(k))
    return len(keys)


def loaded() -> list[str]:
    """Descriptions of the resident scorers, oldest first."""
    with _REGISTRY_LOCK:
        return [repr(s) for s in _SCORERS.values()]


def available_specs() -> list[str]:
    """Specs offered in the UI: the demo model (when bundled) and common OpenAI CLIPs."""
    specs = [defaults.DEFAULT_CLIP, "ViT-B-16/openai", "ViT-L-14/openai", "RN50/openai", "RN101/openai"]
    if (MODELS_DIR / f"{DEMO_CLIP}.safetensors").is_file():
        specs.insert(0, DEMO_CLIP)
    env = os.environ.get("STUDIO_CLIP")
    if env and env not in specs:
        specs.insert(0, env)
    return specs
