"""How well the tiny autoencoder keeps what the evaluation reads: the shapes detector on reconstructions of
held-out scenes (the build's acceptance figure, >= 0.95), PSNR, and the pose and grounding decoders on
reconstructions of held-out skeleton and box targets (what the generator can at best score there)."""
from __future__ import annotations

import numpy as np

HELDOUT_STREAM = 7_000_002


def heldout_scene_pictures(count: int, size: int = 64, seed: int = 0):
    """(scenes, uint8 (N, 3, size, size)): scenes drawn at 80 px and resized, as the t2i records are read."""
    import torch
    from PIL import Image

    from unigen.model.data.synth.scenes import random_scene, render

    scenes, pictures = [], []
    for i in range(count):
        rng = np.random.default_rng([HELDOUT_STREAM, seed, i])
        scene = random_scene(rng, 80, 80, 1, 4)
        image = Image.fromarray(render(scene)["rgb"]).resize((size, size), Image.BICUBIC)
        scenes.append(scene)
        pictures.append(torch.from_numpy(np.asarray(image, np.uint8).copy()).permute(2, 0, 1))
    return scenes, torch.stack(pictures)


def scene_read_right(reading, scene) -> bool:
    """The detector found the wall and exactly the scene's (kind, colour) pairs."""
    found = sorted((o.kind, o.colour) for o in reading.objects)
    return reading.background == scene.background and found == sorted((s.kind, s.colour) for s in scene.shapes)


def reconstruction_report(vae, count: int = 300) -> dict:
    from unigen.model.evaluation.detect import read_image
    from unigen.model.tinyworld.vae import reconstruct

    scenes, pictures = heldout_scene_pictures(count)
    rebuilt = np.concatenate([reconstruct(vae, pictures[k:k + 50]) for k in range(0, count, 50)])
    original = pictures.permute(0, 2, 3, 1).numpy().astype(np.float64)
    mse = ((rebuilt.astype(np.float64) - original) ** 2).mean(axis=(1, 2, 3))
    return {"detector_on_reconstructions": float(np.mean([scene_read_right(read_image(r), s)
                                                            for r, s in zip(rebuilt, scenes)])),
            "detector_on_originals": float(np.mean([scene_read_right(read_image(p), s)
                                                    for p, s in zip(original.astype(np.uint8), scenes)])),
            "psnr_db": float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-9)))),
            "pictures": count, **thin_line_report(vae)}


def thin_line_report(vae, count: int = 48) -> dict:
    """PCK of skeletons and acc@0.5 of boxes read from reconstructions of their held-out targets."""
    import torch

    from unigen.model.evaluation import cases, decode, metrics
    from unigen.model.tinyworld.vae import reconstruct

    def rebuilt(image):
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), np.uint8).copy()).permute(2, 0, 1)[None]
        return reconstruct(vae, pixels)[0]

    pck, boxes = metrics.PCK(), metrics.GroundingAccuracy()
    for case in cases.task_cases("pose", count, 64):
        pck.update(decode.decode_pose(rebuilt(case.targets[0])), case.truth)
    for case in cases.task_cases("grounding", count, 64):
        boxes.update(decode.decode_box(rebuilt(case.targets[0])), decode.decode_box(case.targets[0]))
    return {"pose_pck_on_reconstructions": pck.compute()["pck"],
            "grounding_acc_on_reconstructions": boxes.compute()["acc@0.5"]}
