"""Open-vocabulary detection (CLIP Lens): labelled boxes for any text query, with the CLIP the scorer holds.

The design follows ViLD (Gu et al. 2021, "Open-vocabulary Object Detection via Vision and Language Knowledge
Distillation"), whose zero-shot baseline ViLD-image names class-agnostic region proposals by cropping each one,
embedding the crop with CLIP's image encoder and comparing it with the text embeddings of the class names; ViLD
ensembles the embeddings of a crop at 1× and at 1.5× the box (the larger crop adds context) and keeps the best boxes
per class after non-maximum suppression. ViLD's proposals come from a region-proposal network trained on base
classes; there are no such weights here (the detector must run on any open_clip model, the bundled demo CLIP
included), so the class-agnostic proposals are the classical kind that needs no training: selective search's
(Uijlings et al. 2013) — image regions of similar colour grown over 4-neighbour pixels, then greedily merged with
their most similar neighbour (colour, size and fill, the measures of selective search), every region and every merge
giving one box — optionally with multi-scale sliding windows on top.

Why proposals that follow regions and not a dense grid of windows: CLIP scores a crop by what is in it, not by
whether the object is whole, so among overlapping windows the best-scoring one is often a corner of the object (the
demo CLIP scores a window holding a quarter of a blue square above the square's own box). Region proposals give
every object its whole box once; CLIP then only has to say which region is which. With the demo CLIP the box of "a
blue square" in 20 seeded scenes of 3-5 shapes (`studio.demo.scenes`) has IoU ≥ 0.5 with the truth in 20 of 20
(tests/test_lens_detect.py); adding the windows lowers that (they are off by default, for photos whose objects are
not regions of one colour).

CLIP's dense patch features (MaskCLIP, Zhou et al. 2022) were the other option; the demo CLIP is a ResNet on 64-px
images whose last feature map is 2×2, too coarse to draw a box from.

When OWL-ViT or OWLv2 weights are on this machine (a folder, or the Hugging Face cache), `transformers`'
zero-shot object detection (Minderer et al. 2022) is a second detector behind the same interface
(`OwlDetector.from_pretrained`); its scores are its own sigmoid probabilities × 100.

On the run protocol: `iter_detect(image, queries, **settings)` yields a `Progress` for each batch of proposals
scored (preview: the image with the boxes found so far) and ends with `LensDetections`; a stop keeps the boxes of
the proposals scored so far. The task is registered as `lens-detect`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from pipelines.registry import register
from studio.images import MIN_SIDE, load_image
from studio.progress import Progress, Result
from studio.prompts import TEMPLATE_SETS
from studio.runner import drain
from studio.scorer import CLIPScorer, get_scorer, oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve, run_settings

MAX_QUERIES = 32  # texts per image: each proposal is compared with every query
MAX_IMAGE_SIDE = 1024  # larger images are downscaled before anything (studio.images.WORK_SIDE)
TEMPLATE_CHOICES = ("auto", *TEMPLATE_SETS)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (128, 128, 0))


@dataclass
class LensDetectConfig:
    """Settings of open-vocabulary detection: defaults (with where they come from) and limits."""

    threshold: float = param(20.0, 0.0, 100.0, step=0.5, label="Score threshold",
                             help="boxes scoring below this are hidden (and counted): the CLIP detector's score is "
                                  "the cosine similarity × 100 of the box's crop and its query (20: about where "
                                  "real CLIPs' matches start; the demo CLIP's matches score 50-70), OWL-ViT's its "
                                  "probability × 100")
    max_detections: int = param(10, 1, 100, label="Most boxes",
                                help="boxes kept over all queries, best first (COCO evaluates 100; 10 reads well)")
    nms_iou: float = param(0.5, 0.05, 1.0, step=0.05, label="NMS IoU",
                           help="a box overlapping a better box of the same query by more than this IoU is dropped "
                                "(non-maximum suppression; 0.5, the usual value and ViLD's)")
    context: float = param(1.5, 1.0, 3.0, step=0.1, label="Crop context",
                           help="each box is embedded as a crop at 1× and at this multiple of its size, averaged "
                                "(ViLD's 1× + 1.5× ensemble)")
    colour_tolerance: float = param(0.08, 0.01, 0.5, step=0.01, label="Region colour tolerance",
                                    help="neighbouring pixels whose channels differ by less than this (0-1) join one "
                                         "region (0.08 keeps anti-aliased edges apart from fills)")
    min_region: float = param(0.002, 0.0001, 0.1, step=0.0001, label="Smallest region",
                              help="regions smaller than this fraction of the image are no proposals (0.002: about "
                                   "an 11-px square on 256 px)")
    windows: bool = param(False, label="Add sliding windows",
                          help="also propose multi-scale square windows at 50 % overlap (for photos whose objects "
                               "are not regions of one colour; they lower the demo scenes' accuracy, so off)")
    max_proposals: int = param(300, 1, 2000, control=False, label="Most proposals",
                               help="boxes scored per image, regions first (bounds the work: two crops each)")
    work_side: int = param(256, 64, 1024, control=False,
                           help="proposals are found on the image downscaled to this longest side (bounds the "
                                "region growing); crops are cut from the full image")
    batch_size: int = param(64, 1, 512, control=False,
                            help="proposals embedded per step (two crops each)")
    templates: str = param("auto", choices=TEMPLATE_CHOICES, label="Prompt templates",
                           help="prompt ensemble of the queries, as in zero-shot labels: 'auto' is 'shapes' for the "
                                "demo CLIP, else 'curated'")
    seed: int = param(0, 0, SEED_MAX, control=False, help="unused: detection is deterministic")


@dataclass
class LensDetections(Result):
    """Labelled boxes, best first. `boxes`: (x0, y0, x1, y1) pixels of `source` (the image as read); `labels`:
    the query of each box; `box_scores`: its score (see `LensDetectConfig.threshold`); `image`: `source` with the
    boxes drawn; `hidden`: boxes above the NMS but below the threshold; `detector`: "clip" or the OWL model.
    `save()` adds `lens-detect.json` in COCO's detection format (`coco()`)."""

    task = "lens-detect"
    source: Image.Image | None = None
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    box_scores: list[float] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    hidden: int = 0
    proposals: int = 0
    detector: str = "clip"

    def coco(self, file_name: str = "image.png") -> dict[str, Any]:
        """COCO-style detections: images, categories (the queries) and annotations with bbox [x, y, w, h]."""
        w, h = self.source.size if self.source is not None else (0, 0)
        cats = {q: i + 1 for i, q in enumerate(self.queries)}
        anns = [{"id": i + 1, "image_id": 1, "category_id": cats[lab],
                 "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                 "area": round((b[2] - b[0]) * (b[3] - b[1]), 2), "score": round(s, 4), "iscrowd": 0}
                for i, (b, lab, s) in enumerate(zip(self.boxes, self.labels, self.box_scores))]
        return {"images": [{"id": 1, "file_name": file_name, "width": w, "height": h}],
                "categories": [{"id": i, "name": q} for q, i in cats.items()], "annotations": anns,
                "info": {"detector": self.detector, "task": self.task}}

    def annotations(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """(box, "label score") pairs, as `gr.AnnotatedImage` takes them."""
        return [((int(b[0]), int(b[1]), int(math.ceil(b[2])), int(math.ceil(b[3]))), f"{lab} {s:.1f}")
                for b, lab, s in zip(self.boxes, self.labels, self.box_scores)]

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        from pipelines.lens import _folder, _write_json

        out = _folder(folder, self.task)
        paths = super().save(out, video, fps)
        paths["json"] = _write_json(out / f"{self.task}.json", self.coco(f"{self.task}.png"))
        return paths


# ------------------------------------------------------------------------------------------------ input checks
def parse_queries(queries: Any, name: str = "queries") -> list[str]:
    """Queries from comma- or newline-separated text or a list of texts: stripped, de-duplicated, at most
    `MAX_QUERIES`; an empty list is a `ValueError` naming the argument."""
    if queries is None:
        return []
    if isinstance(queries, str):
        items = queries.replace(",", "\n").splitlines()
    elif isinstance(queries, (list, tuple)) and all(isinstance(q, str) for q in queries):
        items = list(queries)
    else:
        raise ValueError(f"`{name}` must be text (comma or newline separated) or a list of texts, got {queries!r:.80}")
    out = list(dict.fromkeys(check_text(q, name) for q in items if q.strip()))
    if len(out) > MAX_QUERIES:
        raise ValueError(f"`{name}` may hold at most {MAX_QUERIES} queries, got {len(out)}")
    return out


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of (N, 4) and (M, 4) boxes (x0, y0, x1, y1)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best first (torchvision.ops.nms's rule, here to need no
    compiled op)."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    over = (box_iou(boxes, boxes) > iou).numpy()  # (N, N) who suppresses whom
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in order:
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return keep


# --------------------------------------------------------------------------------------------------- proposals
def colour_regions(x: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(H, W) region labels of a (3, H, W) image in [0, 1]: 4-neighbour pixels whose channels all differ by less
    than `tolerance` share a label (min-label propagation with pointer jumping; converges in O(log) rounds on
    convex regions, at most H + W on any)."""
    _, h, w = x.shape
    lab = torch.arange(h * w, device=x.device).view(h, w)
    big = h * w
    right = (x[:, :, 1:] - x[:, :, :-1]).abs().amax(0) < tolerance  # (H, W-1): pixel joins its right neighbour
    down = (x[:, 1:, :] - x[:, :-1, :]).abs().amax(0) < tolerance  # (H-1, W)
    for _ in range(2 * (h + w)):
        new = lab.clone()
        new[:, :-1] = torch.minimum(new[:, :-1], torch.where(right, lab[:, 1:], big))
        new[:, 1:] = torch.minimum(new[:, 1:], torch.where(right, lab[:, :-1], big))
        new[:-1] = torch.minimum(new[:-1], torch.where(down, lab[1:], big))
        new[1:] = torch.minimum(new[1:], torch.where(down, lab[:-1], big))
        flat = new.view(-1)
        new = flat[flat].view(h, w)  # pointer jumping: a label's own label
        if torch.equal(new, lab):
            break
        lab = new
    return lab


def region_proposals(x: torch.Tensor, tolerance: float, min_region: float, limit: int) -> list[tuple[float, ...]]:
    """Selective-search boxes of a (3, H, W) image: every colour region of at least `min_region` of the area, then
    the box of every greedy merge of the two most similar adjacent regions (colour + size + fill similarity,
    Uijlings et al. 2013 §3.2), at most `limit` boxes in all."""
    _, h, w = x.shape
    lab = colour_regions(x, tolerance).view(-1)
    ids, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    keep = counts >= max(1, min_region * h * w)
    order = torch.argsort(counts, descending=True)
    order = order[keep[order]][: max(1, limit)]
    if order.numel() == 0:
        return [(0.0, 0.0, float(w), float(h))]
    remap = torch.full((ids.numel(),), -1, dtype=torch.long)
    remap[order] = torch.arange(order.numel())
    reg = remap[inverse].view(h, w)  # (H, W) region index, -1 for pixels of small regions (edges, noise)
    n = order.numel()
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    flat, valid = reg.view(-1), reg.view(-1) >= 0
    idx = flat[valid]
    area = torch.bincount(idx, minlength=n).float()
    colour = torch.stack([torch.bincount(idx, weights=x[c].reshape(-1)[valid], minlength=n) for c in range(3)], 1)
    colour = colour / area[:, None]
    x0 = torch.full((n,), float(w)).scatter_reduce(0, idx, xs.reshape(-1)[valid].float(), "amin")
    y0 = torch.full((n,), float(h)).scatter_reduce(0, idx, ys.reshape(-1)[valid].float(), "amin")
    x1 = torch.zeros(n).scatter_reduce(0, idx, xs.reshape(-1)[valid].float() + 1, "amax")
    y1 = torch.zeros(n).scatter_reduce(0, idx, ys.reshape(-1)[valid].float() + 1, "amax")
    regions = {i: {"box": [x0[i].item(), y0[i].item(), x1[i].item(), y1[i].item()], "area": area[i].item(),
                   "colour": colour[i]} for i in range(n)}
    # adjacency across thin edges: pixels up to 2 apart (anti-aliased borders belong to no region)
    pairs: set[tuple[int, int]] = set()
    for dy, dx in ((0, 1), (1, 0), (0, 2), (2, 0), (1, 1), (1, -1)):
        a = reg[: h - dy, max(0, -dx): w - max(0, dx)]
        b = reg[dy:, max(0, dx): w - max(0, -dx)]
        m = (a >= 0) & (b >= 0) & (a != b)
        for i, j in torch.stack([a[m], b[m]], 1).unique(dim=0).tolist():
            pairs.add((min(i, j), max(i, j)))
    boxes = [tuple(r["box"]) for r in regions.values()]
    total = float(h * w)

    def similarity(i: int, j: int) -> float:
        ri, rj = regions[i], regions[j]
        bi, bj = ri["box"], rj["box"]
        union = (max(bi[2], bj[2]) - min(bi[0], bj[0])) * (max(bi[3], bj[3]) - min(bi[1], bj[1]))
        col = 1.0 - float((ri["colour"] - rj["colour"]).abs().sum()) / 3.0
        size = 1.0 - (ri["area"] + rj["area"]) / total
        fill = 1.0 - (union - ri["area"] - rj["area"]) / total
        return col + size + fill

    next_id = n
    while pairs and len(boxes) < limit:
        i, j = max(pairs, key=lambda p: similarity(*p))
        ri, rj = regions.pop(i), regions.pop(j)
        a = ri["area"] + rj["area"]
        box = [min(ri["box"][0], rj["box"][0]), min(ri["box"][1], rj["box"][1]), max(ri["box"][2], rj["box"][2]),
               max(ri["box"][3], rj["box"][3])]
        mean = (ri["colour"] * ri["area"] + rj["colour"] * rj["area"]) / a
        regions[next_id] = {"box": box, "area": a, "colour": mean}
        new_pairs = set()
        for p, q in pairs:
            p2, q2 = (next_id if p in (i, j) else p), (next_id if q in (i, j) else q)
            if p2 != q2:
                new_pairs.add((min(p2, q2), max(p2, q2)))
        pairs = new_pairs
        boxes.append(tuple(box))
        next_id += 1
    return boxes


def window_proposals(h: int, w: int, scales: Sequence[float] = (0.15, 0.25, 0.4, 0.6)) -> list[tuple[float, ...]]:
    """Square windows of `scales` × the short side at 50 % overlap."""
    out = []
    for s in scales:
        side = s * min(h, w)
        step = side / 2
        for y in np.arange(0.0, h - side + 1e-6, step):
            for x in np.arange(0.0, w - side + 1e-6, step):
                out.append((float(x), float(y), float(x + side), float(y + side)))
    return out


def square_crops(img: torch.Tensor, boxes: torch.Tensor, scale: float, out: int, fill: torch.Tensor) -> torch.Tensor:
    """(N, 3, out, out) square crops of a (1, 3, H, W) image centred on each box, of side `scale` × the box's
    longer side (CLIP sees square images; a stretched crop would distort the object), the outside as `fill`."""
    _, _, h, w = img.shape
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1.0) * scale
    t = (torch.arange(out, device=img.device, dtype=torch.float32) + 0.5) / out - 0.5
    gx = (cx[:, None] + side[:, None] * t[None]) / w * 2 - 1  # (N, out)
    gy = (cy[:, None] + side[:, None] * t[None]) / h * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (N, out, out, 2)
    f = fill.view(1, 3, 1, 1)
    # the crop is usually smaller than the image: antialias by a box-filter first when it shrinks a lot
    src = img - f
    crops = F.grid_sample(src.expand(len(boxes), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return crops + f


# ----------------------------------------------------------------------------------------------- OWL-ViT path
class OwlDetector:
    """`transformers`' zero-shot object detection (OWL-ViT, OWLv2) behind the Lens detector interface:
    `detect(image, queries, threshold) -> (boxes (N, 4) pixels, query index (N,), scores (N,) in [0, 100])`.

    `tokenizer(texts)` returns {"input_ids", "attention_mask"} tensors (the processor's tokenizer);
    `image_processor` is the model's `OwlViTImageProcessor` / `Owlv2ImageProcessor`."""

    def __init__(self, model: Any, image_processor: Any, tokenizer: Callable, name: str = "owl-vit"):
        self.model = model.eval().requires_grad_(False)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def from_pretrained(cls, name: str, device: str | None = None) -> "OwlDetector":
        """Load OWL-ViT / OWLv2 from a local folder or the Hugging Face cache, else download it (unless offline);
        `studio.hub.WeightsNotFoundError` names what was tried."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from studio.device import pick_device
        from studio.hub import WeightsNotFoundError, hub_reachable, offline

        path = os.path.expanduser(name)
        tried = []
        kwargs_list = []
        if os.path.isdir(path):
            kwargs_list.append((path, {}))
        else:
            tried.append(f"local folder {path}: not there")
            kwargs_list.append((name, {"local_files_only": True}))
            if not offline() and hub_reachable():
                kwargs_list.append((name, {}))
            else:
                tried.append("download: skipped (HF_HUB_OFFLINE is set or the Hub cannot be reached)")
        for where, kw in kwargs_list:
            try:
                processor = AutoProcessor.from_pretrained(where, **kw)
                model = AutoModelForZeroShotObjectDetection.from_pretrained(where, **kw)
            except (OSError, ValueError) as err:
                tried.append(f"{where} {kw or ''}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                continue
            tok = processor.tokenizer
            return cls(model.to(pick_device(device)), processor.image_processor,
                       lambda texts, tok=tok: tok(texts, padding="max_length", truncation=True, return_tensors="pt"),
                       name)
        raise WeightsNotFoundError(name, tried, f"`hf download {name}` on a machine with network access, then pass "
                                                "the folder (or keep the Hugging Face cache)")

    @torch.no_grad()
    def detect(self, image: Image.Image, queries: list[str], threshold: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = next(self.model.parameters()).device
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"].to(dev)
        tokens = {k: v.to(dev) for k, v in self.tokenizer(queries).items()}
        with oom_guard("OWL-ViT detection"):
            outputs = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                 pixel_values=pixels)
        w, h = image.size
        size = max(w, h) if "Owlv2" in type(self.image_processor).__name__ else None  # OWLv2 pads to a square
        target = torch.tensor([[size, size]] if size else [[h, w]])
        post = self.image_processor.post_process_object_detection(outputs, threshold=threshold / 100.0,
                                                                  target_sizes=target)[0]
        boxes = post["boxes"].float().cpu()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        return boxes, post["labels"].long().cpu(), 100.0 * post["scores"].float().cpu()


OWL_MODELS = ("google/owlv2-base-patch16-ensemble", "google/owlvit-base-patch32", "google/owlvit-base-patch16",
              "google/owlvit-large-patch14")


def available_detectors() -> list[str]:
    """"clip" and the OWL-ViT / OWLv2 models whose weights are on this machine (`STUDIO_DETECTOR`, a folder or a
    repo id, and the known repos in the Hugging Face cache); nothing is downloaded or probed online."""
    from studio.hub import hf_cached_file

    found = ["clip"]
    env = os.environ.get("STUDIO_DETECTOR", "").strip()
    for name in ([env] if env and env != "clip" else []) + list(OWL_MODELS):
        if os.path.isdir(os.path.expanduser(name)):
            found.append(name)
        elif ("/" in name and hf_cached_file(name, ("config.json",)) is not None
              and hf_cached_file(name, ("model.safetensors", "pytorch_model.bin")) is not None):
            found.append(name)
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------------------------- the pipeline
class LensDetectPipeline:
    """Open-vocabulary boxes: CLIP-named region proposals (ViLD-image), or OWL-ViT when one is given.

    >>> det = LensDetectPipeline.from_pretrained("shapes-clip")  # doctest: +SKIP
    >>> det.detect("scene.png", "a blue square, a red circle").save("out/")  # doctest: +SKIP
    """

    def __init__(self, scorer: CLIPScorer | None, detector: OwlDetector | None = None,
                 config: LensDetectConfig | None = None):
        if scorer is None and detector is None:
            raise ValueError("`scorer` and `detector` are both None: give a CLIP scorer or an OWL detector")
        self.scorer = scorer
        self.detector = detector
        self.config = config or LensDetectConfig()
        self.crops_encoded = 0  # crops through the image encoder (benchmarks and tests count work)

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: str | None = None, detector: str | None = None,
                        **kwargs: Any) -> "LensDetectPipeline":
        owl = OwlDetector.from_pretrained(detector, device=device) if detector and detector != "clip" else None
        return cls(get_scorer(spec, device=device) if owl is None else None, owl, **kwargs)

    def detect(self, image: Any, queries: Any = None, *, query_image: Any = None, callback: Callable | None = None,
               **settings: Any) -> LensDetections:
        """Run `iter_detect` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_detect(image, queries, query_image=query_image, **settings), callback)

    def iter_detect(self, image: Any, queries: Any = None, *, query_image: Any = None, **settings: Any
                    ) -> Iterator[Progress | LensDetections]:
        """Boxes for each text query (or for an example crop, `query_image`), one step per batch of proposals."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = resolve(self.config, settings)
        names = parse_queries(queries)
        if query_image is not None:
            if self.detector is not None:
                raise ValueError("`query_image` works with the CLIP detector only; give text `queries` to OWL-ViT")
            names = names + ["example"]
        if not names:
            raise ValueError(f"`queries` must name at least one thing to find (or give `query_image`), got {queries!r}")
        pil = load_image(image, "image", max_side=MAX_IMAGE_SIDE)
        inputs = {"queries": [n for n in names if n != "example" or query_image is None]}
        if self.detector is not None:
            yield from self._owl(pil, names, cfg, inputs, t0)
            return
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        scorer = self.scorer
        # 2. the queries' embeddings
        templates = cfg.templates if cfg.templates != "auto" else ("shapes" if scorer.is_demo else "curated")
        with torch.no_grad(), oom_guard("CLIP Lens detection"):
            texts = [n for n in names if n != "example" or query_image is None]
            q = [scorer.encode_prompts([_strip_article(t)] if scorer.is_demo else [t], templates)[0] for t in texts]
            if query_image is not None:
                ex = load_image(query_image, "query_image")
                ext = torch.from_numpy(np.asarray(ex, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
                q.append(scorer.encode_image(ext)[0])
            q = torch.stack(q)  # (Q, D)
        # 3. class-agnostic proposals (bounded), in full-image pixels
        boxes = self._proposals(x, cfg)
        fill = torch.cat([x[0, :, 0, :], x[0, :, -1, :], x[0, :, :, 0], x[0, :, :, -1]], dim=1).median(dim=1).values
        # 4. name each proposal: its crops' mean embedding against the queries
        n = len(boxes)
        total = max(1, math.ceil(n / cfg.batch_size))
        sims = torch.empty(0, len(names))
        stopped = False
        dev = scorer.device
        for step in range(total):
            chunk = boxes[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            with torch.no_grad(), oom_guard("CLIP Lens detection"):
                xd, cd, fd = x.to(dev), chunk.to(dev), fill.to(dev)
                e = scorer.encode_image(square_crops(xd, cd, 1.0, scorer.image_size, fd))
                e = e + scorer.encode_image(square_crops(xd, cd, cfg.context, scorer.image_size, fd))
                self.crops_encoded += 2 * len(chunk)
                sims = torch.cat([sims, 100.0 * (F.normalize(e, dim=-1) @ q.to(dev).T).float().cpu()])
            kept = self._select(boxes[: len(sims)], sims, names, cfg, pil.width * pil.height)
            preview = draw_boxes(pil, *kept[:3])
            if (yield Progress(step + 1, total, preview, {"proposals": float(len(sims)),
                                                         "boxes": float(len(kept[0]))})) == "stop":
                stopped = True
                break
        bxs, labels, scores, hidden = self._select(boxes[: len(sims)], sims, names, cfg, pil.width * pil.height)
        yield LensDetections(image=draw_boxes(pil, bxs, labels, scores), source=pil, boxes=bxs, labels=labels,
                             box_scores=scores, queries=names, hidden=hidden, proposals=len(sims), detector="clip",
                             scores={"top_score": scores[0]} if scores else {}, seed=cfg.seed,
                             timings={"total_s": time.perf_counter() - t0}, settings=run_settings(cfg, **inputs),
                             stopped=stopped, notice=_notice(scorer.notice, hidden, cfg.threshold),
                             steps_run=step + 1)

    # ------------------------------------------------------------------------------------------------- helpers
    def _proposals(self, x: torch.Tensor, cfg: LensDetectConfig) -> torch.Tensor:
        """(N, 4) proposal boxes in pixels of `x`, found on a copy at most `work_side` on its longer side."""
        _, _, h, w = x.shape
        scale = min(1.0, cfg.work_side / max(h, w))
        small = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="area")
        boxes = region_proposals(small[0], cfg.colour_tolerance, cfg.min_region, cfg.max_proposals)
        if cfg.windows:
            boxes += window_proposals(*small.shape[-2:])
        out = torch.tensor(boxes, dtype=torch.float32) / scale
        out[:, 0::2] = out[:, 0::2].clamp(0, w)
        out[:, 1::2] = out[:, 1::2].clamp(0, h)
        keep, seen = [], set()
        for i, b in enumerate(out.tolist()):
            key = tuple(round(v) for v in b)
            if key not in seen and b[2] - b[0] >= 1 and b[3] - b[1] >= 1:
                seen.add(key)
                keep.append(i)
        return out[keep[: cfg.max_proposals]]

    @staticmethod
    def _select(boxes: torch.Tensor, sims: torch.Tensor, names: list[str], cfg: LensDetectConfig,
                image_area: float | None = None) -> tuple[list[list[float]], list[str], list[float], int]:
        """Each proposal takes its best query; per query NMS; then the threshold and `max_detections`.

        A box covering most of the image (over `LARGE_BOX` of `image_area`) must score more for its query than
        every crop inside it: the whole canvas named "a red circle" at 25.2 while the circle's own box scored more
        was the context speaking, not a detection (issue 29). Such a box is hidden and counted."""
        if len(sims) == 0:
            return [], [], [], 0
        score, label = sims.max(dim=1)
        areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        found: list[tuple[float, int, int]] = []
        dropped = 0
        for qi in range(len(names)):
            idx = torch.nonzero(label == qi).flatten()
            if idx.numel():
                for k in nms(boxes[idx], score[idx], cfg.nms_iou):
                    i = int(idx[k])
                    large = image_area and areas[i] > LARGE_BOX * image_area
                    if large and _beaten_inside(boxes, areas, sims[:, qi], i):
                        dropped += 1
                        continue
                    found.append((float(score[i]), qi, i))
        found.sort(key=lambda t: (-t[0], t[1], t[2]))
        shown = [f for f in found if f[0] >= cfg.threshold]
        hidden = len(shown) - len(shown[: cfg.max_detections]) + len(found) - len(shown) + dropped
        shown = shown[: cfg.max_detections]
        return ([[round(v, 2) for v in boxes[i].tolist()] for _, _, i in shown], [names[qi] for _, qi, _ in shown],
                [s for s, _, _ in shown], hidden)

    def _owl(self, pil: Image.Image, names: list[str], cfg: LensDetectConfig, inputs: dict, t0: float
             ) -> Iterator[Progress | LensDetections]:
        boxes, labels, scores = self.detector.detect(pil, names, 0.0)
        real = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)  # clamped to nothing: no box
        boxes, labels, scores = boxes[real], labels[real], scores[real]
        bxs, labs, scs, hidden = [], [], [], 0
        if len(boxes):
            sims = torch.full((len(boxes), len(names)), -math.inf)
            sims[torch.arange(len(boxes)), labels] = scores
            bxs, labs, scs, hidden = self._select(boxes, sims, names, cfg)
        preview = draw_boxes(pil, bxs, labs, scs)
        stopped = (yield Progress(1, 1, preview, {"boxes": float(len(bxs))})) == "stop"
        yield LensDetections(image=preview, source=pil, boxes=bxs, labels=labs, box_scores=scs, queries=names,
                             hidden=hidden, proposals=len(boxes), detector=self.detector.name,
                             scores={"top_score": scs[0]} if scs else {}, seed=cfg.seed,
                             timings={"total_s": time.perf_counter() - t0}, settings=run_settings(cfg, **inputs),
                             stopped=stopped, notice=_notice(None, hidden, cfg.threshold), steps_run=1)


def _strip_article(text: str) -> str:
    """The demo CLIP's templates add "a ": "a blue square" is ensembled as "blue square" in them."""
    for art in ("a ", "an ", "the "):
        if text.lower().startswith(art):
            return text[len(art):]
    return text


LARGE_BOX = 0.5  # a box over this fraction of the image must beat the crops inside it (see `_select`)


def _beaten_inside(boxes: torch.Tensor, areas: torch.Tensor, query_scores: torch.Tensor, i: int) -> bool:
    """Whether some proposal lying inside box `i` (90 % of it within, at most half its area) scores at least as
    much for the query as box `i` does."""
    b = boxes[i]
    iw = (torch.minimum(boxes[:, 2], b[2]) - torch.maximum(boxes[:, 0], b[0])).clamp(min=0)
    ih = (torch.minimum(boxes[:, 3], b[3]) - torch.maximum(boxes[:, 1], b[1])).clamp(min=0)
    inside = (iw * ih >= 0.9 * areas) & (areas <= 0.5 * areas[i]) & (areas > 0)
    return bool((query_scores[inside] >= query_scores[i]).any())


def _notice(notice: str | None, hidden: int, threshold: float) -> str | None:
    parts = [notice] if notice else []
    if hidden:
        parts.append(f"{hidden} weaker box{'es' if hidden != 1 else ''} hidden (below the score threshold "
                     f"{threshold:g}, or beyond the most boxes kept).")
    return "\n\n".join(parts) or None  # paragraphs: the page's notice no longer glues the two lines together


def draw_boxes(image: Image.Image, boxes: Sequence, labels: Sequence[str], scores: Sequence[float]) -> Image.Image:
    """A copy of `image` with each box outlined in its query's colour and captioned "label score"."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    colours: dict[str, tuple[int, int, int]] = {}
    width = max(1, round(max(out.size) / 200))
    for b, lab, s in zip(boxes, labels, scores):
        c = colours.setdefault(lab, PALETTE[len(colours) % len(PALETTE)])
        draw.rectangle([b[0], b[1], max(b[0], b[2] - 1), max(b[1], b[3] - 1)], outline=c, width=width)
        draw.text((b[0] + 2, b[1] + 1), f"{lab} {s:.0f}", fill=c)
    return out


def _load(clip: str | None = None, device: str | None = None, detector: str | None = None) -> LensDetectPipeline:
    return LensDetectPipeline.from_pretrained(clip, device=device, detector=detector)


register(Task(name="lens-detect", title="Open-vocabulary boxes (CLIP Lens, ViLD)", config=LensDetectConfig,
              pipeline=LensDetectPipeline, method="iter_detect", models=("clip", "detector"), load=_load,
              inputs=(Input("image", "image", help=f"the image to find things in (sides ≥ {MIN_SIDE} px)"),
                      Input("queries", "text", help=f"what to find: texts, comma or newline separated; at most "
                                                    f"{MAX_QUERIES}"),
                      Input("query_image", "example_image", required=False, help="an example crop of what to find"))))
