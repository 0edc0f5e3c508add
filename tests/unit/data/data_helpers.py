"""Helpers shared by the data tests: sample identity, a tiny collate, and opening one source."""
import hashlib

import numpy as np

from unigen.model.data.spec import DataSpec, SourceSpec


def identity(conversation) -> str:
    """A digest of everything in a conversation (texts and image pixels): equal iff same sample."""
    h = hashlib.sha256()
    for msg in conversation:
        h.update(msg["role"].encode())
        for item in msg["content"]:
            h.update(item["type"].encode())
            if item["type"] == "text":
                h.update(item["text"].encode())
            elif item.get("image") is not None:
                h.update(np.asarray(item["image"]).tobytes())
    return h.hexdigest()[:16]


def id_collate(conversations):
    return [identity(c) for c in conversations]


def spec_for(sources, **kw) -> DataSpec:
    kw.setdefault("image_size", 64)
    kw.setdefault("num_workers", 0)
    return DataSpec(sources=sources, **kw)


def by_name(manifest, name) -> dict:
    return next(s for s in manifest["sources"] if s["name"] == name)


def open_one(source: dict, image_size: int = 64):
    from unigen.model.data.sources import open_source
    return open_source(SourceSpec(**source), image_size)


def convert(src, index: int, seed: int = 0):
    """(conversation, events) for record ``index`` of an open source, through the real worker code."""
    from unigen.model.data.mixture import Mixture, WorkItem
    from unigen.model.data.worker import SampleLoader
    mix = Mixture([src.name], [1.0], [len(src)], seed)
    return SampleLoader([src], mix, seed, src.adapter.image_size).load(WorkItem(0, 0, 0, index))


def ok(src, index: int, seed: int = 0):
    """The conversation of record ``index``, asserting the adapter served it (not bad)."""
    conv, events = convert(src, index, seed)
    assert events[-1][0] == "ok", events
    return conv


def items(conv, kind: str) -> list:
    """Every content item of type ``kind`` in a conversation, in order."""
    return [it for m in conv for it in m["content"] if it["type"] == kind]
