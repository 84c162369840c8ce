"""Small helpers every tab uses: turning errors into messages the page shows, model status notices."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import os
import re
import tempfile
import threading
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import gradio as gr

from studio.runner import StopFlag, drive  # noqa: F401 — the tabs drive their runs through the one runner

log = logging.getLogger("studio.ui")


@dataclass
class ServerLimits:
    """What the server allows (from `studio.trust.Policy`; `one_gpu_queue(demo, limits)` hands them to every
    handler once the page is built, so no tab reads a global while it is built). custom_models: model dropdowns
    take typed values and errors show full paths (a local server); max_run_s: every run is stopped after this many
    seconds, keeping its result (a public server)."""

    custom_models: bool = True
    max_run_s: float | None = None
    delete_uploads: bool = False  # a run's uploaded files are deleted when it ends (a public server)


_ANSI = re.compile(r"\x1b\[[0-9;]{0,32}[A-Za-z]")  # terminal colour codes (torch's errors carry some)


def _server_dirs() -> list[str]:
    """Folders whose paths mean nothing to a visitor and say too much about the server: the temp dir (Gradio's
    upload cache, our outputs), the home directory, the working directory."""
    dirs = {os.environ.get("GRADIO_TEMP_DIR", ""), tempfile.gettempdir(), os.path.expanduser("~"), os.getcwd()}
    return sorted((d.rstrip("/") for d in dirs if d and d != "/"), key=len, reverse=True)


def _message(err: Exception, public: bool = False) -> str:
    """The text the page shows for an error: no terminal codes; on a public server (no custom model values) also
    the server's folders cut down to what lies below them (`…/upload-123/photo.png`), so its layout does not
    reach a visitor. A local server shows its own user the full paths."""
    text = _ANSI.sub("", str(err)) or type(err).__name__
    if public:
        for folder in _server_dirs():
            text = text.replace(folder + "/", "…/")
    return text


def page_text(text: str) -> str:
    """A message as the page's toasts show it: Gradio renders a toast's text as HTML, so `<text>` in "SVG element
    <text> is not supported" was taken for a tag and vanished (issue 29). Only &, < and > are escaped: quotes
    stay readable for API clients, which receive the same text."""
    return html.escape(text, quote=False)


def is_user_error(err: BaseException) -> bool:
    """Whether an error is an expected one with a message for users (see `user_errors`), not a bug."""
    return (isinstance(err, (ValueError, FileNotFoundError)) or getattr(err, "setup_problem", False)
            or getattr(err, "user_facing", False))


def user_errors(fn: Callable, limits: ServerLimits | None = None) -> Callable:
    """Wrap a handler so that bad input and failures reach the page as `gr.Error`, never a dead worker.

    Expected errors carry messages written for users: ValueError and FileNotFoundError (bad input), and the
    studio's own errors that say so (`setup_problem = True`: missing weights, a checkpoint of the wrong layout;
    `user_facing = True`: out of memory); each is logged as ONE line. Anything else (a torch RuntimeError, a
    KeyError: our bugs) is logged with its traceback and reported briefly. Gradio prints no traceback of its own
    for either (`print_exception=False`), so the server log holds one line per user error and one traceback per
    bug. A setup problem stays on the page until the user dismisses it, instead of vanishing after a few seconds.

    The wrapper's `studio_limits` (`limits`, else its own) are the server's limits, which `one_gpu_queue` sets once
    the page is built: a public server's messages show no server folders.
    """
    limits = limits or ServerLimits()

    def convert(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):  # raised by a handler itself: already worded (and escaped) for the page
            log.info("%s: %s", fn.__name__, _message(err, not limits.custom_models).splitlines()[0][:300])
            err.print_exception = False
            return err
        message = _message(err, not limits.custom_models)
        if is_user_error(err):
            log.info("%s: %s", fn.__name__, message.splitlines()[0][:300])
            if getattr(err, "setup_problem", False):
                return setup_error(message)
            return gr.Error(page_text(message), print_exception=False)
        log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
        return gr.Error(page_text(f"Something went wrong ({type(err).__name__}: {message}). Details are in the "
                                  "server log."), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 — every failure becomes a message on the page
                raise convert(err) from err
        gen_wrapper.studio_limits = limits
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise convert(err) from err
    wrapper.studio_limits = limits
    return wrapper


SETUP_TITLE = "Setup needed"


def setup_error(message: str) -> gr.Error:
    """The page's message for a setup problem (missing weights, a missing checkpoint or model, with what was tried
    and how to supply it): it stays on the page until the user dismisses it, whatever other toasts come and go.

    Raise what this returns. In a queued event it shows the message as a WARNING toast without a time limit and
    returns the same text as an error that ends the event without a toast of its own (API clients still get the
    text as their error). Not an error toast with `duration=None`: Gradio 6 groups the page's toasts by type, and
    a group closes all its messages when its FIRST message's time runs out, so a bad-input error (10 s) shown just
    before took every error that joined its group with it, a setup problem included (issue 16; the studio raises
    no timed warnings, which tests/test_ui_common.py checks, so the warning group holds setup problems only).
    Outside a queued event (no page to show a toast on), a plain error that is not timed."""
    from gradio.context import LocalContext

    message = page_text(message)
    if LocalContext.blocks.get(None) is not None and LocalContext.event_id.get(None) is not None:
        gr.Warning(message, duration=None, title=SETUP_TITLE)
        err = gr.Error(message, duration=None, visible=False, title=SETUP_TITLE, print_exception=False)
    else:
        err = gr.Error(message, duration=None, title=SETUP_TITLE, print_exception=False)
    err.setup_problem = True
    return err


def notice_markdown(notice: str | None) -> str:
    return f"⚠️ {notice}" if notice else ""


def _paths_in(values: Any) -> list[str]:
    """The file paths among a handler's arguments (strings, lists of them, Gradio FileData dicts)."""
    out: list[str] = []
    stack = [values]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict) and isinstance(v.get("path"), str):
            out.append(v["path"])
        elif isinstance(v, str) and 0 < len(v) < 4096 and os.path.isabs(v):
            out.append(v)
        elif hasattr(v, "name") and isinstance(v.name, str) and os.path.isabs(v.name):
            out.append(v.name)  # a tempfile-like upload object
    return out


def _uploads_of(args: tuple) -> tuple[list[str], list[str]]:
    """(this event's uploaded files among `args`, the paths among them in Gradio's upload cache that are gone)."""
    from gradio.context import LocalContext
    from gradio.utils import get_upload_folder

    blocks = LocalContext.blocks.get(None)
    uploaded = getattr(blocks, "upload_file_set", None) or set()
    cache = os.path.realpath(get_upload_folder()) + os.sep
    mine, gone = [], []
    for path in _paths_in(args):
        real = os.path.realpath(path)
        if not real.startswith(cache):
            continue
        if not os.path.isfile(real):
            gone.append(path)
        elif path in uploaded or real in uploaded:
            mine.append(real)
    return mine, gone


def _delete_uploads(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
            os.rmdir(os.path.dirname(path))  # Gradio's folder per content hash, when nothing else is in it
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------- the one Stop
class Runs:
    """The one Stop of every tab, keyed by the run (the event), not by the browser session.

    A run handler takes a token (`start`), sends it to the page's run-token `gr.State` with its first update, and
    reads its flag between steps; the Stop button's handler `stop(token)` sets that flag, and the run then ends
    with its best result so far, shown with its downloads. `finish` drops the token when the run ends, however it
    ends, so nothing is left behind (`active()` counts what is running)."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, limit_s: float | None = None) -> tuple[str, StopFlag]:
        """A new run's token and Stop flag; `limit_s`: the server's run-time limit, which the runner reads."""
        token, flag = uuid.uuid4().hex, StopFlag(limit_s)
        with self._lock:
            self._flags[token] = flag
        return token, flag

    def stop(self, token: str | None) -> bool:
        """Ask the run `token` to stop; False when it is not running (already finished, or never started)."""
        with self._lock:
            flag = self._flags.get(token) if token else None
        if flag is None:
            return False
        flag.set()
        return True

    def finish(self, token: str) -> None:
        with self._lock:
            self._flags.pop(token, None)

    def active(self) -> int:
        with self._lock:
            return len(self._flags)


RUNS = Runs()


def run_handler(fn: Callable[..., Iterator[tuple]]) -> Callable[..., Iterator[tuple]]:
    """Make a tab's run handler stoppable the one way: `fn(*args, flag=threading.Event)` yields tuples of output
    values; the handler takes the same positional arguments and yields `(token, *outputs)`, the token going to
    the tab's run-token `gr.State` (the Stop button's input). Errors become `gr.Error` (see `user_errors`).

    With a server time limit (`ServerLimits.max_run_s`, set by `one_gpu_queue`), the flag carries it and the
    runner stops the run once it has taken that long (counted from the click): it ends like a Stop, with its
    result, and the notice says why. With `ServerLimits.delete_uploads` (a public server), the files this event
    uploaded are deleted when the run ends, however it ends, and a run sent a deleted upload again is refused with a
    message saying so."""
    limits = ServerLimits()
    outputs = {"count": None}  # filled by `one_gpu_queue` once the event is wired

    def handler(*args):
        uploads: list[str] = []
        if limits.delete_uploads:
            uploads, gone = _uploads_of(args)
            if gone:
                raise ValueError("an uploaded file is no longer on this server (uploads are deleted when their run "
                                 "ends): upload it again")
        token, flag = RUNS.start(limits.max_run_s)
        if outputs["count"]:
            # The token at once, every other output unchanged: the Stop button works from the first moment, and
            # Gradio registers the run's iterator, which is how a cancelled request (the page closed, an API
            # client's cancel) closes the run; before its first update a cancelled run would go on unseen.
            yield (token, *[gr.skip()] * (outputs["count"] - 1))
        try:
            for out in fn(*args, flag=flag):
                yield (token, *out)
        finally:
            RUNS.finish(token)
            _delete_uploads(uploads)  # a public server keeps no upload past its run (issue 22 #6)

    handler.__name__ = getattr(fn, "__name__", "run")
    handler.__doc__ = fn.__doc__
    wrapped = user_errors(gpu_bound(handler), limits)
    wrapped.studio_outputs = outputs
    return wrapped


GPU_QUEUE = "studio-gpu"  # the one concurrency group of every handler that runs a model


def gpu_bound(fn: Callable) -> Callable:
    """Mark a handler as model work: `one_gpu_queue(demo)` puts every marked event into one concurrency group, so
    "one GPU job at a time" holds across endpoints, not per endpoint (run handlers are marked already)."""
    fn.studio_gpu = True
    return fn


def one_gpu_queue(demo: gr.Blocks, limits: ServerLimits | None = None) -> int:
    """Give every marked event of `demo` the one concurrency id (their limit is the queue's default limit), tell
    each run handler how many outputs its event has (its first update is the run token alone), and hand every
    handler the server's `limits`. Returns how many events were joined."""
    limits = limits or ServerLimits()
    joined = 0
    for block_fn in demo.fns.values():
        outputs = getattr(block_fn.fn, "studio_outputs", None)
        if outputs is not None:
            outputs["count"] = len(block_fn.outputs)
        own = getattr(block_fn.fn, "studio_limits", None)
        if own is not None:
            own.custom_models, own.max_run_s, own.delete_uploads = (limits.custom_models, limits.max_run_s,
                                                                     limits.delete_uploads)
        if getattr(block_fn.fn, "studio_gpu", False):
            block_fn.concurrency_id = GPU_QUEUE
            block_fn.concurrency_limit = "default"
            joined += 1
    return joined


def name_input_errors(demo: gr.Blocks) -> None:
    """Make the values Gradio itself refuses before a handler runs (an API call's slider value past its maximum, a
    number that is not one, a file that is not a file) answer like our own checks: a `ValueError`-style message that
    names the setting (the task's own check of that value, for the task settings' controls; else the component's
    name and Gradio's reason), shown on the page, and ONE log line instead of a traceback (issue 22 #11: 686 of
    1,432 bad-argument calls were answered "Value inf is greater than maximum value 3.0." or "Could not preprocess
    input component at index 2", each with a traceback in the log)."""
    preprocess = demo.preprocess_data

    async def named(block_fn, inputs, state, explicit_call=False):
        try:
            return await preprocess(block_fn, inputs, state, explicit_call)
        except Exception as err:  # noqa: BLE001 — every refusal becomes a named message
            message = _input_error(block_fn, inputs, err)
            log.info("%s: refused before the handler: %s", block_fn.api_name or block_fn.name, message[:300])
            raise gr.Error(message, print_exception=False) from None

    demo.preprocess_data = named


def _input_error(block_fn: Any, inputs: list, err: Exception) -> str:
    """The message for an input Gradio refused: which input (found from Gradio's message, or by validating each
    input again), named, with the task's own check where the component is a task setting's control."""
    from studio.tasks import check_value

    blocks = list(block_fn.inputs)
    text = _message(Exception(err.message)) if isinstance(err, gr.Error) else _message(err)  # str(Error) is a repr
    reason = (text.split("Original error:")[-1].strip().splitlines() or [type(err).__name__])[0][:300]
    index = None
    found = re.search(r"input component at index (\d+)", str(err))
    if found:
        index = int(found.group(1))
    elif len(inputs) != len(blocks):
        return f"this call sent {len(inputs)} values for {len(blocks)} inputs"
    else:
        for i, (block, value) in enumerate(zip(blocks, inputs)):
            try:
                model = getattr(block, "data_model", None)
                if model is not None and value is not None:
                    model.model_validate(value)
                spec = getattr(block, "studio_spec", None)
                if spec is not None:
                    check_value(spec, value)
                elif hasattr(block, "minimum") and isinstance(value, (int, float)):
                    if (block.minimum is not None and value < block.minimum) or (
                            getattr(block, "maximum", None) is not None and value > block.maximum):
                        raise ValueError(reason)
                if isinstance(block, gr.Dropdown) and not block.multiselect and not block.allow_custom_value:
                    if value not in [c[1] for c in block.choices]:
                        raise ValueError(reason)
            except Exception:  # noqa: BLE001 — the first input that does not pass is the one refused
                index = i
                break
    if index is None or index >= len(blocks):
        return f"a value of this call was refused: {reason}"
    block, value = blocks[index], inputs[index] if index < len(inputs) else None
    spec = getattr(block, "studio_spec", None)
    if spec is not None:
        try:
            check_value(spec, value)
        except ValueError as ours:
            return str(ours)
        return f"`{spec.name}`: {reason}"
    label = getattr(block, "label", None) or f"input {index + 1}"
    return f"`{label}` (input {index + 1}): {reason}"


def stop_button(token_state: gr.State, label: str = "Stop", api_name: str | None = None) -> gr.Button:
    """The Stop button of a run: asks the run whose token the state holds to stop (no queue: it must not wait
    behind the run it stops)."""
    def stop(token: str | None) -> None:
        RUNS.stop(token)

    btn = gr.Button(label, variant="stop")
    btn.click(stop, token_state, None, queue=False, api_name=api_name)
    return btn


def progress_html(step: int, total: int, text: str = "", state: str = "running", unit: str | None = "steps",
                  clock: Any = None) -> str:
    """The progress bar of every tab. state: "running" ("step k / n (p %)"), "done" ("done: k of n steps") or
    "stopped" ("stopped at step k of n"), then `text`. `unit` names what was counted when done ("images" for a
    search; None for a run of one pass, which says "done" alone: "done: 1 of 1 steps" said steps where nothing is
    stepped). clock: the runner's `Clock` of a running item (`item.clock`): its line (elapsed time, speed, ETA)
    ends the bar's text."""
    pct = 100.0 * step / max(1, total)
    done = f"done: {step} of {total} {unit}" if unit else "done"
    head = {"running": f"step {step} / {total} ({pct:.0f} %)", "done": done,
            "stopped": f"stopped at step {step} of {total}"}[state]
    line = " · ".join(p for p in (head, text, clock.line() if clock is not None else "") if p)
    return (f'<div style="width:100%"><progress value="{step}" max="{total}" style="width:100%"></progress>'
            f"<div>{html.escape(line)}</div></div>")


# --------------------------------------------------------------------------------- controls from the task configs
def control(task: str, spec: Any, *, cpu: bool = False, label: str | None = None, **kwargs: Any) -> gr.Component:
    """The page's control for one setting, from its `studio.tasks.ParamSpec`: default, range and choices come from
    the task's config and nowhere else. Its `elem_id` is `TASK--NAME`, which the tests use to compare the built
    page against the configs."""
    comp = _control(task, spec, cpu=cpu, label=label, **kwargs)
    comp.studio_spec = spec  # `name_input_errors` answers a value Gradio refuses with the task's own check
    return comp


def _control(task: str, spec: Any, *, cpu: bool, label: str | None, **kwargs: Any) -> gr.Component:
    value = spec.start_value(cpu)
    common = {"label": label or spec.label or spec.name.replace("_", " ").capitalize(),
              "elem_id": f"{task}--{spec.name}", **kwargs}
    if spec.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if spec.kind == "choice":
        return gr.Dropdown(list(spec.choices), value=value, **common)
    if spec.kind in ("int", "float"):
        lo, hi = spec.ui_lo, spec.ui_hi
        if lo is None or hi is None or hi - lo > 1e6:  # seeds and unbounded numbers: a number box
            # No minimum/maximum for Gradio to enforce: it would answer -7 with its own "Value -7 is less than
            # minimum value 0." before the task's check could say "`seed` must be an integer in [0, ...], got -7",
            # the wording of the API and the CLI (issue 16). The range is said under the box instead.
            if lo is not None or hi is not None:
                common.setdefault("info", f"from {_number(lo, '−∞')} to {_number(hi, '∞')}")
            return gr.Number(value=value, precision=0 if spec.kind == "int" else None, **common)
        step = spec.step or (1 if spec.kind == "int" else (hi - lo) / 100)
        return gr.Slider(lo, hi, value=value, step=step, **common)
    return gr.Textbox(value=value, **common)


def _number(value: float | None, none: str) -> str:
    if value is None:
        return none
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def controls(task: str, task_specs: dict[str, Any], names: Sequence[str], *, cpu: bool = False,
             labels: dict[str, str] | None = None) -> dict[str, gr.Component]:
    """`control` for each of `names`, in order."""
    labels = labels or {}
    return {n: control(task, task_specs[n], cpu=cpu, label=labels.get(n)) for n in names}


# ------------------------------------------------------------------------------------------------------ uploads
PREVIEW_QUEUE = "studio-preview"  # the one concurrency group of every upload preview
PREVIEW_CONCURRENCY = 2
def image_upload(label: str, name: str = "image", **kwargs: Any) -> gr.File:
    """An image upload that reaches our own reader: a file path (not `gr.Image`, which decodes the upload itself
    and answers a renamed non-image with its raw preprocess error), shown once read, and refused with our message
    (`studio.images.load_image`) when it is not an image. Handlers receive the path."""
    from studio.images import load_image  # no torch: the converters and the loader are plain PIL/NumPy

    box = gr.File(label=label, file_types=["image"], type="filepath", **kwargs)
    seen = gr.Image(label=f"{label} as read", interactive=False, visible=False, height=220, type="pil")

    def show(path: str | None):
        if not path:
            return gr.update(value=None, visible=False)
        try:
            return gr.update(value=load_image(path, name), visible=True)
        except ValueError as err:  # a user error: one log line, no traceback
            log.info("%s upload: %s", name, _message(err).splitlines()[0][:300])
            raise gr.Error(page_text(_message(err)), print_exception=False) from None

    # no status tracker: a refused upload's toast says why, and an empty red "Error" pill stayed on the box after it
    # faded (issue 29)
    # Decoding a preview is bounded memory (`load_image` shrinks first) and runs two at a time across every upload
    # box of the page: eight 16-bit 39 MP previews at once took a server from 2.5 to 10 GB (issue 22 #5).
    box.upload(show, box, seen, api_visibility="private", show_progress="hidden", concurrency_id=PREVIEW_QUEUE,
               concurrency_limit=PREVIEW_CONCURRENCY)
    box.clear(lambda: gr.update(value=None, visible=False), None, seen, queue=False, api_visibility="private")
    box.studio_seen = seen  # the "as read" preview, for a page action that fills the box (it has no upload event)
    return box


def model_state_line(inputs: gr.components.Component | Sequence[gr.components.Component] | None,
                     model_state: Callable[..., str] | None) -> gr.Markdown | None:
    """A line under a tab's model choice saying what it will really run (the demo stand-in, cached real weights, a
    download to come, what is missing), shown before the first click. `model_state(*values)` takes the values of
    `inputs` (a dropdown, several, or none for a model fixed at start-up) and is asked again when one changes;
    with no inputs it is asked on every page load, so the line follows a download made since."""
    if model_state is None:
        return None
    comps = [] if inputs is None else [inputs] if isinstance(inputs, gr.components.Component) else list(inputs)
    if not comps:
        return gr.Markdown(model_state, elem_classes=["model-state"])
    line = gr.Markdown(model_state(*(c.value for c in comps)), elem_classes=["model-state"])
    for comp in comps:
        comp.change(model_state, comps, line, queue=False, api_visibility="private")
    return line
