"""Small helpers every tab uses: turning errors into messages the page shows, model status notices."""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from typing import Callable

import gradio as gr

log = logging.getLogger("studio.ui")


def _message(err: Exception) -> str:
    return str(err) or type(err).__name__


def user_errors(fn: Callable) -> Callable:
    """Wrap a handler so that bad input and failures reach the page as `gr.Error`, never a dead worker.

    ValueError (bad input) and RuntimeError (missing weights, out of memory) carry messages written for users;
    anything else is logged with its traceback and reported briefly.
    """

    def convert(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, (ValueError, RuntimeError, FileNotFoundError)):
            return gr.Error(_message(err))
        log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
        return gr.Error(f"Something went wrong ({type(err).__name__}: {_message(err)}). Details are in the server log.")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 — every failure becomes a message on the page
                raise convert(err) from err
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise convert(err) from err
    return wrapper


def notice_markdown(notice: str | None) -> str:
    return f"⚠️ {notice}" if notice else ""
