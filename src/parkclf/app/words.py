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


def label_value(pred: Prediction, has_out_of_scope: bool) -> dict[str, float]:
    """What the Label widget shows. Its headline is its largest entry, so it must agree with the verdict: the rest
    of the probability shows as "None of these" only when the app abstains; an answer's headline is its park."""
    shown = {pretty(k): v for k, v in pred.confidences.items()}
    if has_out_of_scope and pred.abstained:
        shown[NONE_OF_THESE] = max(0.0, 1.0 - sum(pred.confidences.values()))
    return shown
