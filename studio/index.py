"""A persistent image index: a folder's images embedded once into a LanceDB table on local disk (rclip's idea,
clip-retrieval's scale), plus the query language rclip uses (`"2:golden retriever" + ./pool.jpg - fruit`).

Storage (`ImageIndex`): the table `images` of a Lance database in `FOLDER/.clip-studio-index/` holds one row per
image: `path` (relative to the folder, POSIX), `size` and `mtime_ns` (how a re-index tells a changed file),
`width`, `height`, `thumbnail` (a small PNG) and `vector` (the unit CLIP embedding). The CLIP that made the
vectors is the table's schema metadata (`clip_spec`, `clip_kind`, `clip_arch`, `embed_dim`); an index is refused,
naming that spec, when another CLIP asks to read or extend it. Files that could not be read are kept in a second
table, `skipped` (path, size, mtime_ns, reason), so an unchanged corrupt file is listed again without being read
again. Lance tables work the same on object storage (`lancedb.connect("s3://...")`) once a collection outgrows one
disk; only local folders are offered here.

Search is exact (LanceDB's flat scan) below `ANN_MIN_ROWS` rows and approximate above: an IVF index
(`lancedb.index.IvfFlat`, cosine) is built once the table reaches that size and kept up to date by
`Table.optimize()` after later additions (see benchmarks/lens_index.py for the measurements behind the choice).

This module needs numpy and (lazily) lancedb/pyarrow, never torch: the command line's `--help` imports it for the
settings, and the page may too. The embedding side lives in `pipelines/lens_index.py`.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from studio.media import IMAGE_SUFFIXES
from studio.tasks import MAX_PROMPT_CHARS, SEED_MAX, param

INDEX_DIRNAME = ".clip-studio-index"  # inside the indexed folder; hidden, so scans skip it
TABLE, SKIPPED_TABLE = "images", "skipped"
MAX_IMAGES = 2_000_000  # files one folder may hold (the scan itself is bounded by it)
MAX_TOP_K = 1000
MAX_TERMS = 16  # terms of one arithmetic query
MAX_TERM_WEIGHT = 10.0
ANN_MIN_ROWS = 5_000  # measured (benchmarks/README.md): LanceDB's exact scan passes ~50 ms near here on 2 CPU cores
ANN_NPROBES = 20  # IVF partitions probed per query: LanceDB's default; 10/20/40 gave the same recall@10 (benchmark)
_DELETE_CHUNK = 500  # paths per DELETE statement
KEEP_VERSIONS = timedelta(hours=1)  # older table versions are removed; a reader of one younger than this is safe


# ------------------------------------------------------------------------------------------------- settings
# The configs live here, not in pipelines/lens_index.py, so that `clip-studio index --help` and `search --help`
# read their defaults and limits without importing torch (the pipeline module imports them from here).
@dataclass
class LensIndexConfig:
    """Settings of `lens-index` (indexing a folder): defaults (with where they come from) and limits."""

    batch_size: int = param(32, 1, 1024, ui=(1, 256), label="Batch size",
                            help="images encoded per step (one progress step each); 32: a batch a CPU finishes in "
                                 "seconds and a GPU still fills")
    thumbnail_side: int = param(128, 32, 512, label="Thumbnail side",
                                help="longest side of the PNG thumbnail kept per image (pixels); 128: rclip's "
                                     "preview size, a few kB each")
    max_images: int = param(100_000, 1, MAX_IMAGES, control=False,
                            help="the most image files a folder may hold; a larger folder is refused before any "
                                 f"is read (bounded work); at most {MAX_IMAGES}")
    ann_min_rows: int = param(ANN_MIN_ROWS, 256, 10**9, control=False,
                              help="rows from which an approximate (IVF) index is built and used; below it every "
                                   f"query is an exact scan. {ANN_MIN_ROWS}: where the exact scan passes ~50 ms on "
                                   "a 2-core CPU (benchmarks/README.md)")
    seed: int = param(0, 0, SEED_MAX, control=False,
                      help="unused: indexing is deterministic; kept so that every task's settings have one")


@dataclass
class LensIndexSearchConfig:
    """Settings of `lens-index-search` (querying an index)."""

    top_k: int = param(12, 1, MAX_TOP_K, ui=(1, 100), label="Results",
                       help=f"how many images to return, best first; 12: a gallery page; at most {MAX_TOP_K}")
    threshold: float = param(0.0, -100.0, 100.0, step=0.5, label="Minimum similarity",
                             help="hide results whose cosine similarity × 100 is below this; 0: anything that "
                                  "points the query's way at all")
    seed: int = param(0, 0, SEED_MAX, control=False,
                      help="unused: search is deterministic; kept so that every task's settings have one")


# ---------------------------------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Term:
    """One term of a query: `weight` × the embedding of a text, a local image path or an uploaded image."""

    weight: float
    kind: str  # "text" | "path" | "image"
    value: Any  # the text, the path (str) or the image

    def label(self) -> str:
        """The term without its sign: `2:“golden retriever”`, `./pool.jpg`, `image`."""
        what = f"“{self.value}”" if self.kind == "text" else (str(self.value) if self.kind == "path" else "image")
        return what if abs(self.weight) == 1.0 else f"{abs(self.weight):g}:{what}"


def describe(terms: Sequence[Term]) -> str:
    """A query as read: `2:“golden retriever” + ./pool.jpg − “fruit”`."""
    out = ""
    for i, t in enumerate(terms):
        op = ("− " if i == 0 else " − ") if t.weight < 0 else ("" if i == 0 else " + ")
        out += op + t.label()
    return out


_WEIGHT = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?):")


def _is_path(text: str) -> bool:
    """rclip's rule: a term is a file when it starts like a path (/, ./, ../, ~/, or C:\\ on Windows)."""
    return text.startswith(("/", "./", "../", "~/", ".\\", "..\\")) or re.match(r"^[A-Za-z]:[\\/]", text) is not None


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse_query(query: str, *, allow_paths: bool = True, name: str = "query") -> list[Term]:
    """Terms of an rclip-style query: `"2:golden retriever" + ./pool.jpg - fruit`.

    Terms are joined by `+` or `-` standing alone (whitespace or the ends around them, outside quotes), so
    "red-haired" stays one word; a term may be quoted (a quote opens only at the start of a term or right after its
    weight, so "a dog's toy" needs none), and may start with a weight `W:` (inside or outside the quotes); `-`
    negates the weight. A term that starts like a path (`/`, `./`, `../`, `~/`) is an image file: allowed only
    where `allow_paths` (the command line, Python); the page passes False, so nothing a visitor types ever reaches
    the server's disk. One pass over the text, no eval: linear time.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"`{name}` must be non-empty text, got {query!r:.80}")
    if len(query) > MAX_PROMPT_CHARS:
        raise ValueError(f"`{name}` must be at most {MAX_PROMPT_CHARS} characters, got {len(query)}")
    # 1. split into (sign, raw term) at stand-alone + / - outside quotes
    parts: list[tuple[int, str]] = []
    sign, start, quote, last, pending = 1, 0, "", "", False  # last: the term's last non-space character
    n = len(query)
    for i, ch in enumerate(query):
        if quote:
            if ch == quote:
                quote = ""
                last = ch
            continue
        if ch in "\"'" and last in ("", ":"):
            quote = ch
            continue
        if ch in "+-" and (i == 0 or query[i - 1].isspace()) and (i + 1 == n or query[i + 1].isspace()):
            text = query[start:i].strip()
            if text:
                parts.append((sign, text))
                sign, pending = 1, False
            elif parts or pending:  # two operators in a row
                raise ValueError(f"`{name}` has two operators in a row at character {i + 1}: {query!r:.120}")
            sign = -sign if ch == "-" else sign
            start, last, pending = i + 1, "", True
            continue
        if not ch.isspace():
            last = ch
    if quote:
        raise ValueError(f"`{name}` has an unclosed {quote} quote: {query!r:.120}")
    text = query[start:].strip()
    if not text:
        raise ValueError(f"`{name}` ends with an operator and no term after it: {query!r:.120}")
    parts.append((sign, text))
    if len(parts) > MAX_TERMS:
        raise ValueError(f"`{name}` may hold at most {MAX_TERMS} terms, got {len(parts)}")
    # 2. each term: weight, quotes, kind
    terms = []
    for sign, raw in parts:
        inner = _strip_quotes(raw)
        weight = 1.0
        m = _WEIGHT.match(inner)
        if m is not None:
            weight = float(m.group(1))
            inner = _strip_quotes(inner[m.end():].strip())
        if not math.isfinite(weight) or abs(weight) > MAX_TERM_WEIGHT:
            raise ValueError(f"`{name}` term {raw!r:.60} has weight {weight:g}; weights must be within "
                             f"±{MAX_TERM_WEIGHT:g}")
        inner = inner.strip()
        if not inner:
            raise ValueError(f"`{name}` has an empty term: {raw!r:.60}")
        if _is_path(inner):
            if not allow_paths:
                raise ValueError(f"`{name}` term {inner!r:.60} looks like a file path; image terms by path are for "
                                 "the command line only: upload the image instead")
            terms.append(Term(sign * weight, "path", inner))
        else:
            terms.append(Term(sign * weight, "text", inner))
    return terms


def combine(terms: Sequence[Term], embeddings: Sequence[np.ndarray], name: str = "query") -> np.ndarray:
    """normalise(Σ weightᵢ · eᵢ) for unit embeddings eᵢ (rclip's arithmetic); a zero sum is refused."""
    if not terms:
        raise ValueError(f"`{name}` must hold at least one term")
    q = np.zeros_like(np.asarray(embeddings[0], dtype=np.float32))
    for t, e in zip(terms, embeddings):
        q = q + np.float32(t.weight) * np.asarray(e, dtype=np.float32)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-6:
        raise ValueError(f"`{name}` terms cancel out (the weighted sum of their embeddings is zero): "
                         f"{describe(terms)}")
    return (q / norm).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ files
@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the indexed folder, POSIX separators
    size: int
    mtime_ns: int


def check_folder(folder: Any, name: str = "folder") -> Path:
    """An existing folder as an absolute path, else `ValueError` naming the argument."""
    if not isinstance(folder, (str, os.PathLike)) or not str(folder).strip():
        raise ValueError(f"`{name}` must be a folder path, got {folder!r:.80}")
    try:
        p = Path(folder).expanduser()
        is_dir = p.is_dir()
    except (OSError, ValueError) as err:  # a name too long for the file system, a NUL byte
        raise ValueError(f"`{name}` {str(folder)[:80]!r} is not a usable folder path ({type(err).__name__})") from None
    if not is_dir:
        raise ValueError(f"`{name}` {str(folder)[:200]!r} is not a folder")
    return p.resolve()


def scan(folder: Path, max_images: int = MAX_IMAGES) -> list[FileInfo]:
    """The image files under `folder` (recursively; hidden folders, the index among them, and symlinked folders
    are skipped), sorted by path. More than `max_images` raises `ValueError` as soon as the count passes it."""
    out: list[FileInfo] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if f.startswith(".") or not f.lower().endswith(IMAGE_SUFFIXES):
                continue
            full = os.path.join(root, f)
            try:
                st = os.stat(full)
            except OSError:
                continue  # vanished or unreadable metadata: not an image we can index
            if not os.path.isfile(full):
                continue
            out.append(FileInfo(Path(os.path.relpath(full, folder)).as_posix(), int(st.st_size), int(st.st_mtime_ns)))
            if len(out) > max_images:
                raise ValueError(f"`folder` {str(folder)!r} holds more than {max_images} images (the `max_images` "
                                 "setting); index a smaller folder or raise the limit")
    out.sort(key=lambda fi: fi.path)
    return out


def thumbnail_png(image: Any, side: int) -> bytes:
    """A PNG of `image` (PIL) scaled to fit `side` × `side`."""
    from PIL import Image

    im = image.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------ index
@dataclass
class Hit:
    """One search result: the image's path (absolute), its similarity (cosine × 100) and its thumbnail (PNG)."""

    path: str
    similarity: float
    thumbnail: bytes = b""
    width: int = 0
    height: int = 0

    def thumbnail_image(self):
        from PIL import Image

        return Image.open(io.BytesIO(self.thumbnail)).convert("RGB")


@dataclass
class Plan:
    """What a re-index must do: files to read (new or changed), rows to drop (deleted or changed files)."""

    to_read: list[FileInfo] = field(default_factory=list)
    to_drop: list[str] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped_before: list[tuple[str, str]] = field(default_factory=list)  # unchanged files known to be unreadable


class SpecMismatch(ValueError):
    """The index was made by another CLIP."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class ImageIndex:
    """The Lance table of one folder's images (see the module docstring).

    >>> idx = ImageIndex.open("photos/")  # doctest: +SKIP
    >>> idx.count(), idx.clip_spec  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike, location: str | os.PathLike | None = None):
        import lancedb

        self.folder = check_folder(folder)
        self.location = Path(location).expanduser().resolve() if location else self.folder / INDEX_DIRNAME
        self._db = lancedb.connect(str(self.location)) if self.location.is_dir() else None
        self._lancedb = lancedb

    # ---- opening ------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike, location: str | os.PathLike | None = None,
             name: str = "folder") -> "ImageIndex":
        """An existing index of `folder`; `ValueError` naming `name` when there is none."""
        idx = cls(folder, location)
        if not idx.exists():
            raise ValueError(f"`{name}` {str(folder)!r} has no image index yet (no {idx.location}); run "
                             f"`clip-studio index {folder}` first")
        return idx

    def exists(self) -> bool:
        return self._db is not None and TABLE in self._table_names()

    def _table_names(self) -> list[str]:
        res = self._db.list_tables()
        return list(getattr(res, "tables", res))

    def _table(self, name: str = TABLE):
        return self._db.open_table(name)

    @property
    def metadata(self) -> dict[str, str]:
        if not self.exists():
            return {}
        meta = self._table().schema.metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items()}

    @property
    def clip_spec(self) -> str | None:
        return self.metadata.get("clip_spec")

    @property
    def embed_dim(self) -> int | None:
        d = self.metadata.get("embed_dim")
        return int(d) if d else None

    def check_spec(self, spec: str, kind: str | None = None) -> None:
        """`SpecMismatch` naming the spec that made the index when `spec` (and `kind`) is not it."""
        meta = self.metadata
        if not meta:
            return
        made = meta.get("clip_spec")
        if made != spec or (kind is not None and meta.get("clip_kind") not in (None, kind)):
            how = f"{made!r}" + (f" ({meta.get('clip_kind')} weights)" if meta.get("clip_kind") else "")
            raise SpecMismatch(f"the index in {self.location} was made with CLIP {how}, not {spec!r}"
                               + (f" ({kind} weights)" if kind else "") + f": use --clip {made}, or "
                               f"delete {self.location} to re-index with {spec!r}")

    def create(self, spec: str, kind: str, arch: str, dim: int) -> None:
        """Create the (empty) tables, recording the CLIP that fills them. An existing index must match."""
        import pyarrow as pa

        if self.exists():
            self.check_spec(spec, kind)
            if self.embed_dim != dim:
                raise SpecMismatch(f"the index in {self.location} holds {self.embed_dim}-d embeddings, not {dim}-d")
            return
        self.location.mkdir(parents=True, exist_ok=True)
        self._db = self._lancedb.connect(str(self.location))
        meta = {"clip_spec": spec, "clip_kind": kind, "clip_arch": arch, "embed_dim": str(dim),
                "format": "clip-studio-index/1"}
        schema = pa.schema([
            pa.field("path", pa.string()), pa.field("size", pa.int64()), pa.field("mtime_ns", pa.int64()),
            pa.field("width", pa.int32()), pa.field("height", pa.int32()), pa.field("thumbnail", pa.binary()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ], metadata=meta)
        self._db.create_table(TABLE, schema=schema, exist_ok=True)
        skipped = pa.schema([pa.field("path", pa.string()), pa.field("size", pa.int64()),
                             pa.field("mtime_ns", pa.int64()), pa.field("reason", pa.string())])
        self._db.create_table(SKIPPED_TABLE, schema=skipped, exist_ok=True)

    # ---- reading ------------------------------------------------------------------------------------------
    def count(self) -> int:
        return self._table().count_rows() if self.exists() else 0

    def files(self) -> dict[str, tuple[int, int]]:
        """{path: (size, mtime_ns)} of the indexed images."""
        t = self._table().search().select(["path", "size", "mtime_ns"]).limit(None).to_arrow() if self.exists() \
            else None
        if t is None:
            return {}
        return {p: (s, m) for p, s, m in zip(t["path"].to_pylist(), t["size"].to_pylist(), t["mtime_ns"].to_pylist())}

    def skipped(self) -> dict[str, tuple[int, int, str]]:
        """{path: (size, mtime_ns, reason)} of the files that could not be read."""
        if self._db is None or SKIPPED_TABLE not in self._table_names():
            return {}
        t = self._table(SKIPPED_TABLE).to_arrow()
        return {p: (s, m, r) for p, s, m, r in zip(t["path"].to_pylist(), t["size"].to_pylist(),
                                                   t["mtime_ns"].to_pylist(), t["reason"].to_pylist())}

    def vectors(self, paths: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """{relative path: embedding} (all rows, or those of `paths`)."""
        q = self._table().search().select(["path", "vector"]).limit(None)
        if paths is not None:
            if not paths:
                return {}
            q = q.where(f"path IN ({', '.join(_quote(p) for p in paths)})")
        t = q.to_arrow()
        vec = t["vector"].combine_chunks()
        arr = vec.values.to_numpy().reshape(len(t), -1) if len(t) else np.zeros((0, self.embed_dim or 0), np.float32)
        return dict(zip(t["path"].to_pylist(), arr))

    def plan(self, files: Sequence[FileInfo]) -> Plan:
        """Compare the folder's files with the table: what to read and what to drop."""
        known, bad = self.files(), self.skipped()
        plan = Plan()
        present = set()
        for fi in files:
            present.add(fi.path)
            old = known.get(fi.path)
            if old is not None and old == (fi.size, fi.mtime_ns):
                plan.unchanged += 1
                continue
            was_bad = bad.get(fi.path)
            if old is None and was_bad is not None and was_bad[:2] == (fi.size, fi.mtime_ns):
                plan.skipped_before.append((fi.path, was_bad[2]))
                continue
            if old is not None:
                plan.changed += 1
                plan.to_drop.append(fi.path)
            else:
                plan.new += 1
            plan.to_read.append(fi)
        gone = [p for p in known if p not in present]
        plan.deleted = len(gone)
        plan.to_drop.extend(gone)
        return plan

    # ---- writing ------------------------------------------------------------------------------------------
    def drop(self, paths: Sequence[str], table: str = TABLE) -> None:
        if not paths or self._db is None or table not in self._table_names():
            return
        t = self._table(table)
        for i in range(0, len(paths), _DELETE_CHUNK):
            t.delete(f"path IN ({', '.join(_quote(p) for p in paths[i:i + _DELETE_CHUNK])})")

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows {path, size, mtime_ns, width, height, thumbnail, vector (D,) float32}."""
        import pyarrow as pa

        if not rows:
            return
        t = self._table()
        dim = self.embed_dim
        vec = np.stack([np.asarray(r["vector"], np.float32) for r in rows])
        data = pa.table({
            "path": pa.array([r["path"] for r in rows], pa.string()),
            "size": pa.array([r["size"] for r in rows], pa.int64()),
            "mtime_ns": pa.array([r["mtime_ns"] for r in rows], pa.int64()),
            "width": pa.array([r["width"] for r in rows], pa.int32()),
            "height": pa.array([r["height"] for r in rows], pa.int32()),
            "thumbnail": pa.array([r["thumbnail"] for r in rows], pa.binary()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel(), pa.float32()), dim),
        }, schema=t.schema)
        t.add(data)

    def add_skipped(self, rows: Sequence[tuple[FileInfo, str]]) -> None:
        import pyarrow as pa

        if not rows:
            return
        t = self._table(SKIPPED_TABLE)
        self.drop([fi.path for fi, _ in rows], SKIPPED_TABLE)
        t.add(pa.table({"path": [fi.path for fi, _ in rows], "size": [fi.size for fi, _ in rows],
                        "mtime_ns": [fi.mtime_ns for fi, _ in rows], "reason": [r for _, r in rows]},
                       schema=t.schema))

    def forget_skipped(self, keep: set[str]) -> None:
        """Drop the skipped-file records of files no longer unreadable or gone (all but `keep`)."""
        old = self.skipped()
        self.drop([p for p in old if p not in keep], SKIPPED_TABLE)

    def has_ann(self) -> bool:
        return self.exists() and any("vector" in list(ix.columns) for ix in self._table().list_indices())

    def finish(self, ann_min_rows: int = ANN_MIN_ROWS) -> str:
        """After a (re-)index: compact the table's small appends, and build the IVF index once the table has
        `ann_min_rows` rows (or fold new rows into it). Returns what was done ("", "built", "updated")."""
        if not self.exists():
            return ""
        t = self._table()
        done = ""
        n = t.count_rows()
        if n >= ann_min_rows and not self.has_ann():
            from lancedb.index import IvfFlat

            # IVF-Flat: k-means partitions, exact distances inside the probed ones (no PQ training: ~10x quicker
            # to build here than IVF-PQ, and no refine step needed for exact scores). √n partitions (Faiss's rule).
            t.create_index("vector", config=IvfFlat(distance_type="cosine", num_partitions=max(1, int(n ** 0.5))))
            done = "built"
        elif self.has_ann():
            done = "updated"
        t.optimize(cleanup_older_than=KEEP_VERSIONS)  # compaction; folds new rows into the index
        if SKIPPED_TABLE in self._table_names():
            self._table(SKIPPED_TABLE).optimize(cleanup_older_than=KEEP_VERSIONS)
        return done

    # ---- searching ----------------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, top_k: int = 12, threshold: float | None = None,
               thumbnails: bool = True, nprobes: int = ANN_NPROBES) -> list[Hit]:
        """The `top_k` rows nearest to the unit `vector` by cosine (best first), those with similarity × 100 below
        `threshold` left out. Exact below the ANN size, approximate (IVF, `nprobes` partitions) above."""
        vector = np.asarray(vector, np.float32).reshape(-1)
        if self.embed_dim is not None and vector.shape[0] != self.embed_dim:
            raise ValueError(f"`vector` has {vector.shape[0]} dimensions; this index holds {self.embed_dim}-d ones")
        cols = ["path", "width", "height"] + (["thumbnail"] if thumbnails else [])
        q = self._table().search(vector, vector_column_name="vector").distance_type("cosine").limit(int(top_k))
        if self.has_ann():
            q = q.nprobes(nprobes)
        t = q.select(cols + ["_distance"]).to_arrow()
        hits = []
        for i in range(len(t)):
            sim = 100.0 * (1.0 - float(t["_distance"][i].as_py()))
            if threshold is not None and sim < threshold:
                continue
            hits.append(Hit(str(self.folder / t["path"][i].as_py()), sim,
                            t["thumbnail"][i].as_py() if thumbnails else b"", int(t["width"][i].as_py()),
                            int(t["height"][i].as_py())))
        hits.sort(key=lambda h: -h.similarity)
        return hits

    def first_thumbnails(self, n: int) -> list[bytes]:
        """The thumbnails of the first `n` rows by path (reading only the paths of the others)."""
        paths = sorted(self.files())[:n]
        if not paths:
            return []
        t = self._table().search().where(f"path IN ({', '.join(_quote(p) for p in paths)})") \
            .select(["path", "thumbnail"]).limit(None).to_arrow()
        by_path = dict(zip(t["path"].to_pylist(), t["thumbnail"].to_pylist()))
        return [by_path[p] for p in paths if p in by_path]
