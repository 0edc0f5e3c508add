"""unigen.orchestrator.atomic: whole new content or the old file, no temp left behind, umask modes."""
import os
import stat
import threading

import pytest

from unigen.orchestrator import atomic
from unigen.orchestrator.atomic import atomic_open, atomic_write_bytes, atomic_write_text


class Boom(Exception):
    pass


class Unserialisable:
    def __str__(self):
        raise Boom("cannot serialise")


def _leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name != name)


def test_the_target_ends_with_the_new_content(tmp_path):
    target = tmp_path / "run.json"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n", fsync=True)
    assert target.read_text() == "new\n"
    atomic_write_bytes(target, b"\x00bytes", fsync=True)
    assert target.read_bytes() == b"\x00bytes"
    with atomic_open(target, "w") as fh:
        fh.write("streamed ")
        fh.write("text")
    assert target.read_text() == "streamed text"
    assert _leftovers(tmp_path, "run.json") == []


@pytest.mark.parametrize("fsync", [False, True])
def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temp(tmp_path, fsync):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_open(target, "w", fsync=fsync) as fh:
            fh.write("half of the new")
            fh.write(str(Unserialisable()))
    assert target.read_text() == "old"
    assert _leftovers(tmp_path, "state.json") == []


def test_a_failed_rename_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "x"
    target.write_text("old")

    def refuse(src, dst):
        raise OSError("injected")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="injected"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path, "x") == []


def test_two_writers_to_one_target_use_different_temp_names(tmp_path):
    target = tmp_path / "rank-0.exit"
    seen, both_open = [], threading.Barrier(2, timeout=10)

    def writer(text):
        with atomic_open(target, "w") as fh:
            both_open.wait()  # both temp files exist now
            seen.append(_leftovers(tmp_path, "rank-0.exit"))
            fh.write(text)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = seen[0]
    assert len(names) == 2
    assert all(n.startswith(".rank-0.exit.") and n.endswith(".tmp") for n in names), names
    assert target.read_text() in ("a", "b")
    assert _leftovers(tmp_path, "rank-0.exit") == []


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_mode_follows_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_write_bytes(tmp_path / "b.bin", b"", fsync=True)
    finally:
        os.umask(old)
    for name in ("a.json", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x", "a"):
            pass
    assert list(tmp_path.iterdir()) == []
