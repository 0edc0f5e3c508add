"""unigen.model.data: every training task as conversations of ``image`` / ``text`` / ``image_gen``
items, read from the datasets' published formats and mixed deterministically and resumably.

Light on import (no torch): heavy modules are imported by the functions that need them.
"""
