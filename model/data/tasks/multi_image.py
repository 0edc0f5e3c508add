"""Several source images + prompt -> one target (MetaQuery-Instruct style: ``source_images``,
``prompt``, ``target_image``). Conversation: user [image 1, ..., image k, text prompt], assistant
[image_gen target]."""
from __future__ import annotations

from unigen.model.data import fields as F
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, require, text, user


class MultiImage(TaskAdapter):
    task = "multi_image"
    default_fields = {"sources": "source_images;input_images;images",
                      "prompt": "prompt;instruction;text",
                      "target": "target_image;output_image;target"}
    default_options = {"max_source_images": 4}
    templates = ("{prompt}",)

    def convert(self, record, ctx):
        sources = F.lookup(record, self.fields["sources"])
        sources = sources.tolist() if hasattr(sources, "tolist") else sources
        if isinstance(sources, (str, bytes, dict)):
            sources = [sources]
        require(isinstance(sources, list) and len(sources) > 0, "source_images must be a non-empty list")
        require(len(sources) <= int(self.options["max_source_images"]),
                f"{len(sources)} source images; max_source_images is {self.options['max_source_images']}")
        inputs = [image(self.fit(F.decode_image(v, f"source image {k}", ctx.resolve))[0])
                  for k, v in enumerate(sources)]
        prompt = F.as_text(F.lookup(record, self.fields["prompt"]), "prompt")
        target, _ = self.fit(self.image(record, "target", ctx))
        return [user(*inputs, text(self.instruction(ctx, prompt=prompt))), assistant(image_gen(target))]
