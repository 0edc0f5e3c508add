"""The tiny world: a pretrained backbone and autoencoder for the shapes corpus, built on a CPU in minutes.

The real recipes start from a pretrained Qwen2.5-VL and a pretrained DC-AE and keep both frozen; a tiny
model with RANDOM frozen parts cannot learn to follow a prompt (its states at the query positions say
almost nothing about the prompt, and its autoencoder decodes any latent to noise). So the ``tiny-shapes``
preset's frozen parts are pretrained too, on the world the smoke and shapes recipes train on:

- ``backbone/``: a Qwen2_5_VLForConditionalGeneration (0.9M parameters) with its tokenizer and image
  processor, pretrained to caption shapes pictures, answer short questions about them, restate requests
  and describe edit outcomes (``language``, ``backbone``);
- ``decoder/vae/``: an AutoencoderDC f4c4 trained to reconstruct the corpus's pictures (``vae``);
- ``decoder/transformer/``: the Sana transformer's seeded initialisation (the part unigen trains; shipped so
  the decoder folder has the layout of a real Sana checkpoint).

``python -m unigen.model.tinyworld --data DIR`` rebuilds them deterministically from a corpus written by
``unigen data synth`` (runbooks/tiny-world.md); they are shipped under ``model/assets/tiny-shapes/``.
"""
