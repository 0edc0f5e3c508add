"""``unigen chat --run RUN|--checkpoint PATH [--image IN ...] [--prompt TEXT]``.

With ``--prompt``: the backbone's own answer about the ``--image`` inputs (the frozen backbone keeps its
understanding; this is Qwen2.5-VL's generation), printed, then exit.

Without: a session on stdin (a pipe works the same, so it can be scripted and tested), one conversation
kept across turns:
- a plain line is a question, answered by ``pipe.chat`` and kept as an assistant message;
- ``/image PATH`` adds an input image to the next turn (``--image`` does so for the first turn);
- ``/gen TEXT`` (``/draw``) draws in the context of the conversation: the user turn holds the images
  added with ``/image``, else the latest image (so it is an edit of it), then TEXT, and an assistant turn
  holds one ``image_gen`` slot - the layout the edit adapter trains multi-turn editing on (turn k's
  result is the input image of turn k+1's user message). The image is written to
  ``--out-dir/turn-<k>.png`` and becomes the latest image;
- ``/reset`` starts a new conversation, ``/quit`` (or end of input) ends the session.
A mistake in one turn (a missing image, a conversation grown past max_length) prints ``error: ...`` and
the session goes on; the conversation is unchanged by a failed turn.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

from unigen.model.chat_template import one_turn
from unigen.orchestrator.commands.generate import check_image_arg, sampling_kwargs
from unigen.orchestrator.errors import UserError

COMMANDS = "/image PATH, /gen TEXT (or /draw TEXT), /reset, /quit"
HELP = f"""unigen chat: type a question, or a command: {COMMANDS}
  /image PATH   add an input image to your next turn
  /gen TEXT     draw TEXT; with an image in the conversation, edit the latest image
  /reset        start a new conversation
  /quit         leave (end of input too)"""


class ChatSession:
    """One conversation across turns and what each kind of turn adds to it.

    ``history`` is a filled conversation (generated slots carry their images), ``pending`` the input
    images of the next turn, ``latest`` the most recent image shown or drawn (what ``/gen`` edits).
    """

    def __init__(self, pipe: Any, out_dir: Path, sampling: dict[str, Any], max_new_tokens: int | None = None):
        self.pipe, self.out_dir, self.sampling = pipe, out_dir, sampling
        self.chat_kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        self.turn = 0  # numbers the output files; kept across /reset so no file is overwritten
        self.reset()

    def reset(self) -> None:
        """Forget the conversation and the images (the turn counter goes on)."""
        self.history: list[dict] = []
        self.pending: list[Any] = []
        self.latest: Any = None

    def add_image(self, path: str) -> None:
        """Read the image now, so a bad path fails on its own line, not on the next turn."""
        from unigen.model.images import load_image

        check_image_arg(path, "/image")
        try:
            image = load_image(str(Path(path).expanduser()), f"/image {path}")
        except ValueError as e:
            raise UserError(str(e)) from None
        self.pending.append(image)
        self.latest = image

    def ask(self, text: str) -> str:
        """Answer a question about the whole conversation, generated images included (shown to
        ``chat()`` as input images, see ``slots_as_images``)."""
        from unigen.model.pipeline import slots_as_images

        turn = {"role": "user", "content": [{"type": "image", "image": i} for i in self.pending]
                + [{"type": "text", "text": text}]}
        try:
            answer = self.pipe.chat(slots_as_images(self.history + [turn]), **self.chat_kwargs)
        except ValueError as e:
            raise UserError(f"{e} (/reset starts a new conversation)") from None
        self.history += [turn, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        self._next_turn()
        return answer

    def draw(self, text: str) -> Path:
        """Generate from TEXT and the conversation; write ``turn-<k>.png`` and return its path."""
        inputs = self.pending or ([self.latest] if self.latest is not None else [])
        try:
            images, filled = self.pipe.generate_conversation(self.history + one_turn(text, inputs),
                                                             **self.sampling)
        except ValueError as e:
            raise UserError(f"{e} (/reset starts a new conversation)") from None
        self.history, self.latest = filled, images[0]
        self._next_turn()
        path = self.out_dir / f"turn-{self.turn}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        images[0].save(path)
        return path

    def _next_turn(self) -> None:
        self.pending = []
        self.turn += 1


def handle(session: ChatSession, line: str, out: TextIO) -> bool:
    """Carry out one input line; False when the session should end."""
    command, _, rest = line.partition(" ") if line.startswith("/") else ("", "", line)
    rest = rest.strip()
    if command in ("/quit", "/exit"):
        return False
    if command == "/reset":
        session.reset()
        print("(new conversation)", file=out)
    elif command == "/image":
        if not rest:
            raise UserError("usage: /image PATH")
        session.add_image(rest)
    elif command in ("/gen", "/draw"):
        if not rest:
            raise UserError(f"usage: {command} TEXT (what to draw, or how to change the latest image)")
        path = session.draw(rest)
        print(f"wrote {path}", file=out)
    elif command:
        raise UserError(f"unknown command {command}; use {COMMANDS}, or type a question")
    else:
        print(session.ask(rest), file=out)
    return True


def input_lines(stdin: TextIO) -> Iterator[str]:
    """Non-empty stripped lines until end of input; with a terminal, prompted (and line-edited by input())."""
    tty = stdin.isatty()
    while True:
        try:
            line = input("> ") if tty else stdin.readline()
        except EOFError:
            return
        if not tty and not line:
            return
        if line.strip():
            yield line.strip()


def interactive(session: ChatSession, stdin: TextIO, out: TextIO) -> int:
    """The read-answer loop: one turn per line; a turn's error is printed and the session goes on."""
    if stdin.isatty():
        print(HELP, file=out)
    for line in input_lines(stdin):
        try:
            if not handle(session, line, out):
                break
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
        out.flush()
    return 0


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.commands.runref import load_pipeline

    for image in args.image or []:
        check_image_arg(image)
    pipe = load_pipeline(args)
    session = ChatSession(pipe, Path(args.out_dir), sampling_kwargs(args), args.max_new_tokens)
    for image in args.image or []:
        session.add_image(image)
    if args.prompt is not None:
        print(session.ask(args.prompt))
        return 0
    return interactive(session, sys.stdin, sys.stdout)
