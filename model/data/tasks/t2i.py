"""Text-to-image: caption -> ``image_gen`` target (img2dataset WebDataset shards, or any table with an
image and a caption). The prompt is the caption itself unless ``options.templates`` wraps it
(e.g. ``["Generate an image: {caption}"]``). ``options.reasoning`` adds a GoT reasoning chain (the
``reasoning`` field, ``got`` by default) before the image: see ``tasks.reasoning``."""
from __future__ import annotations

from unigen.model.data import fields as F
from unigen.model.data.tasks import reasoning as R
from unigen.model.data.tasks.base import TaskAdapter, assistant, image_gen, text, user


class TextToImage(TaskAdapter):
    task = "t2i"
    default_fields = {"image": "jpg;jpeg;png;webp;image", "caption": "txt;caption;json.caption;text;prompt",
                      **R.FIELDS}
    default_options = dict(R.OPTION)
    templates = ("{caption}",)

    def validate_options(self, where):
        self.reasoning = R.mode(self.options, where)

    def convert(self, record, ctx):
        caption = F.as_text(F.lookup(record, self.fields["caption"]), "caption")
        chain = R.chain(record, self.fields) if self.reasoning else None
        target, _ = self.fit(self.image(record, "image", ctx))
        prompt = R.user_text(self.instruction(ctx, caption=caption), chain, self.reasoning)
        return [user(text(prompt)), assistant(*R.answer_items(chain, self.reasoning), image_gen(target))]
