"""The prediction widget: Gradio's Label with the headline the page decides, not its largest bar."""

from __future__ import annotations

import gradio as gr
from gradio.components.label import LabelData


class Answer(gr.Label):
    """gr.Label that also takes its value in LabelData form ({"label": headline, "confidences": [...]}, as
    :func:`parkclf.app.words.label_value` writes it) and shows it as given: Label makes its largest entry the
    headline, which says "None of these" over an answered photo whose best class holds less than the rest."""

    is_template = True  # drawn by the Label component of the page (Gradio's way for a subclass, as gr.Text)

    def postprocess(self, value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), list):
            return LabelData(**value)
        return super().postprocess(value)
