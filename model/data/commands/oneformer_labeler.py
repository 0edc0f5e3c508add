"""OneFormer semantic segmentation of a batch of PIL images, for ``unigen data label-segmentation``.

One job: load transformers' ``OneFormerProcessor`` + ``OneFormerForUniversalSegmentation`` (a hub id
or a local folder, both through ``from_pretrained``) and turn RGB images into class-id maps at each
image's own size (task input "semantic"; the scores are those of ``post_process_semantic_segmentation``,
cropped to each image's unpadded region first, see ``semantic_maps``). torch and transformers are
imported here, when a labelling run starts, never when the CLI parses.
"""
from __future__ import annotations

import numpy as np

DTYPES = ("float32", "bfloat16", "float16")


class OneFormerLabeler:
    """``label(images) -> [HxW int array]``: class ids in ``0..num_labels-1`` at each image's size."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "float32"):
        import torch
        from transformers import OneFormerForUniversalSegmentation, OneFormerProcessor

        if dtype not in DTYPES:
            raise ValueError(f"--dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.processor = OneFormerProcessor.from_pretrained(model)
            net = OneFormerForUniversalSegmentation.from_pretrained(model)
        except (OSError, ValueError) as exc:
            # Hub ids need the network or a filled HF cache; the default model's processor also
            # fetches its class-info file (shi-labs/oneformer_demo), see the runbook for offline nodes.
            raise ValueError(f"--model {model!r} cannot be loaded as a OneFormer processor + model "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pass "
                             "a hub id (e.g. shi-labs/oneformer_ade20k_swin_large) reachable from this node "
                             "or a folder written by save_pretrained") from None
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model = net.to(self.device, self.dtype).eval()
        self.num_labels = int(net.config.num_labels)
        self.name = model

    def label(self, images: list) -> list[np.ndarray]:
        torch = self.torch
        inputs = self.processor(images=images, task_inputs=["semantic"] * len(images), return_tensors="pt")
        inputs = {k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs)
            maps = semantic_maps(outputs.class_queries_logits, outputs.masks_queries_logits,
                                 inputs["pixel_mask"], [(img.height, img.width) for img in images])
        return [m.to("cpu").numpy() for m in maps]


def semantic_maps(class_logits, mask_logits, pixel_mask, sizes: list[tuple[int, int]]) -> list:
    """Class-id maps (HxW int64 tensors, one per ``sizes`` entry) from OneFormer's query outputs.

    ``class_logits`` [B, Q, C+1] (last = no object), ``mask_logits`` [B, Q, h, w] at a fraction of the
    padded input, ``pixel_mask`` [B, Hp, Wp] (1 on the resized image, 0 on the bottom/right padding a
    mixed-size batch adds). transformers' ``post_process_semantic_segmentation`` resizes the whole padded
    canvas to the target size, which stretches labels off their pixels in every image smaller than the
    batch's largest; here, as in Mask2Former's reference, the scores are upsampled to the padded input,
    cropped to the image's own region, then resized to its original size. Scores are float32: bf16
    ties would flip ids.
    """
    import torch
    import torch.nn.functional as Fn

    probs = class_logits.float().softmax(dim=-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", probs, mask_logits.float().sigmoid())
    padded = tuple(pixel_mask.shape[-2:])
    out = []
    for i, size in enumerate(sizes):
        valid_h = int(pixel_mask[i].any(dim=1).sum())
        valid_w = int(pixel_mask[i].any(dim=0).sum())
        s = Fn.interpolate(scores[i:i + 1], size=padded, mode="bilinear", align_corners=False)
        s = s[..., :valid_h, :valid_w]
        s = Fn.interpolate(s, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(s[0].argmax(dim=0))
    return out
