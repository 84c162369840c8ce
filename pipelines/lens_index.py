"""CLIP Lens over a persistent image index: index a folder once, then search it by text, by image, or by rclip's
embedding arithmetic (`"2:golden retriever" + ./pool.jpg - fruit`), as rclip (github.com/yurijmikhalevich/rclip)
and clip-retrieval (Beaumont 2022) do.

On the run protocol (`studio.progress`): `iter_index(folder, **settings)` reads only the new and changed image
files of `folder` (size and mtime differ from the table's), drops the rows of deleted ones, and yields a `Progress`
per batch encoded (images done / total in its metrics, the batch's last thumbnail as the preview); corrupt or
unreadable files are skipped, counted and listed, never abort. Send "stop" (or close it) and what was encoded so
far is written and kept: the next run goes on from there. It ends with a `LensIndexResult`. `iter_search(folder,
query, query_image, **settings)` embeds the query (one step) and ends with `LensIndexHits`: thumbnails, paths
and similarities, best first. The storage (LanceDB), the query parser and the settings are `studio.index`;
the tasks are registered as `lens-index` and `lens-index-search`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from pipelines.registry import register
from studio.hub import DEMO_CLIP
from studio.images import load_image, resize_crop, to_tensor
from studio.index import (
    ImageIndex,
    LensIndexConfig,
    LensIndexSearchConfig,
    Term,
    check_folder,
    combine,
    describe,
    parse_query,
    scan,
    thumbnail_png,
)
from studio.outputs import new_folder
from studio.progress import Progress, Result, json_safe
from studio.runner import drain
from studio.scorer import CLIPScorer, get_scorer, oom_guard
from studio.tasks import Input, Task, check_text, resolve, run_settings

__all__ = ["CLIPIndexPipeline", "LensIndexConfig", "LensIndexSearchConfig", "LensIndexResult", "LensIndexHits",
           "clip_identity"]
FLUSH_ROWS = 1024  # rows buffered before an append: one Lance fragment per ~1k images, not per batch
SHEET = 16  # thumbnails on the index result's contact sheet


def clip_identity(scorer: CLIPScorer) -> tuple[str, str]:
    """(spec, weights kind) of what the scorer really runs: the demo CLIP when it stands in for real weights;
    "weights" for real weights wherever they came from (a cache, a download, a file), "random" for none."""
    if scorer.is_demo:
        return DEMO_CLIP, "demo"
    return scorer.spec, ("random" if scorer.source.kind == "random" else "weights")


@dataclass
class LensIndexResult(Result):
    """What an indexing run did. `image`: a contact sheet of the first index rows' thumbnails (by path); `rows`:
    images in the index now; `new`, `changed`, `deleted`, `unchanged`: files of each kind found; `encoded`: images
    read and embedded this run; `skipped`: [path, reason] of every unreadable file (this run's and earlier ones');
    `ann`: "built" / "updated" when the approximate index was built or extended, else ""."""

    task = "lens-index"
    folder: str = ""
    location: str = ""
    clip_spec: str = ""
    rows: int = 0
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    encoded: int = 0
    skipped: list[list[str]] = field(default_factory=list)
    ann: str = ""

    def report(self) -> dict[str, Any]:
        return {"folder": self.folder, "location": self.location, "clip_spec": self.clip_spec, "rows": self.rows,
                "new": self.new, "changed": self.changed, "deleted": self.deleted, "unchanged": self.unchanged,
                "encoded": self.encoded, "skipped": self.skipped, "ann": self.ann, "stopped": self.stopped,
                "timings": self.timings}

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        """The base files plus `lens-index.json` (the report above)."""
        out = Path(folder) if folder is not None else new_folder(self.task)
        paths = super().save(out, video, fps)
        paths["json"] = out / f"{self.task}.json"
        paths["json"].write_text(json.dumps(json_safe(self.report()), indent=1, ensure_ascii=False), encoding="utf-8")
        return paths


@dataclass
class LensIndexHits(Result):
    """Search results, best first. `images`: their thumbnails; `paths`: the image files (absolute, or relative to the
    indexed folder from a pipeline with `relative_paths`); `similarities`:
    cosine × 100; `query`: the query as read (terms and weights); `hidden`: results of the top-k left out by the
    threshold; `rows`: images searched; `approximate`: whether the IVF index answered (else an exact scan)."""

    task = "lens-index-search"
    paths: list[str] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    query: str = ""
    hidden: int = 0
    rows: int = 0
    approximate: bool = False

    def image_metadata(self, i: int) -> dict[str, Any]:
        return {**self.metadata(), "rank": i + 1, "path": self.paths[i], "similarity": round(self.similarities[i], 4)}

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        """The thumbnails as ranked PNGs plus `lens-index-search.json`: the query, paths and similarities."""
        out = Path(folder) if folder is not None else new_folder(self.task)
        paths = super().save(out, video, fps)
        paths["json"] = out / f"{self.task}.json"
        data = {"query": self.query, "paths": self.paths, "similarities": self.similarities, "hidden": self.hidden,
                "rows": self.rows, "approximate": self.approximate}
        paths["json"].write_text(json.dumps(json_safe(data), indent=1, ensure_ascii=False), encoding="utf-8")
        return paths


def _sheet(thumbs: list[bytes], cell: int = 96) -> Image.Image:
    """A grid of up to SHEET thumbnails (white when the index is empty)."""
    import io

    cols = max(1, min(4, len(thumbs)))
    rows = max(1, -(-len(thumbs) // cols))
    sheet = Image.new("RGB", (cols * cell, rows * cell), "white")
    for i, png in enumerate(thumbs):
        with Image.open(io.BytesIO(png)) as im:
            im = im.convert("RGB")
            im.thumbnail((cell, cell))
            sheet.paste(im, ((i % cols) * cell + (cell - im.width) // 2, (i // cols) * cell + (cell - im.height) // 2))
    return sheet


class CLIPIndexPipeline:
    """Index a folder into LanceDB and search it, on the shared scorer.

    >>> lens = CLIPIndexPipeline.from_pretrained("shapes-clip")  # doctest: +SKIP
    >>> lens.index("photos/").rows  # doctest: +SKIP
    >>> lens.search("photos/", '"2:a red circle" + ./ref.png - square').paths[:3]  # doctest: +SKIP

    `allow_paths=False` (the web page) refuses query terms that name files: a visitor's text never reaches the disk.
    `relative_paths=True` (a public server) gives search results' paths relative to the indexed folder, and names
    the folder by its last part only: the server's own layout never reaches a visitor's downloads.
    `location` puts the Lance tables elsewhere than `FOLDER/.clip-studio-index` (a read-only folder).
    """

    def __init__(self, scorer: CLIPScorer, index_config: LensIndexConfig | None = None,
                 search_config: LensIndexSearchConfig | None = None, *, allow_paths: bool = True,
                 relative_paths: bool = False, location: str | Path | None = None):
        self.scorer = scorer
        self.index_config = index_config or LensIndexConfig()
        self.search_config = search_config or LensIndexSearchConfig()
        self.allow_paths = allow_paths
        self.relative_paths = relative_paths
        self.location = location

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: str | None = None, **kwargs: Any) -> "CLIPIndexPipeline":
        return cls(get_scorer(spec, device=device), **kwargs)

    def open_index(self, folder: Any) -> ImageIndex:
        """The existing index of `folder`, checked to be this scorer's (`SpecMismatch` names the one that made it)."""
        idx = ImageIndex.open(check_folder(folder), self.location)
        idx.check_spec(*clip_identity(self.scorer))
        return idx

    # ---------------------------------------------------------------------------------------------------- index
    def index(self, folder: Any, *, callback: Callable | None = None, **settings: Any) -> LensIndexResult:
        """Run `iter_index` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_index(folder, **settings), callback)

    def iter_index(self, folder: Any, **settings: Any) -> Iterator[Progress | LensIndexResult]:
        """(Re-)index the images under `folder`: one step per batch of new or changed images encoded."""
        t0 = time.perf_counter()
        # 1. check inputs, open (or create) the index for this CLIP, and plan the work
        cfg = resolve(self.index_config, settings)
        root = check_folder(folder)
        spec, kind = clip_identity(self.scorer)
        files = scan(root, cfg.max_images)  # bounded: refuses a folder of more than max_images before any read
        idx = ImageIndex(root, self.location)
        idx.create(spec, kind, self.scorer.source.arch, self.scorer.embed_dim)  # refuses another CLIP's index
        plan = idx.plan(files)
        idx.drop(plan.to_drop)  # deleted files, and the old rows of changed ones (re-added as they are encoded)
        t_plan = time.perf_counter() - t0
        # 2. encode the new and changed files, a batch a step; rows are written every FLUSH_ROWS and at the end
        todo = plan.to_read
        batches = [todo[i:i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
        buffer: list[dict[str, Any]] = []
        skipped: list[tuple[Any, str]] = []
        done = 0
        stopped = False
        t_read = t_encode = 0.0
        try:
            if not batches:  # up to date: one step, so a run always reports progress
                stopped = (yield Progress(1, 1, None, {"images_done": 0, "images_total": 0}, "up to date")) == "stop"
            for b, batch in enumerate(batches):
                t1 = time.perf_counter()
                rows, pixels, preview = [], [], None
                for fi in batch:
                    try:  # any failure to decode is this file's problem, never the run's
                        pil = load_image(str(root / fi.path), fi.path)
                        pixels.append(resize_crop(to_tensor(pil), self.scorer.image_size))
                    except Exception as err:  # noqa: BLE001 — corrupt files are skipped and listed
                        skipped.append((fi, str(err).splitlines()[0][:300] if str(err) else type(err).__name__))
                        continue
                    rows.append({"path": fi.path, "size": fi.size, "mtime_ns": fi.mtime_ns, "width": pil.width,
                                 "height": pil.height, "thumbnail": thumbnail_png(pil, cfg.thumbnail_side)})
                    preview = pil
                t2 = time.perf_counter()
                if pixels:
                    with torch.no_grad(), oom_guard("indexing images"):
                        emb = self.scorer.encode_image(torch.cat(pixels)).cpu().numpy().astype(np.float32)
                    for row, e in zip(rows, emb):
                        row["vector"] = e
                    buffer.extend(rows)
                t_read += t2 - t1
                t_encode += time.perf_counter() - t2
                done += len(batch)
                if len(buffer) >= FLUSH_ROWS:
                    idx.add(buffer)
                    buffer = []
                metrics = {"images_done": done, "images_total": len(todo), "skipped": len(skipped)}
                if (yield Progress(b + 1, len(batches), preview, metrics, f"images {done}/{len(todo)}")) == "stop":
                    stopped = True
                    break
        finally:  # a stop or a closed run keeps what was encoded
            idx.add(buffer)
            idx.add_skipped(skipped)
        # 3. forget stale skip records, compact, build the approximate index once the table is large enough
        t3 = time.perf_counter()
        bad = {fi.path for fi, _ in skipped} | {p for p, _ in plan.skipped_before}
        idx.forget_skipped(bad)
        ann = idx.finish(cfg.ann_min_rows)
        t_write = time.perf_counter() - t3
        # 4. package: the report, with a contact sheet of the index's first rows
        listed = sorted([[fi.path, why] for fi, why in skipped] + [list(s) for s in plan.skipped_before])
        first = idx.first_thumbnails(SHEET)
        encoded = done - len(skipped)
        yield LensIndexResult(
            image=_sheet(first), folder=str(root), location=str(idx.location), clip_spec=spec, rows=idx.count(),
            new=plan.new, changed=plan.changed, deleted=plan.deleted, unchanged=plan.unchanged, encoded=encoded,
            skipped=listed, ann=ann, scores={"rows": float(idx.count()), "encoded": float(encoded),
                                             "skipped": float(len(listed))},
            seed=cfg.seed, timings={"plan_s": t_plan, "read_s": t_read, "encode_s": t_encode, "write_s": t_write,
                                    "per_image_s": (t_read + t_encode) / max(1, done),
                                    "total_s": time.perf_counter() - t0},
            settings=run_settings(cfg, folder=str(folder)), stopped=stopped, notice=self.scorer.notice,
            steps_run=len(batches) if not stopped else (b + 1 if batches else 1))

    # --------------------------------------------------------------------------------------------------- search
    def search(self, folder: Any, query: str | None = None, query_image: Any = None, *,
               callback: Callable | None = None, **settings: Any) -> LensIndexHits:
        """Run `iter_search` to the end."""
        return drain(self.iter_search(folder, query, query_image, **settings), callback)

    def query_terms(self, query: str | None, query_image: Any = None) -> list[Term]:
        """The terms of `query` (rclip's form, see `studio.index.parse_query`) plus the image `query_image` (weight
        1), checked; at least one is needed."""
        terms: list[Term] = []
        if query is not None and not isinstance(query, str):
            raise ValueError(f"`query` must be text (or empty), got {query!r:.80}")
        if query is not None and query.strip():
            terms = parse_query(check_text(query, "query"), allow_paths=self.allow_paths)
        if query_image is not None:
            terms.append(Term(1.0, "image", load_image(query_image, "query_image")))
        if not terms:
            raise ValueError("`query` and `query_image` are both empty: give a text, an image, or both")
        return terms

    @torch.no_grad()
    def embed_terms(self, terms: list[Term]) -> list[np.ndarray]:
        """The unit embedding of each term (texts through the scorer's cache; paths and images decoded first)."""
        out = []
        with oom_guard("CLIP Lens index query"):
            for t in terms:
                if t.kind == "text":
                    e = self.scorer.encode_text([t.value])[0]
                else:
                    pil = load_image(str(Path(t.value).expanduser()) if t.kind == "path" else t.value,
                                     "query" if t.kind == "path" else "query_image")
                    e = self.scorer.encode_image(to_tensor(pil))[0]
                out.append(e.float().cpu().numpy())
        return out

    def iter_search(self, folder: Any, query: str | None = None, query_image: Any = None, **settings: Any
                    ) -> Iterator[Progress | LensIndexHits]:
        """The index's images nearest to normalise(Σ wᵢ·e(termᵢ)): one step."""
        t0 = time.perf_counter()
        # 1. check inputs (before any encoding)
        cfg = resolve(self.search_config, settings)
        idx = self.open_index(folder)
        terms = self.query_terms(query, query_image)
        # 2. the query vector
        q = combine(terms, self.embed_terms(terms))
        t1 = time.perf_counter()
        # 3. search: the top-k, then the threshold (so that the result can say how many it hid)
        hits = idx.search(q, cfg.top_k)
        shown = [h for h in hits if h.similarity >= cfg.threshold]
        t2 = time.perf_counter()
        images = [h.thumbnail_image() for h in shown]
        found = [h.path for h in shown]
        where = str(folder)
        if self.relative_paths:  # a public server: nothing of its absolute layout in the result or its files
            found = [Path(os.path.relpath(p, idx.folder)).as_posix() for p in found]
            where = idx.folder.name
        label = describe(terms)
        stopped = (yield Progress(1, 1, images[0] if images else None,
                                  {"top_similarity": shown[0].similarity} if shown else {})) == "stop"
        yield LensIndexHits(
            images=images, paths=found, similarities=[h.similarity for h in shown], query=label,
            hidden=len(hits) - len(shown), rows=idx.count(), approximate=idx.has_ann(),
            scores={"top_similarity": shown[0].similarity} if shown else {}, seed=cfg.seed,
            timings={"embed_s": t1 - t0, "search_s": t2 - t1, "total_s": time.perf_counter() - t0},
            settings=run_settings(cfg, folder=where, **({"query": query} if query else {})),
            stopped=stopped, notice=self.scorer.notice, steps_run=1)


def _load(clip: str | None = None, device: str | None = None) -> CLIPIndexPipeline:
    return CLIPIndexPipeline.from_pretrained(clip, device=device)


register(Task(name="lens-index", title="Index a folder of images (CLIP Lens)", config=LensIndexConfig,
              pipeline=CLIPIndexPipeline, method="iter_index", models=("clip",), load=_load,
              inputs=(Input("folder", "folder", help="the folder of images to index (recursively); the index is "
                                                     "kept in FOLDER/.clip-studio-index"),)))
register(Task(name="lens-index-search", title="Search an image index (CLIP Lens)", config=LensIndexSearchConfig,
              pipeline=CLIPIndexPipeline, method="iter_search", models=("clip",), load=_load,
              inputs=(Input("folder", "folder", help="an indexed folder"),
                      Input("query", "text", required=False,
                            help='text, image paths and weights: "2:golden retriever" + ./pool.jpg - fruit'),
                      Input("query_image", "image", required=False, help="an image to search by"))))
