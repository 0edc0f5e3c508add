"""The GoT datasets (Laion-Aesthetics-High-Resolution-GoT, JourneyDB-GoT, OmniEdit-GoT) read in their
published layout, through the declarations runbooks/data-preparation.md gives for them, and the
``reasoning`` option of the t2i and edit adapters.

The files are written here from the datasets' descriptions (GoT card: prompt, GoT chain with boxes,
image paths; OmniEdit-GoT: ``omni_edit_id``/``got``/``coord`` joined with OmniEdit-Filtered-1.2M), not
from unigen's synthetic corpus."""
import json
import pathlib
import pickle
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.unit.data.data_helpers import convert, items, ok, open_one
from unigen.model.data.errors import DataError
from unigen.model.data.spec import SourceSpec
from unigen.model.data.synth.formats import hf_image, write_jsonl, write_parquet
from unigen.model.data.tasks import make_adapter

RUNBOOK = pathlib.Path(__file__).resolve().parents[3] / "runbooks" / "data-preparation.md"


def runbook_sources() -> dict:
    """name -> source dict, from the yaml block of the runbook's GoT section, as written there."""
    section = next(p for p in re.split(r"^### ", RUNBOOK.read_text(), flags=re.M) if p.startswith("GoT"))
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return {s["name"]: s for s in yaml.safe_load(block)["sources"]}


def colour(i, size=(48, 40)):
    return Image.new("RGB", size, ((53 * i) % 255, (29 * i + 60) % 255, (17 * i + 100) % 255))


# GoT's chain text: objects tagged and followed by their box, corners in 0..1000 (as GoT-R1's released
# example chain, trained on JourneyDB-GoT, writes it: github gogoduan/GoT-R1, examples/*/reasoning_chain.txt).
CHAINS = [f"A <|obj_start|>red kite<|obj_end|> <|box_start|>(1{i}0,200),(400,5{i}0)<|box_end|> flies above a "
          f"<|obj_start|>green hill<|obj_end|> <|box_start|>(0,600),(997,983)<|box_end|> in scene {i}."
          for i in range(4)]


def write_t2i_got(root: pathlib.Path, image_root: pathlib.Path, shift: int):
    """A GoT t2i annotation file (prompt, got, image path) and its images under their own root."""
    rows = []
    for i in range(4):
        rel = f"{i // 2:05d}/{i:09d}.jpg"
        (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
        colour(i + shift).save(image_root / rel, quality=95)
        rows.append({"prompt": f"a kite over hill number {i + shift}", "got": CHAINS[i], "image_path": rel,
                     "width": 48, "height": 40})
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "part-000.jsonl", rows)
    return rows


def write_omniedit_got(tmp: pathlib.Path):
    """OmniEdit-Filtered-1.2M rows (images + phrasings) and OmniEdit-GoT rows (id, got, coord) for 3 of
    them plus one id OmniEdit does not have, in a different order than OmniEdit's."""
    (tmp / "omniedit/data").mkdir(parents=True)
    oe = [{"omni_edit_id": f"oe-{i:04d}", "task": "addition", "src_img": hf_image(colour(i), f"{i}.png"),
           "edited_img": hf_image(colour(i + 100), f"{i}_e.png"),
           "edited_prompt_list": [f"add a hat to person {i}"], "sc_score_1": 9, "pq_score": 8}
          for i in range(5)]
    write_parquet(tmp / "omniedit/data/train-00000-of-00002.parquet", oe[:3], row_group_size=2)
    write_parquet(tmp / "omniedit/data/train-00001-of-00002.parquet", oe[3:], row_group_size=2)
    (tmp / "got/omniedit/data").mkdir(parents=True)
    got = [{"omni_edit_id": f"oe-{i:04d}",
            "got": f"The person stands at <box_1>. Add a red hat on the head at <box_10>; keep <box_1> as is. ({i})",
            "coord": json.dumps({"<box_1>": [[100, 120], [500, 900]], "<box_10>": [[210, 120], [330, 220]]})}
           for i in (4, 1, 2)]
    got.append({"omni_edit_id": "oe-9999", "got": "orphan", "coord": "{}"})
    write_parquet(tmp / "got/omniedit/data/train-00000-of-00001.parquet", got)
    return oe, got


@pytest.fixture()
def got_tree(tmp_path, monkeypatch):
    """The three GoT sets at the runbook's paths (relative: the test runs in tmp_path)."""
    monkeypatch.chdir(tmp_path)
    laion = write_t2i_got(tmp_path / "got/laion-aesthetics-hr", tmp_path / "got/laion-aesthetics-hr/images", 0)
    jdb = write_t2i_got(tmp_path / "got/journeydb", tmp_path / "journeydb/imgs", 10)
    oe, got = write_omniedit_got(tmp_path)
    return {"laion": laion, "journeydb": jdb, "omniedit": oe, "got": got}


def target_colour(conv) -> tuple:
    target = np.asarray(items(conv, "image_gen")[0]["image"])
    return tuple(int(v) for v in target[32, 32])


def close(a, b, tol=6):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def test_laion_aesthetics_got_reads_prompt_chain_and_image_path(got_tree):
    src = open_one(runbook_sources()["got-laion-aesthetics-hr"])
    assert len(src) == 4
    conv = ok(src, 2)
    (user_text,) = items(conv, "text")
    # reasoning: input -> the prompt, a blank line, then the chain with its boxes as published
    assert user_text["text"] == f"a kite over hill number 2\n\n{CHAINS[2]}"
    assert [m["role"] for m in conv] == ["user", "assistant"]
    assert close(target_colour(conv), colour(2).getpixel((0, 0)))


def test_journeydb_got_images_resolve_against_journeydb_and_chain_is_the_answer(got_tree):
    src = open_one(runbook_sources()["got-journeydb"])
    conv = ok(src, 3)
    user, assistant = conv
    assert [it["text"] for it in user["content"]] == [
        "Follow the caption to generate an image through a chain of thought process: a kite over hill number 13"]
    # reasoning: answer -> GoT's order: the assistant writes the chain, then the image
    assert [it["type"] for it in assistant["content"]] == ["text", "image_gen"]
    assert assistant["content"][0]["text"] == CHAINS[3]
    assert close(target_colour(conv), colour(13).getpixel((0, 0)))


def test_the_plain_prompt_is_the_default(got_tree):
    declared = dict(runbook_sources()["got-journeydb"])
    declared["options"] = {k: v for k, v in declared["options"].items() if k not in ("reasoning", "templates")}
    conv = ok(open_one(declared), 1)
    assert [it["text"] for it in items(conv, "text")] == ["a kite over hill number 11"]
    assert [it["type"] for it in conv[1]["content"]] == ["image_gen"]


def test_omniedit_got_joins_omniedit_rows_and_fills_the_boxes(got_tree):
    src = open_one(runbook_sources()["got-omniedit"])
    assert len(src) == 4  # one sample per GoT row
    conv = ok(src, 0)  # GoT row 0 is oe-0004: its images live in OmniEdit's second file
    user, assistant = conv
    assert [it["type"] for it in user["content"]] == ["image", "text"]
    prompt = user["content"][1]["text"]
    instruction, chain = prompt.split("\n\n")
    assert instruction == "add a hat to person 4"
    assert chain == ("The person stands at [[100, 120], [500, 900]]. Add a red hat on the head at "
                     "[[210, 120], [330, 220]]; keep [[100, 120], [500, 900]] as is. (4)")
    source = np.asarray(user["content"][0]["image"])
    assert close(tuple(int(v) for v in source[32, 32]), colour(4).getpixel((0, 0)))
    assert close(target_colour(conv), colour(104).getpixel((0, 0)))
    conv = ok(src, 1)  # oe-0001, first file
    assert close(target_colour(conv), colour(101).getpixel((0, 0)))
    # DataLoader workers get the reader pickled: the joined index travels with it
    again = pickle.loads(pickle.dumps(src.reader))
    assert again.read(2)["edited_prompt_list"] == ["add a hat to person 2"] and again.key(2) == src.reader.key(2)


def test_a_got_row_without_an_omniedit_partner_is_a_bad_record_naming_its_id(got_tree):
    src = open_one(runbook_sources()["got-omniedit"])
    _, events = convert(src, 3)  # the loader then serves a replacement record
    assert events[0][0] == "bad" and events[0][3] == ("omni_edit_id='oe-9999' is not in the join table "
                                                       "omniedit/data")


@pytest.mark.parametrize("options,match", [
    ({"reasoning": "always"},
     r"data.sources\[0\].options.reasoning: 'always' is not a mode; use one of \['input', 'answer'\]"),
    ({"join": {"uri": "omniedit/data", "key": "omni_edit_id"}}, r"options.join: expected \{uri: <table>, format"),
    ({"join": {"uri": "x", "format": "webdataset", "key": "id"}}, r"options.join.format: 'webdataset'"),
])
def test_bad_reasoning_and_join_options_name_the_option_and_the_fix(options, match):
    src = SourceSpec(uri="got/omniedit/data", format="parquet", task="edit", options=options)
    with pytest.raises(DataError, match=match):
        make_adapter(src, 64, where="data.sources[0]")


def test_yaml_off_means_no_reasoning(got_tree):
    declared = dict(runbook_sources()["got-laion-aesthetics-hr"])
    declared["options"] = {**declared["options"], **yaml.safe_load("reasoning: off")}
    assert declared["options"]["reasoning"] is False
    conv = ok(open_one(declared), 0)
    assert [it["text"] for it in items(conv, "text")] == ["a kite over hill number 0"]


def test_a_missing_chain_is_a_bad_record_when_reasoning_is_on(got_tree, tmp_path):
    rows = [{"prompt": "no chain here", "image_path": "00000/000000000.jpg"}]
    write_jsonl(tmp_path / "got/laion-aesthetics-hr/part-001.jsonl", rows)
    declared = dict(runbook_sources()["got-laion-aesthetics-hr"], uri="got/laion-aesthetics-hr/part-001.jsonl")
    _, events = convert(open_one(declared), 0)
    assert events[0][0] == "bad" and events[0][3].startswith("missing field 'got'")


def test_a_grouped_multi_turn_session_gets_one_chain_per_turn(tmp_path):
    """SEED-Edit-Multiturn-GoT style: rows of one session, each turn with its own chain."""
    rows = [{"img_id": 7, "turn_index": t, "source_img": hf_image(colour(t), "s.png"),
             "instruction": f"step {t}", "target_img": hf_image(colour(t + 1), "t.png"), "got": f"chain of step {t}"}
            for t in (2, 1)]
    write_parquet(tmp_path / "train.parquet", rows)
    src = open_one({"name": "mt-got", "uri": str(tmp_path), "format": "parquet", "task": "edit",
                    "options": {"reasoning": "answer"}})
    conv = ok(src, 0)
    assert [m["role"] for m in conv] == ["user", "assistant"] * 2
    assert [it["text"] for it in items(conv, "text")] == ["step 1", "chain of step 1", "step 2", "chain of step 2"]
