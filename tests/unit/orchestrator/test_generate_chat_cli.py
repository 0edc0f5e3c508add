"""`unigen generate` and `unigen chat` in-process on a tiny exported model: several input images, a
conversation file with several slots, the error lines, and a piped chat session that draws, answers and edits.
Each output is checked against the pipeline called directly with the conversation the command should build."""
import io
import json
import sys

import pytest
from PIL import Image

from tests.unit.model.model_helpers import pattern, tiny_pipeline
from unigen.orchestrator.cli import main
from unigen.model.chat_template import one_turn


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    from unigen.model import UniGenPipeline

    return UniGenPipeline.from_pretrained(model_dir)


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for k in range(2):
        path = tmp_path / "imgs" / f"in{k}.png"
        path.parent.mkdir(exist_ok=True)
        pattern(k).save(path)
        paths.append(path)
    return paths


def generate(model_dir, *args):
    return main(["generate", "--checkpoint", str(model_dir), "--steps", "2", "--seed", "1", *args])


def pixels(path):
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_generate_takes_several_input_images_in_order_and_image_guidance(model_dir, pipe, pictures, tmp_path, capsys):
    prompt = "put the circle of the second image into the first"
    out = tmp_path / "out" / "merged.png"
    args = ["--image", str(pictures[0]), "--image", str(pictures[1]), "--prompt", prompt, "--out", str(out)]
    assert generate(model_dir, *args, "--image-guidance", "2.0") == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (64x64)"
    want = pipe(one_turn(prompt, [str(p) for p in pictures]), num_inference_steps=2, seed=1,
                image_guidance_scale=2.0)[0]
    assert pixels(out) == want.tobytes()
    assert generate(model_dir, *args) == 0  # the default image guidance (1.5) draws something else
    assert pixels(out) != want.tobytes()


def test_generate_conversation_file_writes_one_file_per_slot(model_dir, pipe, pictures, tmp_path, capsys):
    conversation = [{"role": "user", "content": [
        {"type": "image", "image": "imgs/in0.png"}, {"type": "text", "text": "the same shape, red"}]},
        {"role": "assistant", "content": [{"type": "image_gen"}]},
        {"role": "user", "content": [{"type": "text", "text": "and now blue"}]},
        {"role": "assistant", "content": [{"type": "image_gen"}]}]
    (tmp_path / "story.yaml").write_text(json.dumps(conversation))  # YAML reads JSON too
    out = tmp_path / "story.png"
    assert generate(model_dir, "--conversation", str(tmp_path / "story.yaml"), "--out", str(out)) == 0
    written = [tmp_path / "story-1.png", tmp_path / "story-2.png"]
    assert capsys.readouterr().out.splitlines() == [f"wrote {p} (64x64)" for p in written]
    assert not out.exists()
    conversation[0]["content"][0]["image"] = str(pictures[0])  # relative to the file's folder
    want = pipe(conversation, num_inference_steps=2, seed=1)
    assert [pixels(p) for p in written] == [w.tobytes() for w in want]

    (tmp_path / "one.json").write_text(json.dumps(conversation[:2]))
    assert generate(model_dir, "--conversation", str(tmp_path / "one.json"), "--out", str(out)) == 0
    assert pixels(out) == want[0].tobytes()  # one slot: --out itself


@pytest.mark.parametrize("setup, args, message", [
    (None, ["--image", "{tmp}/nope.png", "--prompt", "x"], "error: --image {tmp}/nope.png does not exist"),
    ('[{"role": "user", ', ["--conversation", "{tmp}/bad.json"],
     "error: --conversation {tmp}/bad.json: not valid JSON"),
    ("- role: user\n  content: [\n", ["--conversation", "{tmp}/bad.yaml"],
     "error: --conversation {tmp}/bad.yaml: not valid YAML"),
    ('{"role": "user"}', ["--conversation", "{tmp}/bad.json"],
     "error: --conversation {tmp}/bad.json: expected a list of messages"),
    ('[{"role": "user", "content": [{"type": "text", "text": "no slot"}]}]', ["--conversation", "{tmp}/bad.json"],
     "error: --conversation {tmp}/bad.json: no empty image_gen slot to generate"),
    ('[{"role": "user", "content": [{"type": "image", "image": "gone.png"}, {"type": "image_gen"}]}]',
     ["--conversation", "{tmp}/bad.json"], "error: --conversation {tmp}/bad.json: conversation 0, message 0, item 0: "
     "image gone.png not found (looked at {tmp}/gone.png); paths are relative to the conversation file's folder"),
    ('[{"role": "robot", "content": "hi"}]', ["--conversation", "{tmp}/bad.json"],
     "error: --conversation {tmp}/bad.json: conversation 0, message 0: unknown role 'robot'"),
    (None, ["--conversation", "{tmp}/missing.json"], "error: --conversation {tmp}/missing.json: cannot read it"),
    ('[{"role": "user", "content": [{"type": "image_gen"}]}]', ["--conversation", "{tmp}/bad.json", "--image", "a.png"],
     "error: --image goes with --prompt"),
])
def test_generate_errors_name_the_argument_and_exit_2(model_dir, tmp_path, capsys, setup, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    if setup is not None:
        (tmp_path / args[1].rsplit("/", 1)[-1]).write_text(setup)
    assert generate(model_dir, *args, "--out", str(tmp_path / "o.png")) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path)) and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_generate_prompt_and_conversation_are_exclusive(model_dir, capsys):
    with pytest.raises(SystemExit) as err:
        generate(model_dir, "--prompt", "x", "--conversation", "c.json", "--out", "o.png")
    assert err.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_chat_one_question_about_an_image(model_dir, pipe, pictures, capsys):
    assert main(["chat", "--checkpoint", str(model_dir), "--image", str(pictures[0]), "--prompt", "What is it?",
                 "--max-new-tokens", "3"]) == 0
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.open(pictures[0]).convert("RGB")},
                                             {"type": "text", "text": "What is it?"}]}]
    assert capsys.readouterr().out == pipe.chat(messages, max_new_tokens=3) + "\n"


def test_chat_session_on_a_pipe_draws_answers_and_edits(model_dir, pipe, tmp_path, monkeypatch, capsys):
    lines = ["/gen a red circle", "/image nope.png", "What is it?", "/frob", "/draw make it blue", "/quit",
             "never read"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    out_dir = tmp_path / "chat"
    assert main(["chat", "--checkpoint", str(model_dir), "--out-dir", str(out_dir), "--steps", "2", "--seed", "4",
                 "--max-new-tokens", "3"]) == 0
    captured = capsys.readouterr()
    first_png, edit_png = out_dir / "turn-1.png", out_dir / "turn-3.png"
    assert captured.err.splitlines()[0] == "error: /image nope.png does not exist; give the path of an image file"
    assert captured.err.splitlines()[1].startswith("error: unknown command /frob; use /image PATH, /gen TEXT")
    assert sorted(p.name for p in out_dir.iterdir()) == ["turn-1.png", "turn-3.png"]

    # The same session by hand: text-to-image, a question that sees the drawn image, then the edit layout.
    draw = dict(num_inference_steps=2, seed=4)
    first = pipe(one_turn("a red circle"), **draw)[0]
    assert pixels(first_png) == first.tobytes()
    history = one_turn("a red circle")
    history[1]["content"][0]["image"] = first
    question = {"role": "user", "content": [{"type": "text", "text": "What is it?"}]}
    shown = [history[0], {"role": "assistant", "content": [{"type": "image", "image": first}]}, question]
    answer = pipe.chat(shown, max_new_tokens=3)
    assert captured.out == f"wrote {first_png}\n{answer}\nwrote {edit_png}\n"  # no help text on a pipe
    history += [question, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    edit = pipe(history + one_turn("make it blue", [first]), **draw)[0]
    assert pixels(edit_png) == edit.tobytes()


def test_the_runbook_conversation_file_generates_one_image_per_slot(model_dir, tmp_path, capsys):
    """runbooks/generating.md's YAML conversation, written next to the image it names, runs as documented."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "runbooks" / "generating.md").read_text()
    block = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)[0]
    (tmp_path / "imgs").mkdir()
    pattern(3).save(tmp_path / "imgs" / "room.png")
    (tmp_path / "story.yaml").write_text(block)
    story = ["--conversation", str(tmp_path / "story.yaml"), "--out", str(tmp_path / "story.png")]
    assert generate(model_dir, *story) == 0
    assert capsys.readouterr().out.count("wrote ") == 2
    assert (tmp_path / "story-1.png").is_file() and (tmp_path / "story-2.png").is_file()
