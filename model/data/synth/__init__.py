"""The synthetic shapes corpus: procedural scenes with exact ground truth, written in the published
on-disk formats (``write_corpus``) or served on the fly (the ``synthetic`` source format)."""
