"""What every reader shares: the file list, the retry policy, relative-path resolution."""
from __future__ import annotations

from typing import Any

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError


class Reader:
    """Random access to one source's records (subclasses fill ``_build`` and ``read``)."""

    extensions: tuple[str, ...] = ()

    def __init__(self, source, *, grouping=None, cache_dir: str | None = None, retries: int = 3):
        self.source = source
        self.grouping = grouping
        self.cache_dir = cache_dir
        self.retries = retries
        self.storage_options: dict[str, Any] = dict(source.options.get("storage_options") or {})
        self.name = source_label(source)
        self.files = self._list_files()
        self._build()

    # -- subclasses -------------------------------------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def key(self, i: int) -> str:
        raise NotImplementedError

    def read(self, i: int) -> dict:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------
    def _list_files(self) -> list[str]:
        try:
            files = fs.expand_uri(self.source.uri, self.storage_options)
        except (OSError, ValueError) as exc:
            raise DataError(f"source {self.name}: cannot list {self.source.uri!r}: {exc}") from exc
        if self.extensions:
            files = [f for f in files if f.lower().endswith(self.extensions)]
        if not files:
            raise DataError(f"source {self.name}: no {'/'.join(self.extensions) or 'input'} files match "
                            f"{self.source.uri!r}; check data.sources[].uri (brace ranges like "
                            "{00000..00003}.tar and globs are expanded)")
        return files

    def index(self, kind: str, url: str, build, extra: str = ""):
        """The cached index of one file; a file that cannot be read or parsed stops with DataError."""
        from unigen.model.data.readers.index_cache import cached
        try:
            return cached(kind, url, build, cache_dir=self.cache_dir, storage_options=self.storage_options,
                          extra=extra)
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"source {self.name}: cannot index {url}: {type(exc).__name__}: {exc}") from exc

    def read_range(self, url: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes of a file; a missing or unreachable file is a BadRecord (the loader skips it)."""
        try:
            return fs.read_bytes(url, start, end, retries=self.retries, storage_options=self.storage_options)
        except FileNotFoundError:
            raise BadRecord(f"file not found: {url}") from None
        except OSError as exc:
            raise BadRecord(str(exc)) from None

    def image_root(self, file_url: str) -> str:
        """Folder that relative image paths in ``file_url`` are resolved against."""
        root = self.source.options.get("image_root")
        return root if root else fs.dirname(file_url)

    def resolver(self, file_url: str):
        root = self.image_root(file_url)
        return lambda rel: self.read_range(fs.join(root, rel))


def source_label(source) -> str:
    """The source's name in logs and counts (see ``SourceSpec.label``)."""
    return source.label()
