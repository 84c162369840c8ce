import gradio as gr
import pytest

from studio.ui.common import user_errors


def test_value_errors_become_gr_errors_with_the_same_text():
    @user_errors
    def handler(x):
        raise ValueError(f"`x` must be positive, got {x}")

    with pytest.raises(gr.Error, match="`x` must be positive, got -1"):
        handler(-1)


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
