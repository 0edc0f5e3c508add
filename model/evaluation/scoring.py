"""Judging shapes pictures against what was asked, from the detector's readings (``detect.read_image``).

- Text-to-image, GenEval's rules on the shapes world (Ghosh et al. 2023, section 3): a single object is
  there; both of two objects are there; exactly N of the counted kind; the named kind in the named colour;
  both coloured objects; the first object on the named side of the second (centres; the named axis
  dominates and differs by 5 % of the side). Plus three attribute accuracies: the wall's colour (every
  prompt names one) and, for "a <colour> <kind>" prompts, the colour and the kind of the largest shape.
- Edits (single, multi-turn, several images in, interleaved): the output read as the same wall and the
  same (kind, colour) shapes as the ground-truth target (``success``); for an edit of a source, also
  whether the instructed change happened (what the target adds, removes or recolours, and its wall) and
  whether the rest stayed (the shapes the edit keeps, the wall when it is not edited, nothing new beyond
  what the edit asks for). Copying the input therefore scores change 0, rest 1.
"""
from __future__ import annotations

from collections import Counter

from unigen.model.data.synth.prompts import relation_holds
from unigen.model.evaluation.detect import Reading


def t2i_correct(request, reading: Reading, side: int) -> bool:
    """GenEval's check of one picture for its prompt (see the module docstring)."""
    family, wanted = request.family, request.objects
    if family == "single_object":
        return bool(reading.of_kind(wanted[0].kind))
    if family == "counting":
        return len(reading.of_kind(wanted[0].kind)) == request.count
    if family in ("two_object", "colors", "color_attr"):
        return all(_has(reading, w.kind, w.colour) for w in wanted)
    if family == "position":
        return any(relation_holds(request.relation, (a.cx, a.cy), (b.cx, b.cy), side)
                   for a in reading.of_kind(wanted[0].kind) for b in reading.of_kind(wanted[1].kind))
    raise ValueError(f"unknown prompt family {family!r}")


def _has(reading: Reading, kind: str, colour: str | None) -> bool:
    return any(o.kind == kind and (colour is None or o.colour == colour) for o in reading.objects)


def attributes(request, reading: Reading) -> dict[str, bool]:
    """background (when named); colour and shape of the largest shape for a single coloured object."""
    out = {}
    if request.background:
        out["background"] = reading.background == request.background
    if request.family == "colors":
        largest = reading.largest()
        out["colour"] = largest is not None and largest.colour == request.objects[0].colour
        out["shape"] = largest is not None and largest.kind == request.objects[0].kind
    return out


def _pairs(reading: Reading) -> Counter:
    return Counter((o.kind, o.colour) for o in reading.objects)


def same_scene(output: Reading, target: Reading) -> bool:
    return output.background == target.background and _pairs(output) == _pairs(target)


def edit_outcome(output: Reading, target: Reading, source: Reading) -> dict[str, bool]:
    """success (output reads as the target), change (the edit happened), rest (nothing else moved)."""
    have, want, before = _pairs(output), _pairs(target), _pairs(source)
    added, removed, kept = want - before, before - want, before & want
    wall_edited = target.background != source.background
    change = (all(have[p] >= n for p, n in added.items()) and all(have[p] < before[p] for p in removed)
              and (not wall_edited or output.background == target.background))
    # A shape the edit should have removed or recoloured but did not is a failed change, not a moved rest.
    rest = (all(have[p] >= n for p, n in kept.items()) and not (have - want - removed)
            and (wall_edited or output.background == source.background))
    return {"success": same_scene(output, target), "change": change, "rest": rest}
