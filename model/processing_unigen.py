"""The transformers processor class an export's ``processor/`` folder names for ``AutoProcessor``.

This file is copied verbatim into every export's ``processor/`` folder (``auto_map`` in its
processor_config.json), so it imports transformers only: ``AutoProcessor.from_pretrained(export /
"processor", trust_remote_code=True)`` works without unigen installed, and without torchvision, which
transformers' own ``Qwen2_5_VLProcessor`` needs for its video processor (without ``trust_remote_code`` the
same folder loads as ``Qwen2_5_VLProcessor`` where torchvision is installed). Its ``chat_template`` is
unigen's: content items ``text``, ``image`` and ``image_gen`` render as unigen's processor renders them.
"""
from transformers.processing_utils import ProcessorMixin


class UniGenQwenProcessor(ProcessorMixin):
    """Qwen2.5-VL's image processor and tokenizer with unigen's chat template (no video processor)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
