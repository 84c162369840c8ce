"""The Lens tab's video moments and object boxes, end to end: the real app on a free port, driven through
gradio_client with the demo CLIP (and the page's controls compared with the configs)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import launch_local

from pipelines.registry import get_task
from studio.demo.scenes import Appearance, iou, make_scene, write_shapes_video

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from studio import app as studio_app

    old = os.environ.get("STUDIO_CACHE")
    os.environ["STUDIO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    demo = studio_app.build_app(clip="shapes-clip", device="cpu")
    url = launch_local(demo)
    yield demo, url
    demo.close()
    if old is None:
        os.environ.pop("STUDIO_CACHE", None)
    else:
        os.environ["STUDIO_CACHE"] = old


def _defaults(task: str, **over) -> list:
    return [over.get(n, s.default) for n, s in get_task(task).specs().items() if s.control]


def test_the_page_has_every_control_of_both_tasks(app):
    from test_ui_config import check_controls_match_configs

    assert {"lens-video", "lens-detect"} <= check_controls_match_configs(app[0], cpu=True)


def test_video_moments_through_the_client(app, tmp_path):
    from gradio_client import Client, handle_file

    video = write_shapes_video(tmp_path / "shapes.mp4", [Appearance("red", "circle", 2.0, 4.0)], 6.0, fps=5,
                               size=(96, 64))
    client = Client(app[1], verbose=False)
    out = client.predict("shapes-clip", handle_file(str(video)), "a red circle", None,
                         *_defaults("lens-video", patches=False), api_name="/lens_video")
    bar, _, gallery, clip, _, files = out  # the run token (a State) is not sent to clients
    assert "done" in bar and gallery and clip
    moments = json.loads(open(next(f for f in files if f.endswith(".json"))).read())["moments"]
    assert abs(moments[0]["start_s"] - 2.0) <= 1.0 and abs(moments[0]["end_s"] - 4.0) <= 1.0
    assert "0:02.0" in gallery[0]["caption"]
    # a file that is no video comes back as our message, and the server goes on answering
    bad = tmp_path / "fake.mp4"
    bad.write_bytes(b"no video here" * 40)
    with pytest.raises(Exception, match="is not a video file"):
        client.predict("shapes-clip", handle_file(str(bad)), "a red circle", None, *_defaults("lens-video"),
                       api_name="/lens_video")


def test_object_boxes_through_the_client(app, tmp_path):
    from gradio_client import Client, handle_file

    scene = make_scene(5)
    path = tmp_path / "scene.png"
    scene.image.save(path)
    client = Client(app[1], verbose=False)
    bar, boxes, _, files = client.predict("shapes-clip", "clip", handle_file(str(path)), "a blue square", None,
                                          *_defaults("lens-detect", threshold=0.0), api_name="/lens_detect")
    assert "done" in bar
    coco = json.loads(open(next(f for f in files if f.endswith(".json"))).read())
    x, y, w, h = coco["annotations"][0]["bbox"]
    assert iou((x, y, x + w, y + h), scene.find("blue", "square").box) >= 0.5
    first = boxes["annotations"][0]
    assert first["label"].startswith("a blue square")
    with pytest.raises(Exception, match="queries"):
        client.predict("shapes-clip", "clip", handle_file(str(path)), " , ", None, *_defaults("lens-detect"),
                       api_name="/lens_detect")
    with pytest.raises(Exception, match="not in the list of choices"):  # only the detectors the page offers
        client.predict("shapes-clip", "/etc/owl", handle_file(str(path)), "a cat", None, *_defaults("lens-detect"),
                       api_name="/lens_detect")


def test_the_adapter_refuses_a_detector_the_machine_does_not_hold():
    from studio.app import make_lens_video_detect_functions

    fns = make_lens_video_detect_functions("cpu")
    assert fns["detect"]["detectors"][0] == "clip"
    with pytest.raises(ValueError, match="`detector` must be one of"):
        next(fns["detect"]["run"]("shapes-clip", "/etc/owl", make_scene(0).image, "a cat", None))
