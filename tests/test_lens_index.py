"""The persistent image index (studio/index.py, pipelines/lens_index.py): a folder of generated shapes indexed with
the demo CLIP, re-indexed after edits (encoder calls counted), re-opened, searched by text, by image and by rclip's
arithmetic (checked against a hand computation on the stored embeddings), and refused when another CLIP asks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cases_lens import gallery, shape_image
from PIL import Image

from pipelines.lens import CLIPLensPipeline
from pipelines.lens_index import CLIPIndexPipeline
from studio.images import load_image, to_tensor
from studio.index import ImageIndex, SpecMismatch, Term, combine, describe, parse_query

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # file -> (colour, square?, its description)
    "red_circle.png": ((220, 40, 40), False, "a red circle"),
    "blue_square.png": ((40, 40, 220), True, "a blue square"),
    "green_circle.png": ((40, 170, 60), False, "a green circle"),
    "yellow_square.png": ((235, 215, 35), True, "a yellow square"),
    "purple_circle.png": ((140, 55, 185), False, "a purple circle"),
}


def write_shapes(folder: Path, names=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or SHAPES:
        colour, square, _ = SHAPES[name]
        shape_image(colour, square=square, size=64).save(folder / name)
    return folder


class Counter:
    """Counts the images the scorer encodes (wraps `encode_image` on the instance; monkeypatch restores it)."""

    def __init__(self, scorer, monkeypatch):
        self.images = 0
        original = scorer.encode_image

        def counting(x):
            self.images += int(x.shape[0])
            return original(x)

        monkeypatch.setattr(scorer, "encode_image", counting)


@pytest.fixture
def folder(tmp_path):
    return write_shapes(tmp_path / "photos")


# ------------------------------------------------------------------------------------------------------- ranking
def test_each_image_ranks_first_for_its_description(folder, demo_scorer):
    pipe = CLIPIndexPipeline(demo_scorer)
    out = pipe.index(folder)
    assert (out.rows, out.new, out.encoded, out.skipped) == (5, 5, 5, [])
    assert out.clip_spec == "shapes-clip" and out.image is not None
    for name, (_, _, text) in SHAPES.items():
        hits = pipe.search(folder, text, top_k=5, threshold=-100)
        assert Path(hits.paths[0]).name == name, (text, hits.paths)
        assert hits.similarities == sorted(hits.similarities, reverse=True)
        assert all(Path(p).is_file() for p in hits.paths) and len(hits.images) == 5


def test_image_to_image_search_on_the_index_and_on_uploads(folder, demo_scorer):
    pipe = CLIPIndexPipeline(demo_scorer)
    pipe.index(folder)
    query = shape_image((210, 50, 45), size=80)  # a red circle of another size and shade, uploaded
    hits = pipe.search(folder, None, query, top_k=3, threshold=-100)
    assert Path(hits.paths[0]).name == "red_circle.png" and hits.query == "image"
    ranking = CLIPLensPipeline(demo_scorer).image_search(gallery(), query)  # uploads: [blue square, red circle]
    assert ranking.order[0] == 1 and ranking.task == "lens-image-search"


# ----------------------------------------------------------------------------------------------------- re-index
def test_reindex_reads_only_new_and_changed_files_and_drops_deleted_ones(folder, demo_scorer, monkeypatch):
    pipe = CLIPIndexPipeline(demo_scorer)
    pipe.index(folder)
    count = Counter(demo_scorer, monkeypatch)
    again = pipe.index(folder)
    assert count.images == 0 and (again.unchanged, again.encoded, again.rows) == (5, 0, 5)

    before = ImageIndex.open(folder).vectors()
    shape_image((245, 140, 25), square=True, size=64).save(folder / "orange_square.png")  # new
    shape_image((40, 170, 60), square=True, size=64).save(folder / "green_circle.png")  # changed: now a square
    st = os.stat(folder / "green_circle.png")
    os.utime(folder / "green_circle.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a coarse-mtime disk too
    (folder / "purple_circle.png").unlink()  # deleted
    out = pipe.index(folder)
    assert count.images == 2, "only the new and the changed file are read"
    assert (out.new, out.changed, out.deleted, out.unchanged, out.rows) == (1, 1, 1, 3, 5)
    after = ImageIndex.open(folder).vectors()
    assert set(after) == {"red_circle.png", "blue_square.png", "green_circle.png", "yellow_square.png",
                          "orange_square.png"}
    for name in ("red_circle.png", "blue_square.png", "yellow_square.png"):
        assert np.array_equal(after[name], before[name])  # untouched rows are the same rows
    assert not np.allclose(after["green_circle.png"], before["green_circle.png"])
    hits = pipe.search(folder, "a green square", top_k=1, threshold=-100)
    assert Path(hits.paths[0]).name == "green_circle.png"


def test_the_index_survives_a_reopen(folder, demo_scorer, monkeypatch):
    CLIPIndexPipeline(demo_scorer).index(folder)
    stored = ImageIndex.open(folder).vectors()
    count = Counter(demo_scorer, monkeypatch)
    fresh = CLIPIndexPipeline(demo_scorer)  # a new pipeline and new table handles on the same files
    reopened = ImageIndex.open(folder)
    assert reopened.count() == 5 and reopened.clip_spec == "shapes-clip" and reopened.embed_dim == demo_scorer.embed_dim
    assert set(reopened.vectors()) == set(stored)
    assert fresh.index(folder).encoded == 0 and count.images == 0
    assert Path(fresh.search(folder, "a blue square", top_k=1, threshold=-100).paths[0]).name == "blue_square.png"


def test_stop_keeps_what_was_indexed_and_the_next_run_goes_on(folder, demo_scorer, monkeypatch):
    pipe = CLIPIndexPipeline(demo_scorer)
    run = pipe.iter_index(folder, batch_size=1)
    first = next(run)
    assert (first.step, first.total, first.metrics["images_done"], first.metrics["images_total"]) == (1, 5, 1, 5)
    second = run.send(None)
    result = run.send("stop")
    assert second.step == 2 and result.done and result.stopped and result.rows == 2
    count = Counter(demo_scorer, monkeypatch)
    rest = pipe.index(folder)
    assert count.images == 3 and rest.rows == 5 and rest.unchanged == 2


# ----------------------------------------------------------------------------------------------------- bad input
def test_corrupt_files_are_skipped_counted_and_listed(folder, demo_scorer, monkeypatch):
    (folder / "broken.png").write_bytes(b"not a png at all")
    good = (folder / "red_circle.png").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not an image file")  # not an image suffix: not even looked at
    pipe = CLIPIndexPipeline(demo_scorer)
    out = pipe.index(folder)
    assert out.rows == 5 and out.scores["skipped"] == 2
    assert [p for p, _ in out.skipped] == ["broken.png", "truncated.jpg"]
    assert all("could not be read" in why or "truncated" in why.lower() for _, why in out.skipped), out.skipped
    count = Counter(demo_scorer, monkeypatch)
    again = pipe.index(folder)  # unchanged broken files are listed again without being read again
    assert count.images == 0 and [p for p, _ in again.skipped] == ["broken.png", "truncated.jpg"]
    shape_image((40, 40, 220), size=64).save(folder / "broken.png")  # repaired
    fixed = pipe.index(folder)
    assert count.images == 1 and fixed.rows == 6 and [p for p, _ in fixed.skipped] == ["truncated.jpg"]


def test_an_index_made_by_another_clip_is_refused_naming_it(folder, demo_scorer, tiny_scorer):
    CLIPIndexPipeline(demo_scorer).index(folder)
    other = CLIPIndexPipeline(tiny_scorer)
    with pytest.raises(SpecMismatch, match=r"made with CLIP 'shapes-clip'.*not 'tiny-test-vit'"):
        other.index(folder)
    with pytest.raises(SpecMismatch, match=r"made with CLIP 'shapes-clip'"):
        other.search(folder, "a red circle")
    assert ImageIndex.open(folder).count() == 5  # nothing was touched


def test_bad_arguments_name_themselves(folder, demo_scorer, tmp_path):
    pipe = CLIPIndexPipeline(demo_scorer)
    with pytest.raises(ValueError, match="`folder`.*is not a folder"):
        pipe.index(tmp_path / "nope")
    with pytest.raises(ValueError, match="`folder`.*has no image index yet"):
        pipe.search(folder, "a red circle")
    with pytest.raises(ValueError, match=r"`max_images`"):
        pipe.index(folder, max_images=3)
    assert not ImageIndex(folder).exists()  # refused before anything was written
    pipe.index(folder)
    with pytest.raises(ValueError, match=r"`threshold` must be a number in \[-100, 100\], got 101"):
        pipe.search(folder, "a red circle", threshold=101)
    with pytest.raises(ValueError, match=r"`top_k` must be an integer in \[1, 1000\], got 0"):
        pipe.search(folder, "a red circle", top_k=0)
    with pytest.raises(ValueError, match="`query` and `query_image` are both empty"):
        pipe.search(folder, "  ")
    with pytest.raises(ValueError, match="`batch_size`"):
        pipe.index(folder, batch_size=0)
    page = CLIPIndexPipeline(demo_scorer, allow_paths=False)  # what the web page builds
    with pytest.raises(ValueError, match="looks like a file path.*upload the image instead"):
        page.search(folder, f"a red circle + {folder / 'blue_square.png'}")


# ---------------------------------------------------------------------------------------------------- arithmetic
def test_parse_query_reads_rclips_form():
    terms = parse_query('"2:golden retriever" + ./pool.jpg - fruit')
    assert terms == [Term(2.0, "text", "golden retriever"), Term(1.0, "path", "./pool.jpg"),
                     Term(-1.0, "text", "fruit")]
    assert describe(terms) == "2:“golden retriever” + ./pool.jpg − “fruit”"
    assert parse_query("a red-haired man") == [Term(1.0, "text", "a red-haired man")]
    assert parse_query("a dog's toy - 0.5:cat") == [Term(1.0, "text", "a dog's toy"), Term(-0.5, "text", "cat")]
    assert parse_query('- 3:"a + b" + ~/x.png') == [Term(-3.0, "text", "a + b"), Term(1.0, "path", "~/x.png")]
    for bad, why in [("", "non-empty"), ("a + + b", "two operators"), ("a -", "ends with an operator"),
                     ('"open', "unclosed"), ("20:cat", "weights must be within"), (" + ".join("ab" * 17), "at most"),
                     ("x" * 1001, "at most 1000 characters")]:
        with pytest.raises(ValueError, match=why):
            parse_query(bad)
    with pytest.raises(ValueError, match="cancel out"):
        combine([Term(1.0, "text", "a"), Term(-1.0, "text", "a")], [np.ones(4), np.ones(4)])


def test_arithmetic_matches_a_hand_computation_on_the_embeddings(folder, demo_scorer):
    pipe = CLIPIndexPipeline(demo_scorer)
    pipe.index(folder)
    query = f'"2:a red circle" + {folder / "blue_square.png"} - 0.5:circle'
    hits = pipe.search(folder, query, top_k=5, threshold=-100)
    # by hand: the stored vectors, the two texts' embeddings and the image's (it is in the index: its stored row)
    stored = ImageIndex.open(folder).vectors()
    red, circle = demo_scorer.encode_text(["a red circle", "circle"]).numpy()
    q = 2.0 * red + stored["blue_square.png"] - 0.5 * circle
    q = q / np.linalg.norm(q)
    names = sorted(stored)
    sims = 100.0 * np.stack([stored[n] for n in names]) @ q
    order = np.argsort(-sims)
    assert [Path(p).name for p in hits.paths] == [names[i] for i in order]
    np.testing.assert_allclose(hits.similarities, sims[order], atol=1e-3)
    # the image term embedded from its file equals its stored row
    fresh = demo_scorer.encode_image(to_tensor(load_image(folder / "blue_square.png")))[0].numpy()
    np.testing.assert_allclose(fresh, stored["blue_square.png"], atol=1e-5)


def test_threshold_hides_weak_matches_and_says_how_many(folder, demo_scorer):
    pipe = CLIPIndexPipeline(demo_scorer)
    pipe.index(folder)
    every = pipe.search(folder, "a red circle", top_k=5, threshold=-100)
    cut = (every.similarities[0] + every.similarities[1]) / 2
    some = pipe.search(folder, "a red circle", top_k=5, threshold=cut)
    assert some.paths == every.paths[:1] and some.hidden == 4


# ------------------------------------------------------------------------------------------ approximate search
def test_an_ivf_index_is_built_past_the_threshold_and_finds_the_nearest(tmp_path):
    """Storage only (synthetic embeddings): past `ann_min_rows` an IVF index is built and answers queries."""
    rng = np.random.default_rng(0)
    n, dim = 600, 16
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = ImageIndex(tmp_path)
    idx.create("synthetic", "weights", "none", dim)
    rows = [{"path": f"{i:04d}.png", "size": 1, "mtime_ns": 1, "width": 1, "height": 1, "thumbnail": b"",
             "vector": v} for i, v in enumerate(vecs)]
    idx.add(rows[:200])
    assert idx.finish(ann_min_rows=256) == "" and not idx.has_ann()
    idx.add(rows[200:])
    assert idx.finish(ann_min_rows=256) == "built" and idx.has_ann()
    for i in (3, 250, 599):
        hits = idx.search(vecs[i], top_k=3, thumbnails=False, nprobes=24)  # all partitions: exact
        assert Path(hits[0].path).name == f"{i:04d}.png" and hits[0].similarity == pytest.approx(100.0, abs=1e-3)
    idx.add([{**rows[0], "path": "late.png", "vector": -vecs[0]}])
    assert idx.finish(ann_min_rows=256) == "updated"
    assert Path(idx.search(-vecs[0], top_k=1, thumbnails=False, nprobes=24)[0].path).name == "late.png"


# ------------------------------------------------------------------------------------------------ command line
def _cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_index_and_search_end_to_end(folder):
    (folder / "broken.png").write_bytes(b"nope")
    done = _cli("index", str(folder), "--clip", "shapes-clip", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "5 images indexed with shapes-clip" in done.stdout and "skipped: broken.png" in done.stderr
    found = _cli("search", "a yellow square", "--index", str(folder), "--top-k", "2", "--threshold", "-100", "--json")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 2 and Path(results[0]["path"]).name == "yellow_square.png"
    table = _cli("search", f"a blue square + {folder / 'red_circle.png'}", "--index", str(folder))
    assert table.returncode == 0 and "rank  similarity  path" in table.stdout, table.stderr
    bad = _cli("search", "a red circle", "--index", str(folder), "--clip", "tiny-nope", "--threshold", "500")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "`threshold`" in bad.stderr
    other = _cli("search", "a red circle", "--index", str(folder.parent))
    assert other.returncode == 2 and "has no image index yet" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_index_and_search_help_do_not_import_torch():
    code = ("import sys\nfrom studio import cli\n"
            "for cmd in ('index', 'search'):\n"
            "    try:\n        cli.main([cmd, '--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
            "bad = [m for m in ('torch', 'pipelines', 'lancedb') if m in sys.modules]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--top-k" in out.stdout and "--batch-size" in out.stdout


# ------------------------------------------------------------------------------------------------------- the tab
def _tab(index_folder, public=False):
    import gradio as gr

    from studio import app
    from studio.trust import Policy
    from studio.ui import lens as ui

    policy = Policy(public=public, clip_models=("shapes-clip",))
    lens = app.make_lens_functions("cpu", policy, index=str(index_folder) if index_folder else None)
    with gr.Blocks() as demo:
        ui.build(lens["classify"], lens["search"], lens["arithmetic"], ["shapes-clip"], "shapes-clip",
                 lambda spec: None, lens["specs"], lens["max_gallery"], image_search=lens["image_search"],
                 index=lens.get("index"))
    return demo, {f.api_name: f.fn for f in demo.fns.values()}


def test_the_tab_updates_and_searches_the_server_s_index(folder, demo_scorer):
    import gradio as gr

    _, fns = _tab(folder)
    *_, last = fns["lens_index_update"]()
    _token, status, progress, sheet = last
    assert "5 images, CLIP `shapes-clip`" in status and "done" in progress and sheet is not None
    *_, found = fns["lens_index_search"]("a yellow square", None, 3, -100.0)
    _token, gallery, progress, _notice, downloads = found
    assert len(gallery) == 3 and gallery[0][1].endswith("· yellow_square.png") and any(
        d.endswith(".json") for d in downloads)
    upload = folder.parent / "upload.png"
    shape_image((40, 40, 220), square=True, size=72).save(upload)
    *_, by_image = fns["lens_index_search"]("", str(upload), 2, -100.0)  # image → image, by an upload alone
    assert by_image[1][0][1].endswith("· blue_square.png")
    with pytest.raises(gr.Error, match="looks like a file path"):  # a visitor's text never names a server file
        list(fns["lens_index_search"](f"a cat + {folder / 'red_circle.png'}", None, 3, 0.0))
    with pytest.raises(gr.Error, match="`threshold`"):
        list(fns["lens_index_search"]("a cat", None, 3, 1000.0))


def test_the_tab_ranks_uploads_by_an_image_alone(tmp_path, demo_scorer):
    _, fns = _tab(None)
    assert "lens_index_search" not in fns  # no index given: no index tab
    files = []
    for i, im in enumerate(gallery()):  # a blue square, a red circle
        files.append(str(tmp_path / f"{i}.png"))
        im.save(files[-1])
    query = tmp_path / "q.png"
    shape_image((220, 40, 40), size=64).save(query)
    *_, last = fns["lens_image_search"]("shapes-clip", files, str(query))
    assert len(last[1]) == 2 and "done" in last[2]


def test_a_public_server_searches_its_index_but_offers_no_update(folder, demo_scorer):
    CLIPIndexPipeline(demo_scorer).index(folder)
    _, fns = _tab(folder, public=True)
    assert "lens_index_update" not in fns and "lens_index_search" in fns
    # Issue 22 #9: the downloads (the JSON, each PNG's settings) hold paths relative to the index, not the server's
    # absolute folder; the gallery says the same.
    *_, found = fns["lens_index_search"]("a yellow square", None, 3, -100.0)
    _token, gallery, _progress, _notice, downloads = found
    assert gallery[0][1].endswith("· yellow_square.png")
    texts = [Path(d).read_text(encoding="utf-8") if d.endswith(".json") else json.dumps(Image.open(d).text)
             for d in downloads]
    assert len(texts) == 4 and not any(str(folder.parent) in t for t in texts), texts
    data = json.loads(next(t for d, t in zip(downloads, texts) if d.endswith(".json")))
    assert data["paths"][0] == "yellow_square.png"
    meta = json.loads(Image.open(downloads[0]).text["clip-studio"])
    assert meta["folder"] == "photos" and meta["path"] == "yellow_square.png"


def test_the_serve_flag_names_the_index_folder(tmp_path):
    from studio import app
    from studio.cli import parse_serve_args

    assert parse_serve_args(["--index", str(tmp_path)]).index == str(tmp_path)
    with pytest.raises(ValueError, match="`--index`.*is not a folder"):
        app.make_lens_functions("cpu", None, index=str(tmp_path / "missing"))
