"""COCO-format annotation JSON: person keypoints (pose) and RefCOCO referring expressions (grounding).

The JSON is parsed once and turned into a compact per-record list (cached), one record per image with
labelled people (pose) or one per referring expression (grounding: ``options.refs`` points at the refs
file: JSON, or the original ``refs(unc).p`` pickle only with ``options.allow_pickle: true``, because
unpickling runs code from the file). Images resolve against ``options.image_root`` (default: the JSON's
folder) by ``file_name``.
"""
from __future__ import annotations

import json
import pickle

from unigen.model.data import fs
from unigen.model.data.errors import DataError
from unigen.model.data.readers.base import Reader


def pose_records(coco: dict) -> list:
    images = {im["id"]: im for im in coco.get("images", [])}
    people: dict = {}
    for ann in coco.get("annotations", []):
        if ann.get("num_keypoints", 0) > 0 and not ann.get("iscrowd", 0):
            people.setdefault(ann["image_id"], []).append(
                {"keypoints": ann["keypoints"], "bbox": ann.get("bbox")})
    out = []
    for image_id in sorted(people):
        im = images.get(image_id)
        if im is None:
            continue  # annotation for an image the file does not list: nothing to load
        out.append({"image_id": image_id, "file_name": im["file_name"], "width": im.get("width"),
                    "height": im.get("height"), "persons": people[image_id]})
    return out


def grounding_records(coco: dict, refs: list, split: str | None) -> list:
    images = {im["id"]: im for im in coco.get("images", [])}
    anns = {a["id"]: a for a in coco.get("annotations", [])}
    out = []
    for ref in refs:
        if split and ref.get("split") != split:
            continue
        ann = anns.get(ref.get("ann_id"))
        im = images.get(ref.get("image_id"))
        if ann is None or im is None:
            continue
        sentences = [s.get("raw") or s.get("sent") for s in ref.get("sentences", []) if isinstance(s, dict)]
        out.append({"ref_id": ref.get("ref_id"), "file_name": im["file_name"], "width": im.get("width"),
                    "height": im.get("height"), "bbox": ann["bbox"], "sentences": sentences})
    return out


PICKLE_SUFFIXES = (".p", ".pkl", ".pickle")


def is_pickle_name(url: str | None) -> bool:
    return bool(url) and url.lower().endswith(PICKLE_SUFFIXES)


class CocoReader(Reader):
    extensions = (".json",)

    def _build(self) -> None:
        if len(self.files) != 1:
            raise DataError(f"source {self.name}: format coco takes one annotation JSON, "
                            f"{self.source.uri!r} matches {len(self.files)} files")
        url = self.files[0]
        task = self.source.task
        opts = self.source.options
        if task not in ("pose", "grounding"):
            raise DataError(f"source {self.name}: format coco serves tasks pose and grounding, not {task}")
        refs_url = opts.get("refs")
        if task == "grounding" and not refs_url:
            raise DataError(f"source {self.name}: grounding from COCO needs options.refs (the RefCOCO "
                            "refs file, JSON or refs(unc).p)")
        if task == "grounding" and is_pickle_name(refs_url):
            self._refuse_pickle(refs_url)  # on every open: a cached index must not bypass the opt-in
        # allow_pickle is part of the key too: an index built from a pickle (even one sniffed by content)
        # is never served to a source that did not opt in; that source rebuilds and meets the check.
        extra = f"{task}|{refs_url}|{opts.get('split')}|pickle={opts.get('allow_pickle') is True}"
        self._records = self.index("coco", url, lambda: self._parse(url, refs_url), extra=extra)
        if not self._records:
            raise DataError(f"source {self.name}: {url} yields no {task} records")

    def _parse(self, url: str, refs_url: str | None) -> list:
        try:
            coco = json.loads(fs.read_bytes(url, storage_options=self.storage_options))
        except ValueError as exc:
            raise DataError(f"source {self.name}: {url} is not valid JSON ({exc})") from exc
        if self.source.task == "pose":
            return pose_records(coco)
        raw = fs.read_bytes(refs_url, storage_options=self.storage_options)
        if is_pickle_name(refs_url) or raw[:1] == b"\x80":  # by name, or by content (pickle protocol >= 2)
            self._refuse_pickle(refs_url)
            refs = pickle.loads(raw)  # noqa: S301 - explicit opt-in checked above
        else:
            try:
                refs = json.loads(raw)
            except ValueError as exc:
                raise DataError(f"source {self.name}: {refs_url} is not valid JSON ({exc}); a refs pickle "
                                "needs the .p/.pkl/.pickle name and options.allow_pickle: true") from exc
        return grounding_records(coco, refs, self.source.options.get("split"))

    def _refuse_pickle(self, refs_url: str) -> None:
        """Unless options.allow_pickle is true: the one error for a pickled refs file, whether or not the
        index is already cached (checked when the source opens and again when the index is built)."""
        if self.source.options.get("allow_pickle") is not True:
            raise DataError(f"source {self.name}: {refs_url} is a pickle; unpickling runs code from "
                            "the file. Set options.allow_pickle: true if you trust it, or use a JSON "
                            "re-export of the refs")

    def __len__(self) -> int:
        return len(self._records)

    def key(self, i: int) -> str:
        rec = self._records[i]
        return str(rec.get("ref_id") if "ref_id" in rec else rec.get("image_id"))

    def read(self, i: int) -> dict:
        record = dict(self._records[i])
        record["image"] = record["file_name"]
        record["__key__"] = self.key(i)
        record["__resolve__"] = self.resolver(self.files[0])
        return record
