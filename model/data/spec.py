"""The ``data:`` section of a recipe, as typed models.

This module is the contract between recipes (validated by ``unigen.orchestrator`` without torch)
and the data package. It imports only pydantic, so ``unigen validate`` stays fast.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal[
    "t2i", "edit", "interleaved", "multi_image",
    "depth", "normal", "pose", "segmentation", "grounding",
]
Format = Literal["webdataset", "parquet", "jsonl", "coco", "synthetic", "nyu_mat", "nyu_h5"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSpec(_Strict):
    """One dataset read by one task adapter."""

    uri: str = Field(description="fsspec URL or path of the source: a shard pattern with brace ranges "
                     "(s3://bucket/laion/{00000..00099}.tar), a Parquet file or folder, a JSONL file.")
    format: Format = Field(description="On-disk layout of the source.")
    task: Task = Field(description="Task adapter that turns records into conversations.")
    weight: float = Field(1.0, gt=0, description="Relative sampling weight in the mixture.")
    name: str | None = Field(None, description="Name used in logs, counts and MLflow inputs; "
                             "defaults to the last path component of uri.")
    fields: dict[str, str] = Field(default_factory=dict, description="Field mapping from the adapter's "
                                   "canonical names to this source's column/key names.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter options (e.g. depth "
                                    "units, box convention, label set, image root for JSONL).")

    def label(self) -> str:
        """``name`` if set, else the last path component of ``uri`` without its extension, or the
        nearest folder when that component is a pattern (``.../t2i/{00000..00003}.tar`` -> ``t2i``)."""
        if self.name:
            return self.name
        parts = [p for p in self.uri.rstrip("/").split("/") if p]
        for part in reversed(parts):
            if not any(c in part for c in "{*?["):
                return part.split(".", 1)[0] or part
        return self.uri


class DataSpec(_Strict):
    """The whole data section of a recipe."""

    sources: list[SourceSpec] = Field(min_length=1, description="Weighted mixture of sources.")
    image_size: int = Field(512, gt=0, description="Side in pixels of generation targets; every image of "
                            "a sample (inputs too) is scaled on its short side and centre-cropped to it, so "
                            "dense targets stay aligned with their input.")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="Fail the run when the fraction "
                                    "of bad records seen passes this.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank.")
    prefetch_factor: int = Field(2, ge=1, description="Optimizer steps (this rank's micro-batches of a "
                                 "step) prefetched per worker.")
    max_length: int | None = Field(None, gt=0, description="Longest conversation in tokens; longer "
                                   "ones are an error for that record, never silently truncated.")
    bad_fraction_min_records: int = Field(200, ge=1, description="Records a source must have served "
                                          "(good + bad, per rank) before max_bad_fraction is judged, so "
                                          "two bad records in the first ten do not stop a run.")
    io_retries: int = Field(3, ge=0, description="Retries (with backoff) of a failed read before the "
                            "record counts as bad (unreachable shard).")
    index_cache: str | None = Field(None, description="Local folder for cached source indexes (tar "
                                    "member offsets, row groups, line offsets, sessions); default "
                                    "$UNIGEN_DATA_CACHE or ~/.cache/unigen/data-index. Shared storage "
                                    "lets every rank reuse one build.")
    log_every: int = Field(100, ge=1, description="Log per-source served/bad counts every N steps.")

    @model_validator(mode="after")
    def _distinct_names(self) -> "DataSpec":
        seen: dict[str, int] = {}
        for i, src in enumerate(self.sources):
            name = src.label()
            if name in seen:
                raise ValueError(f"sources {seen[name]} and {i} are both named {name!r} (from name or uri); "
                                 f"give each a distinct `name`")
            seen[name] = i
        return self
