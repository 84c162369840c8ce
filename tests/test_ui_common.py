import gradio as gr
import pytest

from studio.ui.common import user_errors


def test_value_errors_become_gr_errors_with_the_same_text():
    @user_errors
    def handler(x):
        raise ValueError(f"`x` must be positive, got {x}")

    with pytest.raises(gr.Error, match="`x` must be positive, got -1"):
        handler(-1)


def test_messages_are_escaped_for_the_page_so_a_named_element_shows():
    # Gradio renders a toast's text as HTML: "<text>" unescaped was taken for a tag and vanished (issue 29)
    @user_errors
    def handler():
        raise ValueError("`init_svg` is not a usable SVG: SVG element <text> is not supported & 'quoted'")

    with pytest.raises(gr.Error) as err:
        handler()
    assert err.value.message == ("`init_svg` is not a usable SVG: SVG element &lt;text&gt; is not supported &amp; "
                                 "'quoted'")

    @user_errors
    def bug():
        raise RuntimeError("<b>bold</b>")

    with pytest.raises(gr.Error) as err:
        bug()
    assert "&lt;b&gt;bold&lt;/b&gt;" in err.value.message and "<b>" not in err.value.message


def test_generators_are_wrapped_and_keep_their_previews():
    @user_errors
    def handler():
        yield "preview 1"
        raise RuntimeError("The GPU ran out of memory during rendering.")

    gen = handler()
    assert next(gen) == "preview 1"
    with pytest.raises(gr.Error, match="ran out of memory"):
        next(gen)


def test_unexpected_errors_are_reported_briefly():
    @user_errors
    def handler():
        return {}["missing"]

    with pytest.raises(gr.Error, match="Something went wrong \\(KeyError"):
        handler()


def _task(total, sent):
    from studio.progress import Progress, Result

    step = 0
    for step in range(1, total + 1):
        cmd = yield Progress(step, total)
        sent.append(cmd)
        if cmd == "stop":
            break
    yield Result(steps_run=step, stopped=step < total)


def test_one_stop_is_keyed_by_the_run_and_leaves_nothing_behind():
    from studio.ui.common import RUNS, drive, run_handler

    sent = []

    def fn(n, flag):
        yield from drive(_task(int(n), sent), flag, lambda item: ("step", item.step),
                         lambda res: ("result", res.steps_run, res.stopped))

    before = RUNS.active()
    first, second = run_handler(fn)(10), run_handler(fn)(10)
    token1, *out1 = next(first)
    token2, *out2 = next(second)
    assert token1 != token2 and RUNS.active() == before + 2 and out1 == ["step", 1]
    assert RUNS.stop(token1)  # stops the first run only
    rest1 = list(first)
    assert rest1[-1][1:] == ("result", 1, True)
    assert next(second)[1:] == ("step", 2)  # the other run goes on
    second.close()  # the page went away: closed, and its token dropped too
    assert RUNS.active() == before and not RUNS.stop(token1) and not RUNS.stop(None)


def test_a_failing_run_drops_its_token_and_reports_the_error():
    from studio.ui.common import RUNS, run_handler

    def fn(flag):
        yield ("started",)
        raise ValueError("`prompt` must be non-empty text, got ''")

    before = RUNS.active()
    gen = run_handler(fn)()
    next(gen)
    with pytest.raises(gr.Error, match="`prompt`"):
        next(gen)
    assert RUNS.active() == before


def test_progress_text_says_running_done_or_stopped():
    from studio.ui.common import progress_html

    assert "step 3 / 10 (30 %)" in progress_html(3, 10)
    assert "done: 10 of 10 steps" in progress_html(10, 10, state="done")
    assert "done: 7 of 7 images" in progress_html(7, 7, state="done", unit="images")  # a search counts images
    one = progress_html(1, 1, "3 boxes", state="done", unit=None)  # one pass: nothing was stepped
    assert "done · 3 boxes" in one and "steps" not in one
    stopped = progress_html(4, 10, state="stopped")
    assert "stopped at step 4 of 10" in stopped and "100 %" not in stopped and 'value="4"' in stopped


def test_image_uploads_reach_our_reader_and_its_message(tmp_path):
    """Issue 16: a non-image renamed .png got Gradio's raw preprocess error (component indices, temp paths)."""
    from PIL import Image

    from studio.ui.common import image_upload

    with gr.Blocks() as demo:
        box = image_upload("Photo")
    assert isinstance(box, gr.File) and box.type == "filepath"
    show = next(fn.fn for fn in demo.fns.values() if fn.fn is not None and fn.fn.__name__ == "show")
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(gr.Error) as err:
        show(str(fake))
    # issue 29: the upload's own name, not the server's temp path, and no UnidentifiedImageError
    assert err.value.message.startswith("`image` could not be read as an image: 'fake.png' is not in an image format")
    assert str(tmp_path) not in err.value.message and "UnidentifiedImageError" not in err.value.message
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 30), "red").save(good)
    assert show(str(good))["value"].size == (20, 30)


def test_setup_problems_stay_on_the_page_and_user_errors_do_not():
    """Issue 16: "what was tried" for a missing checkpoint was a toast that vanished after ~10 s."""
    from studio.hub import WeightsNotFoundError

    @user_errors
    def missing():
        raise WeightsNotFoundError("ffhq-1024", ["cache: missing", "download: offline"], "put the file in ...")

    @user_errors
    def bad():
        raise ValueError("`num_steps` must be an integer in [1, 10000], got 0")

    with pytest.raises(gr.Error) as setup:
        missing()
    with pytest.raises(gr.Error) as user:
        bad()
    assert setup.value.duration is None and "ffhq-1024" in str(setup.value)
    assert setup.value.visible  # no page event here: the error itself is the message
    assert user.value.duration is not None


def test_in_a_page_event_a_setup_problem_is_a_warning_toast_without_a_time_limit(monkeypatch):
    """Gradio 6 groups a page's toasts by type and closes a whole group when its first message's time runs out:
    a setup error shown within 10 s of a bad-input error vanished with it (issue 16). In a queued event a setup
    problem is therefore a warning toast without a time limit, and the error that ends the event carries the same
    text for API clients but shows no toast of its own."""
    from gradio.context import LocalContext

    from studio.hub import WeightsNotFoundError

    sent = []

    class Queue:
        def log_message(self, **kwargs):
            sent.append(kwargs)

    class Blocks:
        _queue = Queue()

    @user_errors
    def missing():
        raise WeightsNotFoundError("ffhq-1024", ["cache: missing"], "put the file in ...")

    @user_errors
    def bad():
        raise ValueError("`num_steps` must be an integer in [1, 10000], got 0")

    blocks, event = LocalContext.blocks.set(Blocks()), LocalContext.event_id.set("event-1")
    try:
        with pytest.raises(gr.Error) as setup:
            missing()
        with pytest.raises(gr.Error) as user:
            bad()
    finally:
        LocalContext.blocks.reset(blocks)
        LocalContext.event_id.reset(event)
    assert [(m["level"], m["duration"], m["visible"]) for m in sent] == [("warning", None, True)]
    assert "ffhq-1024" in sent[0]["log"] and "cache: missing" in sent[0]["log"]
    assert not setup.value.visible and "ffhq-1024" in str(setup.value) and setup.value.duration is None
    assert user.value.visible and user.value.duration is not None  # a bad input: the usual error toast


def test_the_studio_shows_no_timed_warning_toasts():
    """Setup problems are the page's only warning toasts (`setup_error`, no time limit): one timed warning shown
    before them would close them with it when its time ran out (Gradio 6 closes a group of toasts of one type on
    its first message's timer)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    calls = [(path.relative_to(root).as_posix(), line.strip()) for folder in ("studio", "pipelines")
             for path in sorted((root / folder).rglob("*.py")) for line in path.read_text().splitlines()
             if re.search(r"\b(gr\.)?Warning\(", line)]
    assert calls == [("studio/ui/common.py", "gr.Warning(message, duration=None, title=SETUP_TITLE)")]


def test_number_boxes_leave_out_of_range_values_to_the_tasks_check():
    """Issue 16: a negative seed got Gradio's "Value -7 is less than minimum value 0." while other fields said
    what was wrong in the studio's words (the API's and the CLI's)."""
    from pipelines.registry import get_task
    from studio.tasks import check_value
    from studio.ui.common import control

    spec = get_task("clipdraw").specs()["seed"]
    with gr.Blocks():
        box = control("clipdraw", spec)
    assert isinstance(box, gr.Number) and box.info == "from 0 to 4294967295"
    assert box.preprocess(-7) == -7  # Gradio passes it on instead of answering in its own words
    with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, 4294967295\], got -7"):
        check_value(spec, box.preprocess(-7))


def test_the_server_log_holds_one_line_per_user_error_and_a_traceback_only_for_bugs(capfd, caplog):
    """Issue 16: every expected user error printed two full tracebacks in the server log."""
    import logging

    from conftest import launch_local
    from gradio_client import Client

    from studio.hub import WeightsNotFoundError

    @user_errors
    def bad_input(x):
        raise ValueError(f"`num_steps` must be an integer in [1, 10000], got {x}")

    @user_errors
    def setup(x):
        raise WeightsNotFoundError("ffhq-1024", ["cache: missing"], "put the file in ...")

    @user_errors
    def page_error(x):
        raise gr.Error("Generate an image first")

    @user_errors
    def bug(x):
        return {}["missing"]

    with gr.Blocks() as demo:
        box = gr.Textbox()
        for fn in (bad_input, setup, page_error, bug):
            gr.Button(fn.__name__).click(fn, box, box, api_name=fn.__name__)
    url = launch_local(demo)
    try:
        client = Client(url, verbose=False)
        capfd.readouterr()
        with caplog.at_level(logging.INFO, logger="studio.ui"):
            for name, said in (("bad_input", "num_steps"), ("setup", "ffhq-1024"), ("page_error", "first")):
                with pytest.raises(Exception, match=said):
                    client.predict("0", api_name=f"/{name}")
            expected = capfd.readouterr().err
            lines = [r for r in caplog.records if r.name == "studio.ui"]
            caplog.clear()
            with pytest.raises(Exception, match="Something went wrong"):
                client.predict("0", api_name="/bug")
            buggy = capfd.readouterr().err
            bug_records = [r for r in caplog.records if r.name == "studio.ui"]
    finally:
        demo.close()
    assert "Traceback" not in expected
    assert [(r.levelname, r.getMessage().count("\n")) for r in lines] == [("INFO", 0)] * 3
    assert "got 0" in lines[0].getMessage() and "ffhq-1024" in lines[1].getMessage()
    assert "Traceback" not in buggy  # Gradio's own print: none
    assert len(bug_records) == 1 and bug_records[0].levelname == "ERROR"
    assert bug_records[0].getMessage().count("Traceback") == 1 and "KeyError" in bug_records[0].getMessage()
