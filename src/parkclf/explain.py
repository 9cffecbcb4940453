"""Which pixels decided: gradient x activation on the tokens entering the last block's attention (captum).

The classifier reads only the [CLS] token after the last block, so the last block is the deepest place where each
patch still has its own token and the gradient still reaches it (the same layer pytorch-grad-cam's ViT recipe
uses); the activation is the output of that block's first layer norm. One forward and one backward: about 3x a
plain forward. The ONNX engine runs the same computation as a traced graph (:mod:`parkclf.export`); both hand
their per-token relevance to :func:`heat_from_tokens`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def last_block_input(model):
    norms = [m for n, m in model.named_modules() if n.endswith(("layernorm_before", "norm1"))]
    if not norms:
        raise ValueError(f"explain() supports ViT-style models (a 'layernorm_before' per block); "
                         f"{type(model).__name__} has none.")
    return norms[-1]


def heat_from_tokens(tokens: np.ndarray, hw: tuple[int, int], patch: int) -> np.ndarray:
    """Per-token relevance (one value per token, [CLS] and any register tokens first) -> (gh, gw) map in [0, 1]:
    the patch tokens only, negative evidence dropped, scaled by the largest."""
    gh, gw = hw[0] // patch, hw[1] // patch
    grid = np.clip(np.asarray(tokens, np.float32)[-gh * gw:], 0, None).reshape(gh, gw)
    top = grid.max()
    return grid / top if top > 0 else grid


def relevance_map(model, pixel_values, real_ids: list[int] | None = None):
    """(grid of patch relevances in [0, 1], logits as a float32 CPU tensor) for the best real class of one image."""
    from captum.attr import LayerGradientXActivation

    kept = {}

    def best_logit(x):
        logits = model(pixel_values=x).logits
        kept["logits"] = logits.detach().float()
        sel = logits[:, real_ids] if real_ids is not None else logits
        return sel.gather(1, sel.argmax(1, keepdim=True)).squeeze(1)

    attr = LayerGradientXActivation(best_logit, last_block_input(model)).attribute(pixel_values)
    attr = attr[0] if isinstance(attr, (tuple, list)) else attr
    tokens = attr[0].float().sum(-1).detach().cpu().numpy()
    return heat_from_tokens(tokens, pixel_values.shape[-2:], model.config.patch_size), kept["logits"].cpu()


def overlay(image: Image.Image, heat: np.ndarray, *, box: tuple[float, float, float, float] | None = None,
            alpha: float = 0.5, max_side: int = 768) -> Image.Image:
    """The photo (shrunk for display) with the relevance map in colour on top. ``box``: the part of the photo the
    model saw (a processor's centre crop, in the photo's pixels); the map covers it, and the border the model
    never saw is darkened further and set off by a thin line."""
    from matplotlib import colormaps
    from PIL import ImageDraw

    img = image.copy()
    img.thumbnail((max_side, max_side))
    left, top, right, bottom = box or (0, 0, image.width, image.height)
    sx, sy = img.width / image.width, img.height / image.height
    left, top = round(left * sx), round(top * sy)
    right, bottom = max(round(right * sx), left + 1), max(round(bottom * sy), top + 1)
    seen = img.crop((left, top, right, bottom))
    hot = Image.fromarray((heat * 255).astype(np.uint8)).resize(seen.size, Image.BICUBIC)
    rgb = (colormaps["inferno"](np.asarray(hot) / 255.0)[..., :3] * 255).astype(np.uint8)
    if (left, top, right, bottom) == (0, 0, img.width, img.height):
        return Image.blend(seen, Image.fromarray(rgb), alpha)
    out = Image.blend(img, Image.new("RGB", img.size), 0.75)  # unseen border: a quarter of its brightness
    out.paste(Image.blend(seen, Image.fromarray(rgb), alpha), (left, top))
    ImageDraw.Draw(out).rectangle((left - 1, top - 1, right, bottom), outline=(255, 255, 255))
    return out
