"""Text-to-image: caption -> ``image_gen`` target (img2dataset WebDataset shards, or any table with an
image and a caption). The prompt is the caption itself unless ``options.templates`` wraps it
(e.g. ``["Generate an image: {caption}"]``)."""
from __future__ import annotations

from unigen.model.data import fields as F
from unigen.model.data.tasks.base import TaskAdapter, assistant, image_gen, text, user


class TextToImage(TaskAdapter):
    task = "t2i"
    default_fields = {"image": "jpg;jpeg;png;webp;image", "caption": "txt;caption;json.caption;text"}
    templates = ("{caption}",)

    def convert(self, record, ctx):
        caption = F.as_text(F.lookup(record, self.fields["caption"]), "caption")
        target, _ = self.fit(self.image(record, "image", ctx))
        return [user(text(self.instruction(ctx, caption=caption))), assistant(image_gen(target))]
