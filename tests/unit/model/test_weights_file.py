"""model.safetensors as a file: equal tensors give equal bytes in any process (lineage records the export's
sha256), and the file is as readable as the umask says (safetensors alone writes 0600)."""
from __future__ import annotations

import hashlib
import subprocess
import sys

SAVE = """
import os, sys, torch
os.umask(int(sys.argv[2], 8))
from unigen.model import UniGenPipeline
from unigen.model.weights import save_weights
torch.manual_seed(0)
save_weights(UniGenPipeline.from_preset("tiny").model, sys.argv[1])
"""


def _save_in_a_new_process(folder, umask: str) -> bytes:
    folder.mkdir()
    subprocess.run([sys.executable, "-c", SAVE, str(folder), umask], check=True, timeout=300)
    return (folder / "model.safetensors").read_bytes()


def test_equal_weights_give_equal_bytes_across_processes(tmp_path):
    from safetensors.torch import load_file

    first = _save_in_a_new_process(tmp_path / "a", "022")
    second = _save_in_a_new_process(tmp_path / "b", "022")
    # safetensors writes its header maps in a per-process order: the tensors alone did not fix the bytes
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    state = load_file(tmp_path / "a" / "model.safetensors")  # still a valid safetensors file
    assert state and all(t.numel() >= 0 for t in state.values())
    assert not list((tmp_path / "a").glob(".mode-probe-*"))


def test_the_file_mode_follows_the_umask(tmp_path):
    _save_in_a_new_process(tmp_path / "shared", "022")
    _save_in_a_new_process(tmp_path / "group", "027")
    assert (tmp_path / "shared" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "group" / "model.safetensors").stat().st_mode & 0o777 == 0o640


def test_headers_that_differ_only_in_key_order_become_the_same_bytes(tmp_path):
    """What the library does at random per process, done on purpose: the same header with its metadata
    keys in the other order (same length, so the data section is untouched)."""
    import struct

    import torch
    from safetensors.torch import load_file, save_file

    from unigen.model.weights import _canonical_header

    path = tmp_path / "a.safetensors"
    save_file({"b": torch.ones(3), "a": torch.zeros(2)}, str(path), metadata={"format": "pt", "unigen": "1"})
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + length]
    swapped = header.replace(b'"format":"pt","unigen":"1"', b'"unigen":"1","format":"pt"') \
        if b'"format":"pt","unigen":"1"' in header else \
        header.replace(b'"unigen":"1","format":"pt"', b'"format":"pt","unigen":"1"')
    assert swapped != header and len(swapped) == len(header)
    other = tmp_path / "b.safetensors"
    other.write_bytes(data[:8] + swapped + data[8 + length:])
    _canonical_header(str(path))
    _canonical_header(str(other))
    assert path.read_bytes() == other.read_bytes()
    assert torch.equal(load_file(str(other))["b"], torch.ones(3))
