"""Which pixels decided: gradient x activation on the last transformer block's input tokens (captum).

The classifier reads only the [CLS] token after the last block, so the last block's *input* is the
deepest place where each patch still has its own token and the gradient still reaches it (the same
layer pytorch-grad-cam's ViT recipe uses). One forward and one backward: about 3x a plain forward.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def last_block_input(model) -> torch.nn.Module:
    norms = [m for n, m in model.named_modules() if n.endswith(("layernorm_before", "norm1"))]
    if not norms:
        raise ValueError(f"explain() supports ViT-style models (a 'layernorm_before' per block); "
                         f"{type(model).__name__} has none.")
    return norms[-1]


def relevance_map(model, pixel_values: torch.Tensor, real_ids: list[int] | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """(grid of patch relevances in [0, 1], logits) for the best real class of one image."""
    from captum.attr import LayerGradientXActivation

    kept: dict[str, torch.Tensor] = {}

    def best_logit(x):
        logits = model(pixel_values=x).logits
        kept["logits"] = logits.detach().float()
        sel = logits[:, real_ids] if real_ids is not None else logits
        return sel.gather(1, sel.argmax(1, keepdim=True)).squeeze(1)

    attr = LayerGradientXActivation(best_logit, last_block_input(model)).attribute(pixel_values)
    attr = attr[0] if isinstance(attr, (tuple, list)) else attr
    patch = model.config.patch_size
    gh, gw = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    tokens = attr[0, -gh * gw:, :].float().sum(-1).clamp(min=0).reshape(gh, gw)
    heat = tokens / tokens.max() if tokens.max() > 0 else tokens
    return heat.detach().cpu().numpy(), kept["logits"]


def overlay(image: Image.Image, heat: np.ndarray, *, box: tuple[float, float, float, float] | None = None,
            alpha: float = 0.5, max_side: int = 768) -> Image.Image:
    """The photo (shrunk for display) with the relevance map in colour on top. ``box``: the part of the photo the
    model saw (a processor's centre crop, in the photo's pixels); the map covers it, and the border the model
    never saw is darkened further and set off by a thin line."""
    from matplotlib import colormaps
    from PIL import ImageDraw

    img = image.copy()
    img.thumbnail((max_side, max_side))
    l, t, r, b = box or (0, 0, image.width, image.height)
    sx, sy = img.width / image.width, img.height / image.height
    l, t = round(l * sx), round(t * sy)
    r, b = max(round(r * sx), l + 1), max(round(b * sy), t + 1)
    seen = img.crop((l, t, r, b))
    hot = Image.fromarray((heat * 255).astype(np.uint8)).resize(seen.size, Image.BICUBIC)
    rgb = (colormaps["inferno"](np.asarray(hot) / 255.0)[..., :3] * 255).astype(np.uint8)
    if (l, t, r, b) == (0, 0, img.width, img.height):
        return Image.blend(seen, Image.fromarray(rgb), alpha)
    out = Image.blend(img, Image.new("RGB", img.size), 0.75)  # unseen border: a quarter of its brightness
    out.paste(Image.blend(seen, Image.fromarray(rgb), alpha), (l, t))
    ImageDraw.Draw(out).rectangle((l - 1, t - 1, r, b), outline=(255, 255, 255))
    return out
