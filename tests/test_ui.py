"""ui.py in-process: the wording of the verdict, and the page builds from any Classifier."""


from parkclf.app.feedback import FeedbackStore
from parkclf.app.ui import NONE_OF_THESE, AppOptions, build_demo, label_value, verdict
from parkclf.classifier import Classifier, Prediction


def test_verdict_says_none_of_them_when_abstaining():
    p = Prediction(label="yosemite", confidences={"sequoia": 0.2, "yellowstone": 0.3, "yosemite": 0.5}, abstained=True,
                   score=0.1)
    text = verdict(p, ["sequoia", "yellowstone", "yosemite"])
    assert "doesn't look like Sequoia, Yellowstone or Yosemite" in text and "guess is Yosemite" in text
    p.abstained = False
    assert verdict(p, ["sequoia", "yellowstone", "yosemite"]).startswith("**Yosemite**")
    assert "confident)" in verdict(p, ["sequoia", "yellowstone", "yosemite"])
    p.confidences["yosemite"] = 0.3  # answered, but a low score: the verdict says it is a guess
    text = verdict(p, ["sequoia", "yellowstone", "yosemite"])
    assert text.startswith("**Yosemite**, probably") and "30%: a low-confidence guess" in text


def bars(shown: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in shown["confidences"]}


def test_label_headline_agrees_with_the_verdict():
    # p(other) = 0.6 is larger than the best park's 0.3, but the photo is answered: the headline must be the park
    p = Prediction(label="yosemite", confidences={"sequoia": 0.05, "yellowstone": 0.05, "yosemite": 0.3},
                   abstained=False, score=0.3)
    assert label_value(p, has_out_of_scope=True)["label"] == "Yosemite"
    p.abstained = True
    assert label_value(p, has_out_of_scope=True)["label"] == NONE_OF_THESE


def test_the_bars_add_up_with_a_none_of_these_bar_whenever_the_model_has_an_out_of_scope_score():
    """The One photo tab on a low-confidence answer (issue 32): Yosemite 27%, Yellowstone 5%, Sequoia 0% showed no
    sign of where the other 68% went."""
    p = Prediction(label="yosemite", confidences={"sequoia": 0.002, "yellowstone": 0.05, "yosemite": 0.27},
                   abstained=False, score=0.27)
    shown = label_value(p, has_out_of_scope=True)
    assert abs(sum(bars(shown).values()) - 1) < 1e-9 and abs(bars(shown)[NONE_OF_THESE] - 0.678) < 1e-9
    assert [c["label"] for c in shown["confidences"]] == [NONE_OF_THESE, "Yosemite", "Yellowstone", "Sequoia"]
    assert shown["label"] == "Yosemite"  # the largest bar is not the headline: the model answered Yosemite
    # a model with no out-of-scope class (a taught one): its classes' probabilities already add up to 1
    p = Prediction(label="sea", confidences={"sea": 0.7, "forest": 0.3}, abstained=False, score=0.7)
    assert bars(label_value(p, has_out_of_scope=False)) == {"Sea": 0.7, "Forest": 0.3}
    # what Gradio's Label widget is sent: the headline as given, the bars as given
    from parkclf.app.answer import Answer

    sent = Answer().postprocess(shown)
    assert sent.label == "Yosemite" and [c.label for c in sent.confidences][0] == NONE_OF_THESE
    assert Answer().postprocess({"a": 0.2, "b": 0.8}).label == "b"  # a plain dict as gr.Label takes it


def test_demo_builds_with_named_endpoints(tiny_vit, tmp_path):
    classifier = Classifier.from_pretrained(str(tiny_vit))
    demo = build_demo(classifier, AppOptions(feedback=FeedbackStore(tmp_path / "fb", classifier.labels)))
    public = {d.api_name for d in demo.fns.values() if d.api_visibility == "public"}
    assert public == {"predict", "predict_batch", "explain"}  # the page's own events stay off the API page


def test_the_gallery_comes_with_the_checkpoint(tmp_path):
    """The project's park photos are the embedded model's gallery; a taught scene classifier served with MODEL_ID
    shows its own examples/ or none, never photos of parks it does not know."""
    from parkclf.app.serve import ROOT, examples_of, load_examples
    from parkclf.classifier import EMBEDDED_MODEL

    assert examples_of(EMBEDDED_MODEL) == ROOT / "examples" and load_examples(examples_of(EMBEDDED_MODEL))
    taught = tmp_path / "scenes"
    taught.mkdir()
    assert examples_of(taught) is None
    (taught / "examples").mkdir()
    (taught / "examples" / "credits.tsv").write_text("file\tpark\tcredit\nsea.jpg\tsea\tme\n")
    assert examples_of(taught) == taught / "examples"
    assert [e.credit for e in load_examples(taught / "examples")] == ["Sea — me"]
