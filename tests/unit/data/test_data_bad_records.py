"""Bad records (undecodable image, missing field, wrong type, truncated shard, unreachable shard, broken
JSON line, missing image file) are skipped, counted per source with their keys and logged; the run
stops with a message naming the source only past max_bad_fraction."""
import io
import json
import logging
import tarfile

import pytest
from PIL import Image

from tests.unit.data.data_helpers import id_collate, spec_for
from unigen.model.data.errors import DataError
from unigen.model.data.loader import build_loader
from unigen.model.data.mixture import MixtureState
from unigen.model.data.synth.formats import image_bytes, write_tar


def good_sample(key, i):
    img = Image.new("RGB", (40, 32), (i * 7 % 255, 100, 50))
    return [(f"{key}.jpg", image_bytes(img, "JPEG")), (f"{key}.txt", f"caption {i}".encode())]


def write_bad_corpus(folder):
    """Shards 00000..00004: 00003 is missing, 00002 is cut inside a member's data, 00004 inside a
    header. Returns the set of bad sample keys written on purpose (the cut ones are found by the index)."""
    folder.mkdir(parents=True)
    bad = set()
    members = [m for i in range(40) for m in good_sample(f"a{i:03d}", i)]
    write_tar(folder / "00000.tar", members)
    members = []
    for i in range(40):
        key = f"b{i:03d}"
        if i % 10 == 1:  # undecodable image
            members += [(f"{key}.jpg", b"\xff\xd8 not really a jpeg"), (f"{key}.txt", b"broken image")]
            bad.add(f"00001.tar/{key}")
        elif i % 10 == 2:  # missing caption (no .txt, no json)
            members += [good_sample(key, i)[0]]
            bad.add(f"00001.tar/{key}")
        elif i % 10 == 3:  # wrong type: caption is a number
            members += [good_sample(key, i)[0], (f"{key}.json", json.dumps({"caption": 12}).encode())]
            bad.add(f"00001.tar/{key}")
        else:
            members += good_sample(key, i)
    write_tar(folder / "00001.tar", members)
    for shard, cut_in in (("00002", "data"), ("00004", "header")):
        path = folder / f"{shard}.tar"
        write_tar(path, [m for i in range(10) for m in good_sample(f"c{i:03d}", i)])
        with tarfile.open(path) as tar:
            member = tar.getmembers()[11]  # c005.txt
        cut = member.offset_data + 4 if cut_in == "data" else member.offset + 100
        path.write_bytes(path.read_bytes()[:cut])  # a shard cut short by a failed upload
    return bad


@pytest.fixture
def bad_corpus(tmp_path):
    bad = write_bad_corpus(tmp_path / "bad")
    return tmp_path / "bad", bad


def source(folder, **kw):
    return {"name": "bad-t2i", "uri": f"{folder}/{{00000..00004}}.tar", "format": "webdataset", "task": "t2i", **kw}


def expected_counts(loader, bad_keys, total):
    """Independent replay of the documented replacement rule: attempts until a good record."""
    items, _ = loader.mixture.plan(MixtureState(), total)
    reader = loader.sources[0].reader
    bad_events = 0
    for it in items:
        rec, attempt = it.record, 0
        while reader.key(rec) in bad_keys:
            bad_events += 1
            attempt += 1
            rec = loader.mixture.replacement(0, it.g, attempt)
    return bad_events


def test_bad_records_are_skipped_counted_with_keys_and_logged(bad_corpus, caplog):
    folder, bad = bad_corpus
    spec = spec_for([source(folder)], max_bad_fraction=0.5, bad_fraction_min_records=50)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=10, micro_batch_size=5, rank=0, world_size=1)
    reader = loader.sources[0].reader
    keys = [reader.key(i) for i in range(len(reader))]
    # Complete samples of the cut shards stay usable; the cut sample is indexed as incomplete.
    assert [k for k in keys if k.startswith("00002.tar/")] == [f"00002.tar/c{i:03d}" for i in range(6)]
    assert [k for k in keys if k.startswith("00004.tar/")] == [f"00004.tar/c{i:03d}" for i in range(6)]
    incomplete = {k for i, k in enumerate(keys) if reader._locate(i)[1][2] is not True}
    assert incomplete == {"00002.tar/c005", "00003.tar/__unreadable__", "00004.tar/c005"}
    bad_keys = bad | incomplete
    caplog.set_level(logging.WARNING, logger="unigen.data")
    steps = 25  # 250 samples over 93 records: over two epochs, every record seen
    for _ in range(steps):
        for mb in loader.next_step():
            assert len(mb) == 5
    stats = loader.stats()["sources"]["bad-t2i"]
    assert stats["served"] == steps * 10
    assert stats["bad"] == expected_counts(loader, bad_keys, steps * 10)
    logged = {r.getMessage().split("key ")[1].split(":")[0] for r in caplog.records if "bad record" in r.getMessage()}
    assert logged == bad_keys  # every bad record was met, each logged with source and key
    assert all(b["key"] in bad_keys for b in stats["last_bad"]) and len(stats["last_bad"]) == 5
    reasons = " | ".join(r.getMessage() for r in caplog.records)
    for what in ("undecodable image", "missing field", "expected text, got int", "truncated shard",
                 "shard unreadable"):
        assert what in reasons


def test_bad_fraction_over_the_limit_stops_with_a_message_naming_the_source(bad_corpus, corpus):
    folder, _ = bad_corpus
    _, manifest = corpus
    good = next(s for s in manifest["sources"] if s["name"] == "shapes-ip2p")
    spec = spec_for([source(folder), good], max_bad_fraction=0.05, bad_fraction_min_records=30)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=8, micro_batch_size=4, rank=0, world_size=1)
    with pytest.raises(DataError, match=r"source bad-t2i: \d+ of \d+ records are bad \(\d+\.\d% > "
                                        r"data.max_bad_fraction 5.0%\); last bad: .*tar/"):
        for _ in range(50):
            loader.next_step()
    assert loader.stats()["sources"]["shapes-ip2p"]["bad"] == 0


def test_under_the_minimum_record_count_nothing_is_judged(bad_corpus):
    folder, _ = bad_corpus
    spec = spec_for([source(folder)], max_bad_fraction=0.0, bad_fraction_min_records=1000)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=10, micro_batch_size=10, rank=0, world_size=1)
    for _ in range(5):
        loader.next_step()
    assert loader.stats()["bad"] > 0


def test_a_source_of_only_bad_records_fails_fast_naming_it(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    write_tar(folder / "00000.tar", [(f"k{i}.jpg", b"garbage") for i in range(20)])
    spec = spec_for([{"name": "junk", "uri": f"{folder}/00000.tar", "format": "webdataset", "task": "t2i"}])
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=2, micro_batch_size=2, rank=0, world_size=1)
    with pytest.raises(DataError, match=r"source junk: 16 records in a row are bad \(last: 00000.tar/k\d+: "):
        loader.next_step()


def test_jsonl_broken_line_and_missing_image_file_are_bad_records(tmp_path):
    folder = tmp_path / "pairs"
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(30):
        for side in ("src", "tgt"):
            Image.new("RGB", (32, 32), (i, 2 * i, 3 * i)).save(folder / "images" / f"{i}_{side}.png")
        lines.append(json.dumps({"source_image": f"images/{i}_src.png", "instruction": f"edit {i}",
                                 "target_image": f"images/{i}_tgt.png"}))
    lines[4] = '{"source_image": "images/4_src.png", "instruction": '  # cut line
    (folder / "images" / "7_tgt.png").unlink()
    (folder / "edits.jsonl").write_text("\n".join(lines) + "\n")
    spec = spec_for([{"name": "pairs", "uri": f"{folder}/edits.jsonl", "format": "jsonl", "task": "edit"}],
                    max_bad_fraction=0.5, bad_fraction_min_records=10)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=30, micro_batch_size=30, rank=0, world_size=1)
    loader.next_step()
    stats = loader.stats()["sources"]["pairs"]
    reasons = {b["key"]: b["reason"] for b in stats["last_bad"]}
    assert "edits.jsonl:5" in reasons and "invalid JSON" in reasons["edits.jsonl:5"]
    assert "edits.jsonl:8" in reasons and "file not found" in reasons["edits.jsonl:8"]
    assert stats["served"] == 30


def test_parquet_wrong_type_and_undecodable_bytes_are_bad_records(tmp_path):
    from unigen.model.data.synth.formats import write_parquet
    good = io.BytesIO()
    Image.new("RGB", (16, 16)).save(good, format="PNG")
    rows = [{"original_image": {"bytes": good.getvalue(), "path": "x.png"}, "edit_prompt": f"p{i}",
             "edited_image": {"bytes": good.getvalue() if i != 3 else b"\x89PNG broken", "path": "y.png"}}
            for i in range(12)]
    rows[5]["edit_prompt"] = ""
    write_parquet(tmp_path / "ip2p.parquet", rows)
    spec = spec_for([{"name": "ip2p", "uri": f"{tmp_path}/ip2p.parquet", "format": "parquet", "task": "edit"}],
                    max_bad_fraction=0.9, bad_fraction_min_records=5)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=12, micro_batch_size=12, rank=0, world_size=1)
    loader.next_step()
    bad = {b["key"]: b["reason"] for b in loader.stats()["sources"]["ip2p"]["last_bad"]}
    assert "undecodable image" in bad["ip2p.parquet#3"] and "empty text" in bad["ip2p.parquet#5"]
