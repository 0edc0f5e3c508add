"""The ``data:`` section of a recipe, as typed models.

This module is the contract between recipes (validated by ``unigen.orchestrator`` without torch)
and the data package. It imports only pydantic, so ``unigen validate`` stays fast.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Task = Literal[
    "t2i", "edit", "interleaved", "multi_image",
    "depth", "normal", "pose", "segmentation", "grounding",
]
Format = Literal["webdataset", "parquet", "jsonl", "coco", "synthetic"]


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


class DataSpec(_Strict):
    """The whole data section of a recipe."""

    sources: list[SourceSpec] = Field(min_length=1, description="Weighted mixture of sources.")
    image_size: int = Field(512, gt=0, description="Side in pixels of generation targets.")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="Fail the run when the fraction "
                                    "of bad records seen passes this.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank.")
    prefetch_factor: int = Field(2, ge=1, description="Batches prefetched per worker.")
    max_length: int | None = Field(None, gt=0, description="Longest conversation in tokens; longer "
                                   "ones are an error for that record, never silently truncated.")
