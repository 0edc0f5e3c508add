"""Instruction editing, single and multi-turn.

Record forms, all through the same canonical fields (``source``, ``instruction``, ``target``):
- one pair per row/line (InstructPix2Pix ``original_image``/``edit_prompt``/``edited_image``,
  SEED-Data-Edit Part 1/2 JSONL); OmniEdit's ``src_img``/``edited_prompt_list``/``edited_img`` is a pair
  whose instruction is a list of phrasings of the same edit: the sample's RNG picks one;
- a session grouped from rows by ``session``/``turn`` (MagicBrush ``img_id``/``turn_index``): the reader
  groups them, so one record = one session;
- a session in one record: ``instruction`` and ``target`` hold lists of the same length, or the field
  names contain ``{n}`` (e.g. ``instruction_{n}``, ``target_image_{n}``) and turns 1, 2, ... are read
  until one is missing (SEED-Data-Edit Part 3 style; map the names in the recipe).
Conversation: user [image source, text instruction 1], assistant [image_gen target 1], user [image
target 1, text instruction 2], assistant [image_gen target 2], ... - each turn's target is fed back as
the next turn's input, whatever the row's own source column says.
``options.reasoning`` adds a GoT reasoning chain (OmniEdit-GoT's ``got`` with its ``coord`` boxes): one
per row of a grouped session (a row without one is a bad record), else one for the record's first turn
(see ``tasks.reasoning``).
"""
from __future__ import annotations

from unigen.model.data import fields as F
from unigen.model.data.errors import BadRecord
from unigen.model.data.tasks import reasoning as R
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, require, text, user


class Edit(TaskAdapter):
    task = "edit"
    default_fields = {
        "source": "original_image;source_img;source_image;input_image;src_img",
        "instruction": "edit_prompt;instruction;instructions;prompt;edit_instruction;edited_prompt_list",
        "target": "edited_image;target_img;target_image;target_images;output_image;edited_img",
        "session": "img_id",
        "turn": "turn_index",
        **R.FIELDS,
    }
    default_options = {"max_turns": 5, **R.OPTION}
    session_fields = ("session", "turn")
    templates = ("{instruction}",)

    def validate_options(self, where):
        self.reasoning = R.mode(self.options, where)

    def convert(self, record, ctx):
        source, turns = self._turns(record, ctx)
        require(bool(turns), "edit record without any turn")
        chains = self._chains(record)
        first, _ = self.fit(source)
        messages, current = [], first
        for k, (instruction, target) in enumerate(turns[: int(self.options["max_turns"])]):
            target_img, _ = self.fit(target)
            chain = chains[k] if k < len(chains) else None
            prompt = R.user_text(self.instruction(ctx, instruction=instruction), chain, self.reasoning)
            messages.append(user(image(current), text(prompt)))
            messages.append(assistant(*R.answer_items(chain, self.reasoning), image_gen(target_img)))
            current = target_img
        return messages

    def _chains(self, record) -> list:
        """Reasoning chain per turn (empty when the option is off): one per grouped row, else one for
        the record's first turn."""
        if not self.reasoning:
            return []
        if "rows" in record:
            return [R.chain(r, self.fields, f"turn {k + 1} reasoning") for k, r in enumerate(record["rows"])]
        return [R.chain(record, self.fields)]

    def _turns(self, record, ctx):
        """(source image, [(instruction, target image), ...]) from any of the record forms."""
        if "rows" in record:  # grouped session
            rows = record["rows"]
            require(bool(rows), "empty session")
            source = self.image(rows[0], "source", ctx)
            turns = [(F.as_text(F.lookup(r, self.fields["instruction"]), f"turn {k + 1} instruction"),
                      F.decode_image(F.lookup(r, self.fields["target"]), f"turn {k + 1} target", ctx.resolve))
                     for k, r in enumerate(rows)]
            return source, turns
        source = self.image(record, "source", ctx)
        if "{n}" in self.fields["instruction"] or "{n}" in self.fields["target"]:
            return source, self._numbered(record, ctx)
        instr = F.lookup(record, self.fields["instruction"])
        target = F.lookup(record, self.fields["target"])
        if isinstance(instr, (list, tuple)) or hasattr(instr, "tolist"):
            instrs = F.as_text_list(instr, "instruction")
            if not (isinstance(target, (list, tuple)) or hasattr(target, "tolist")):
                # One target, several instructions: phrasings of one edit (OmniEdit's edited_prompt_list).
                chosen = instrs[ctx.rng.randrange(len(instrs))]
                return source, [(chosen, F.decode_image(target, "target", ctx.resolve))]
            targets = list(target.tolist() if hasattr(target, "tolist") else target)
            require(len(targets) == len(instrs),
                    f"{len(instrs)} instructions but {len(targets)} targets: a session needs one target per turn")
            return source, [(i, F.decode_image(t, f"turn {k + 1} target", ctx.resolve))
                            for k, (i, t) in enumerate(zip(instrs, targets))]
        return source, [(F.as_text(instr, "instruction"), F.decode_image(target, "target", ctx.resolve))]

    def _numbered(self, record, ctx):
        turns = []
        for n in range(1, int(self.options["max_turns"]) + 1):
            ispec = self.fields["instruction"].replace("{n}", str(n))
            tspec = self.fields["target"].replace("{n}", str(n))
            instr = F.lookup_optional(record, ispec)
            if instr is None:
                break
            try:
                target = F.lookup(record, tspec)
            except BadRecord:
                raise BadRecord(f"turn {n}: instruction {ispec!r} present but target {tspec!r} missing") from None
            turns.append((F.as_text(instr, ispec), F.decode_image(target, tspec, ctx.resolve)))
        return turns
