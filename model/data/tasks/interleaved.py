"""Interleaved text/image documents (ti2ti, ti2ti2ti): images after the first are generation targets.

Two layouts (map the names in the recipe if yours differ):
- MMC4: ``text_list`` (sentences) + ``image_info`` ([{"image_name", "matched_text_index"}]): each image
  is placed before the sentence it is matched to. In a WebDataset sample ``image_name`` may name a
  member of the same sample (``0.jpg`` for ``<key>.0.jpg``); otherwise it is a path under the image root.
- OBELICS: ``texts`` and ``images``, two aligned lists where exactly one of each pair is null.
Conversation: the text and the first image go to a user message; every later image becomes an
``image_gen`` target in an assistant message, and the text between targets starts the next user
message. Text after the last image is dropped (nothing is generated from it). Documents with fewer
than two images have no target and count as bad records; ``max_images`` truncates long ones.

Each target except the last is followed, in the same message, by the same image as an ``image`` input
item: the backbone is causal, so a later slot's queries see an earlier image only as an input placed
after that slot. ``UniGenPipeline`` fills slots this way at inference (a filled slot's image is fed
back right after it) and the edit adapter chains turns alike (turn k's target is turn k+1's input
image), so training matches inference. The copies are input images: they lengthen the sequence.
Example: user [text, image 1, text], assistant [image_gen 2, image 2], user [text], assistant
[image_gen 3].
"""
from __future__ import annotations

from unigen.model.data import fields as F
from unigen.model.data.errors import BadRecord
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, require, text, user


class Interleaved(TaskAdapter):
    task = "interleaved"
    default_fields = {"texts": "text_list;texts;json.text_list;json.texts",
                      "images": "image_info;images;json.image_info;json.images"}
    default_options = {"max_images": 4}

    def convert(self, record, ctx):
        sequence = self._sequence(record)
        messages, pending, n_images = [], [], 0
        for kind, value in sequence:
            if kind == "text":
                pending.append(text(value))
                continue
            if n_images == int(self.options["max_images"]):
                break
            img, _ = self.fit(F.decode_image(self._image_value(record, value), f"image {n_images}", ctx.resolve))
            if n_images == 0:
                pending.append(image(img))
            else:
                if pending:
                    messages.append(user(*pending))
                    pending = []
                if not (messages and messages[-1]["role"] == "assistant"):
                    messages.append(assistant())
                messages[-1]["content"] += [image_gen(img), image(img)]  # fed back: later targets see it
            n_images += 1
        require(n_images >= 2, f"interleaved document has {n_images} image(s); at least 2 are needed "
                "(the first is context, the rest are targets)")
        messages[-1]["content"].pop()  # the last target's feedback: nothing follows it to see it
        return messages

    def _sequence(self, record):
        texts = F.lookup(record, self.fields["texts"])
        images = F.lookup(record, self.fields["images"])
        texts = texts.tolist() if hasattr(texts, "tolist") else texts
        images = images.tolist() if hasattr(images, "tolist") else images
        require(isinstance(texts, list) and isinstance(images, list), "texts and images must be lists")
        if images and all(isinstance(i, dict) and "matched_text_index" in i for i in images):
            before: dict = {}
            for info in images:
                before.setdefault(int(info["matched_text_index"]), []).append(info.get("image_name"))
            seq = []
            for k, sentence in enumerate(texts):
                seq.extend(("image", name) for name in before.pop(k, []))
                if sentence:
                    seq.append(("text", F.as_text(sentence, f"text {k}")))
            for k in sorted(before):  # matched past the last sentence
                seq.extend(("image", name) for name in before[k])
            return seq
        require(len(texts) == len(images), f"texts ({len(texts)}) and images ({len(images)}) differ in length")
        seq = []
        for k, (t, i) in enumerate(zip(texts, images)):
            if i is not None:
                seq.append(("image", i))
            elif t:
                seq.append(("text", F.as_text(t, f"text {k}")))
        return seq

    @staticmethod
    def _image_value(record, ref):
        if isinstance(ref, str) and ref.lower() in record:  # a member of the same WebDataset sample
            return record[ref.lower()]
        if ref is None:
            raise BadRecord("image entry without image_name")
        return ref
