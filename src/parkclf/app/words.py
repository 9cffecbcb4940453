"""The page's words for a prediction: class names as people write them, percentages, the verdict sentence and what
the Label widget shows. Every tab (ui, teach, many) and the gallery use them; they know nothing of Gradio."""

from __future__ import annotations

from ..classifier import Prediction

NONE_OF_THESE = "None of these"


def pretty(label: str) -> str:
    """Folder names as people write them on the page ("grand_canyon" -> "Grand Canyon"); the API keeps the raw label."""
    return label.replace("_", " ").replace("-", " ").title()


def percent(p: float) -> str:
    return f"{p:.0%}" if p >= 0.005 else "under 1%"


UNSURE_BELOW = 0.5  # answered below this: the verdict calls itself a guess


def verdict(pred: Prediction, labels: list[str]) -> str:
    names = [pretty(n) for n in labels]
    if pred.abstained:
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        return (f"**This doesn't look like {listed}.** The closest guess is {pretty(pred.label)} "
                f"({percent(pred.confidences[pred.label])}), but it is unsure.")
    p = pred.confidences[pred.label]
    if p < UNSURE_BELOW:  # answered, but the photo is nearly as likely to be something else: say so
        return f"**{pretty(pred.label)}**, probably ({percent(p)}: a low-confidence guess)"
    return f"**{pretty(pred.label)}** ({percent(p)} confident)"


def label_value(pred: Prediction, has_out_of_scope: bool) -> dict:
    """What the Label widget (:class:`parkclf.app.answer.Answer`) shows, in Gradio's LabelData form: {"label": the
    headline, "confidences": [{"label", "confidence"}, ...] largest first}.

    The bars add up: where the model has an out-of-scope score (an out-of-scope class), "None of these" carries the
    rest of 1, so a low-confidence answer (Yosemite 27%) shows where the other 68% went. The headline is the
    verdict's, not the largest bar: the class when the model answers, "None of these" when it abstains."""
    bars = {pretty(k): v for k, v in pred.confidences.items()}
    if has_out_of_scope:
        bars[NONE_OF_THESE] = max(0.0, 1.0 - sum(pred.confidences.values()))
    ranked = sorted(bars.items(), key=lambda kv: kv[1], reverse=True)
    return {"label": NONE_OF_THESE if pred.abstained else pretty(pred.label),
            "confidences": [{"label": k, "confidence": float(v)} for k, v in ranked]}
