"""The naive baseline app, as in Gradio's own guide: gr.Interface over a transformers pipeline, fp32, PIL input.

    MODEL_ID=models/parks-vit-small python benchmarks/naive_app.py

Only for benchmarks/serving.py to measure against; nothing in the product uses it.
"""

import os

import gradio as gr
from transformers import pipeline

classifier = pipeline("image-classification", model=os.environ["MODEL_ID"])


def predict(image):
    return {p["label"]: p["score"] for p in classifier(image)}


demo = gr.Interface(predict, gr.Image(type="pil"), gr.Label(num_top_classes=3), api_name="predict")

if __name__ == "__main__":
    demo.launch()
