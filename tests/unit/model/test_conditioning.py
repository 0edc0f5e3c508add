"""The test that fails when conditioning breaks: a short training of the tiny-shapes model on single-object
prompts ("a red circle on a blue background"), after which the prompt must reach the picture, measured two
ways that a model ignoring its prompt cannot pass:

- the flow loss on held-out records is far lower with their own captions than with another record's
  (``prompt_use`` = 1 - matched / swapped; 0 for a model that ignores the prompt, and ~0 before training);
- the pictures drawn for held-out prompts have the wall and the shape colour they ask for, read by the
  shapes detector (chance: 0.25 and 0.125).

Measured with this seed on 1 thread (800 steps of 32): prompt_use 0.87, wall 1.00, colour 0.42 with the first
4-layer tiny-shapes DiT; 0.63, 1.00, 0.27 once it read source latents (text-to-image gives it zeros there, so
only the float summation order changed); 0.535, 0.98, 0.48 with the 8-layer DiT shipped since 2026-12-05;
0.873, 0.98, 0.54 once it trained at shifted flow times (timestep_shift 3); the same code gives 0.867, 0.88,
0.40 on an AMD EPYC with AVX2 kernels instead of AVX-512 (CPU capability as torch reports it): float summation
order alone moves these figures by about a tenth, so the bars leave that much room.
Colour emerges after ~600 steps, the wall after ~100 (runbooks/evaluation.md). The assertions sit below those
figures and far above what a model that ignores its prompt gets (prompt_use ~0, colour at chance).
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STEPS, BATCH, LR, RECORDS = 800, 32, 1e-3, 2048
HELDOUT = 32     # held-out records of the caption-swap loss
PROMPTS = 48     # held-out prompts drawn and read back


def _records(seed: int, count: int, size: int):
    """(caption, pixels) of single-object scenes with a named colour and wall, as the t2i suite asks."""
    from PIL import Image

    from unigen.model.data.synth.prompts import sample
    from unigen.model.data.synth.scenes import render
    from unigen.model.images import to_pixels

    out = []
    for i in range(count):
        request = sample("colors", np.random.default_rng([seed, i]), size, size)
        out.append((request.prompt, to_pixels(Image.fromarray(render(request.scene)["rgb"]), size)))
    return out


def _batch(processor, captions, latents):
    from unigen.model.chat_template import one_turn

    conversations = [one_turn(c) for c in captions]
    for conversation, latent in zip(conversations, latents):
        conversation[-1]["content"][0]["latents"] = latent
    return processor(conversations)


def _prompt_use(model, processor, heldout, latents) -> float:
    """1 - loss(own captions) / loss(captions shifted by one record), the same noise and flow times."""
    import torch

    model.eval()
    losses = []
    for shift in (0, 1):
        captions = [heldout[(i + shift) % len(heldout)][0] for i in range(len(heldout))]
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            losses.append(float(model(**_batch(processor, captions, latents)).loss))
    return 1.0 - losses[0] / losses[1]


def _attribute_accuracy(pipe) -> dict[str, float]:
    from unigen.model.evaluation import cases, scoring
    from unigen.model.evaluation.detect import read_image

    heldout = cases.t2i_cases(PROMPTS, pipe.model.config.image_size, seed=0, family="colors")
    pictures, _ = pipe.generate_conversation([c.request for c in heldout], seed=0, num_inference_steps=8,
                                             guidance_scale=4.5)
    rows = [scoring.attributes(c.truth, read_image(p)) for c, p in zip(heldout, pictures)]
    return {key: float(np.mean([r[key] for r in rows])) for key in ("background", "colour")}


@pytest.fixture()
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures in the docstring were measured so; fewer threads, same results here
    yield
    torch.set_num_threads(before)


def test_a_short_training_makes_the_pictures_follow_their_prompts(one_thread):
    import torch

    from unigen.model import UniGenPipeline
    from unigen.orchestrator.config.recipe import TrainSection
    from unigen.orchestrator.runtime.build import build_optimizer

    torch.manual_seed(0)
    pipe = UniGenPipeline.from_preset("tiny-shapes")
    model, processor, size = pipe.model, pipe.processor, pipe.model.config.image_size
    train, heldout = _records(0, RECORDS, size), _records(7, HELDOUT, size)
    with torch.no_grad():
        latents = torch.cat([model.encode_latents(torch.stack([p for _, p in train[k:k + 256]]))
                             for k in range(0, RECORDS, 256)])
        heldout_latents = model.encode_latents(torch.stack([p for _, p in heldout]))

    untrained = _prompt_use(model, processor, heldout, heldout_latents)
    assert abs(untrained) < 0.05, f"before training the prompt cannot matter yet: prompt_use {untrained:.3f}"

    optimizer = build_optimizer(model, TrainSection(max_steps=STEPS, global_batch_size=BATCH, micro_batch_size=BATCH,
                                                    lr=LR, weight_decay=0.0))
    order = np.random.default_rng(0)
    for _ in range(STEPS):
        model.train()
        idx = order.integers(0, RECORDS, BATCH)
        model(**_batch(processor, [train[i][0] for i in idx], latents[idx])).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    use = _prompt_use(model, processor, heldout, heldout_latents)
    model.eval()
    accuracy = _attribute_accuracy(pipe)
    figures = f"prompt_use {use:.3f}, wall {accuracy['background']:.2f}, colour {accuracy['colour']:.2f}"
    print(f"conditioning after {STEPS} steps: {figures}")  # in the log with -s, to compare runs
    # Ignoring the prompt gives ~0 (0.0004 measured on the random-backbone smoke model); working runs 0.53-0.87.
    assert use > 0.3, f"held-out loss barely depends on the caption: {figures}"
    # Working runs measured 0.88-1.00; a model that ignores the prompt draws the asked wall at chance (0.25).
    assert accuracy["background"] >= 0.75, f"the wall asked for is not drawn (chance 0.25): {figures}"
    # Broken conditioning draws the asked colour at chance (0.125; 0.12 measured untrained). Working runs
    # measured 0.27, 0.42, 0.48 and 0.54 (see the module docstring), so the bar sits between chance and the lowest.
    assert accuracy["colour"] >= 0.22, f"the shape colour asked for is not drawn (chance 0.125): {figures}"
