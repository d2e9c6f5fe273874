"""Widget progress bars as text lines for the text log."""

from __future__ import annotations

from typing import Any

from jupyter_persist.model.progress import progress_line
from jupyter_persist.model.widgets import WidgetModel


def model(name: str, **state: Any) -> WidgetModel:
    return WidgetModel(state={"_model_name": name, **state})


def tqdm_tree(left: str, value: float, total: float, right: str) -> dict[str, WidgetModel]:
    """What tqdm.notebook draws: HTML, FloatProgress, HTML in an HBox (figure spaces)."""
    return {
        "box": model(
            "HBoxModel",
            children=["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"],
            layout="IPY_MODEL_box-layout",
        ),
        "left": model("HTMLModel", value=left),
        "bar": model("FloatProgressModel", value=value, min=0, max=total, description=""),
        "right": model("HTMLModel", value=right),
        "box-layout": model("LayoutModel"),
    }


def test_a_finished_tqdm_bar_reads_like_tqdms_text_bar() -> None:
    models = tqdm_tree(
        "Work:\u2007100%", 20, 20, "\u200720/20\u2007[00:01&lt;00:00,\u200716.57it/s]"
    )
    assert progress_line("box", models) == "Work: 100%|██████████| 20/20 [00:01<00:00, 16.57it/s]"


def test_a_bar_under_way_has_partial_blocks_and_its_postfix() -> None:
    models = tqdm_tree(
        "\u200745%", 9, 20, "\u20079/20\u2007[00:01&lt;00:01,\u20076.50it/s,\u2007loss=0.5]"
    )
    assert progress_line("box", models) == " 45%|████▌     | 9/20 [00:01<00:01, 6.50it/s, loss=0.5]"


def test_a_lone_progress_widget_gets_its_description_and_count() -> None:
    models = {"p": model("IntProgressModel", value=3, min=0, max=4, description="Epochs")}
    assert progress_line("p", models) == "Epochs  75%|███████▌  | 3/4"
    models = {"p": model("FloatProgressModel", value=0.5, min=0, max=1.0)}
    assert progress_line("p", models) == " 50%|█████     | 0.5/1"


def test_what_is_not_a_progress_bar_has_no_line() -> None:
    models = {
        "slider": model("IntSliderModel", value=3),
        "box": model("HBoxModel", children=["IPY_MODEL_slider"]),
        "two": model("VBoxModel", children=["IPY_MODEL_p1", "IPY_MODEL_p2"]),
        "p1": model("IntProgressModel", value=1, max=2),
        "p2": model("IntProgressModel", value=1, max=2),
        "empty": model("FloatProgressModel", value=1, min=0, max=0),
    }
    assert progress_line("slider", models) is None
    assert progress_line("box", models) is None
    assert progress_line("two", models) is None  # two bars in one box: not one line
    assert progress_line("missing", models) is None
    assert progress_line("empty", models) == "  0%|          | 1/0"


def test_a_box_whose_texts_are_empty_is_drawn_as_its_bar() -> None:
    models = tqdm_tree("", 5, 10, "")
    assert progress_line("box", models) == " 50%|█████     | 5/10"
