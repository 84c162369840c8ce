"""Open-vocabulary detection (pipelines/lens_detect.py): synthetic scenes with shapes at known boxes and the demo
CLIP; the OWL-ViT path on a tiny random OwlViT built from config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.lens_detect import MAX_QUERIES, LensDetectPipeline, OwlDetector, nms, parse_queries, region_proposals
from studio.demo.scenes import iou, make_scene


@pytest.fixture(scope="module")
def det(demo_scorer):
    return LensDetectPipeline(demo_scorer)


def test_a_blue_square_is_boxed_in_at_least_80_percent_of_20_scenes(det):
    hits = []
    for seed in range(20):
        scene = make_scene(seed)  # 3-5 shapes of different colours, one a blue square
        out = det.detect(scene.image, "a blue square, a red circle", threshold=0.0)
        boxes = [b for b, lab in zip(out.boxes, out.labels) if lab == "a blue square"]
        hits.append(bool(boxes) and iou(boxes[0], scene.find("blue", "square").box) >= 0.5)
    assert sum(hits) >= 16, hits


def test_other_queries_box_their_own_shape(det):
    found = 0
    for seed in range(5):
        scene = make_scene(seed + 100)
        target = next(o for o in scene.objects if o.colour != "blue")
        out = det.detect(scene.image, f"a {target.name}", threshold=0.0)
        found += iou(out.boxes[0], target.box) >= 0.5
    assert found >= 4


def test_an_example_crop_finds_its_object(det):
    scene = make_scene(7)
    truth = scene.find("blue", "square").box
    x0, y0, x1, y1 = (int(v) for v in truth)
    crop = scene.image.crop((x0 - 8, y0 - 8, x1 + 8, y1 + 8))
    out = det.detect(scene.image, query_image=crop, threshold=0.0)
    assert out.labels[0] == "example" and iou(out.boxes[0], truth) >= 0.5


def test_output_format_and_coco_json(det, tmp_path):
    scene = make_scene(1)
    out = det.detect(scene.image, ["a blue square", "a red circle"], threshold=0.0, max_detections=3)
    assert len(out.boxes) == len(out.labels) == len(out.box_scores) <= 3
    assert out.box_scores == sorted(out.box_scores, reverse=True)
    w, h = scene.image.size
    assert all(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h for b in out.boxes)
    assert set(out.labels) <= {"a blue square", "a red circle"}
    paths = out.save(tmp_path)
    coco = json.loads(paths["json"].read_text())
    assert [c["name"] for c in coco["categories"]] == ["a blue square", "a red circle"]
    assert coco["images"][0]["width"] == w and len(coco["annotations"]) == len(out.boxes)
    a = coco["annotations"][0]
    b = out.boxes[0]
    assert a["bbox"] == pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]], abs=0.01)
    assert coco["categories"][a["category_id"] - 1]["name"] == out.labels[0]
    ann = out.annotations()
    assert ann[0][1].startswith(out.labels[0]) and len(ann[0][0]) == 4
    assert Image.open(paths["png"]).size == (w, h)


def test_threshold_and_max_detections_hide_boxes_and_say_so(det):
    scene = make_scene(2)
    everything = det.detect(scene.image, "a blue square", threshold=0.0, max_detections=100)
    top = everything.box_scores[0]
    strict = det.detect(scene.image, "a blue square", threshold=top - 0.01)
    # every box past NMS is shown or counted (a large box beaten by a crop inside it is counted too)
    assert len(strict.boxes) == 1 and strict.hidden == len(everything.boxes) + everything.hidden - 1
    assert "hidden" in strict.notice


def test_stop_keeps_the_boxes_of_the_proposals_scored(det):
    scene = make_scene(3)
    gen = det.iter_detect(scene.image, "a blue square", batch_size=2, threshold=0.0)
    first = next(gen)
    assert first.total >= 2
    out = gen.send("stop")
    gen.close()
    assert out.stopped and out.proposals == 2 and out.steps_run == 1 and len(out.boxes) >= 1


def test_region_proposals_give_each_shape_its_box():
    scene = make_scene(4)
    x = torch.from_numpy(np.asarray(scene.image, dtype=np.float32) / 255).permute(2, 0, 1)
    boxes = region_proposals(x, 0.08, 0.002, 300)
    for obj in scene.objects:
        assert max(iou(b, obj.box) for b in boxes) >= 0.8, obj


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 10]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.3, 0.4])
    assert nms(boxes, scores, 0.5) == [1, 2]
    assert nms(boxes, scores, 0.95) == [1, 0, 3, 2]


def test_bad_input_is_a_value_error(det):
    scene = make_scene(0)
    with pytest.raises(ValueError, match="`queries` must name at least one thing"):
        det.detect(scene.image, " , \n ")
    with pytest.raises(ValueError, match="`queries` must name at least one thing"):
        det.detect(scene.image, [])
    with pytest.raises(ValueError, match=f"at most {MAX_QUERIES} queries"):
        det.detect(scene.image, [f"thing {i}" for i in range(MAX_QUERIES + 1)])
    with pytest.raises(ValueError, match="`image` is 1×1 pixels"):
        det.detect(Image.new("RGB", (1, 1)), "a blue square")
    with pytest.raises(ValueError, match=r"`threshold` must be a number in \[0, 100\], got 101"):
        det.detect(scene.image, "a blue square", threshold=101)
    with pytest.raises(ValueError, match="`queries` must be text"):
        parse_queries(3)


# ------------------------------------------------------------------------------------------------- OWL-ViT path
@pytest.fixture(scope="module")
def tiny_owl():
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor

    from studio.hub import resolve_clip
    from studio.scorer import _build

    torch.manual_seed(0)
    config = OwlViTConfig(
        text_config={"vocab_size": 49408, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    model = OwlViTForObjectDetection(config)
    # Random weights saturate the box head's sigmoid into zero-size boxes; with its last layer at zero each patch
    # predicts OWL-ViT's own prior box (the patch's position and size), and everything else stays random.
    torch.nn.init.zeros_(model.box_head.dense2.weight)
    torch.nn.init.zeros_(model.box_head.dense2.bias)
    processor = OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    tokenize = _build(resolve_clip("shapes-clip"), torch.device("cpu"), torch.float32).tokenizer  # CLIP's BPE

    def tokenizer(texts):
        ids = tokenize(texts)[:, :16]
        ids[:, -1] = torch.where(ids[:, -1] != 0, torch.tensor(49407), ids[:, -1])  # keep an end token
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    return OwlDetector(model, processor, tokenizer, name="tiny-owlvit")


def test_the_owl_vit_path_returns_the_same_format(tiny_owl, tmp_path):
    pipe = LensDetectPipeline(None, tiny_owl)
    scene = make_scene(0, size=96)
    out = pipe.detect(scene.image, "a blue square, a red circle", threshold=0.0, max_detections=5)
    assert out.detector == "tiny-owlvit" and 1 <= len(out.boxes) <= 5
    assert len(out.boxes) == len(out.labels) == len(out.box_scores)
    assert all(len(b) == 4 and 0 <= b[0] <= b[2] <= 96 and 0 <= b[1] <= b[3] <= 96 for b in out.boxes)
    assert set(out.labels) <= {"a blue square", "a red circle"}
    assert all(0.0 <= s <= 100.0 for s in out.box_scores) and out.box_scores == sorted(out.box_scores, reverse=True)
    coco = json.loads(out.save(tmp_path)["json"].read_text())
    assert coco["info"]["detector"] == "tiny-owlvit" and len(coco["annotations"]) == len(out.boxes)
    with pytest.raises(ValueError, match="`query_image` works with the CLIP detector only"):
        pipe.detect(scene.image, "a cat", query_image=scene.image)


def test_owl_weights_missing_offline_name_what_was_tried(tmp_path):
    from studio.hub import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="google/owlvit-base-patch32"):
        OwlDetector.from_pretrained("google/owlvit-base-patch32")


def test_the_command_line_runs_lens_detect(tmp_path, capsys):
    from studio.cli import main

    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed in range(2):
        make_scene(seed).image.save(folder / f"scene{seed}.png")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        main(["run", "lens-detect", "--images", str(folder), "--prompt", "a blue square, a red circle",
              "--clip", "shapes-clip", "--threshold", "0", "--out", str(out), "--quiet"])
    assert done.value.code in (0, None), capsys.readouterr()
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(ln["error"] is None for ln in lines)
    for seed, ln in enumerate(lines):
        coco = json.loads((out / ln["files"]["json"]).read_text())
        blue = [a for a in coco["annotations"] if a["category_id"] == 1]
        x, y, w, h = blue[0]["bbox"]
        assert iou((x, y, x + w, y + h), make_scene(seed).find("blue", "square").box) >= 0.5


def test_a_box_covering_most_of_the_image_must_beat_the_crops_inside_it():
    """Issue 29: the whole canvas came back as "a red circle" (25.2) beside the circle's own box; a large box is
    kept only when it scores more for its query than every crop inside it."""
    import torch

    from pipelines.lens_detect import LensDetectConfig, LensDetectPipeline

    cfg = LensDetectConfig(threshold=20.0)
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 90.0, 90.0]])
    names = ["a red circle", "a blue square"]
    # whole canvas: red 25.2 (beaten by the circle's crop, 40); the square's crop 35 for blue
    sims = torch.tensor([[25.2, 10.0], [40.0, 5.0], [5.0, 35.0]])
    bxs, labels, scores, hidden = LensDetectPipeline._select(boxes, sims, names, cfg, 100.0 * 100.0)
    assert labels == ["a red circle", "a blue square"] and [0.0, 0.0, 100.0, 100.0] not in bxs and hidden == 1
    # a large box that beats every crop inside it stays (a big object), and without the image area nothing changes
    sims[0, 0] = 45.0
    bxs, labels, scores, hidden = LensDetectPipeline._select(boxes, sims, names, cfg, 100.0 * 100.0)
    assert bxs[0] == [0.0, 0.0, 100.0, 100.0] and labels[0] == "a red circle" and hidden == 0
    sims[0, 0] = 25.2
    assert [0.0, 0.0, 100.0, 100.0] in LensDetectPipeline._select(boxes, sims, names, cfg)[0]
