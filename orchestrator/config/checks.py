"""Checks that span fields (pydantic checks each field on its own): a recipe's or a profile's
values that are each fine but do not fit together, or that another part of unigen would refuse later."""
from __future__ import annotations

from typing import Callable

from unigen.orchestrator.config.eval_checks import eval_problems
from unigen.orchestrator.config.profile import ENV_NAME, SLURM_TIME, Profile
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.config.salvage import Salvaged
from unigen.orchestrator.config.yamlload import Locations
from unigen.orchestrator.errors import Problem, UserError

# Generated DeepSpeed keys that recipe fields own: setting them raw would contradict the recipe.
RESERVED_DEEPSPEED = {
    "train_batch_size": "train.global_batch_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.global_batch_size (accumulation is derived from it)",
    "gradient_clipping": "train.grad_clip",
    "optimizer": "train.lr / betas / eps / weight_decay (the runtime passes a torch AdamW)",
    "scheduler": "train.warmup_steps / min_lr_ratio",
    "bf16": "train.precision",
    "fp16": "train.precision (fp16 is not supported: use bf16)",
}


def _tracking_uri_problem(uri: str | None, path: tuple, locs: Locations) -> list[Problem]:
    if uri is None:
        return []
    from unigen.orchestrator.tracking.store import check_uri

    try:
        check_uri(uri, "it")
    except UserError as err:
        return [locs.problem(path, str(err).replace("it is ", "", 1))]
    return []


def uri_scheme_problem(uri: str | None, path: tuple, locs: Locations) -> list[Problem]:
    if not uri or "://" not in uri:
        return []
    from fsspec.registry import known_implementations

    scheme = uri.split("://", 1)[0].lower()
    if scheme not in known_implementations and scheme != "file":
        return [locs.problem(path, f"unknown storage scheme {scheme + '://'!r}: use s3://bucket/prefix, "
                             "gs://..., or a local path")]
    return []


def recipe_problems(part: Salvaged[Recipe], model_config: dict | None, locs: Locations) -> list[Problem]:
    """Cross-field problems of a recipe, checked where the fields a check reads are not in doubt
    (salvage.py: its schema problems are reported beside these), so one pass lists every problem.
    ``init_from`` is checked by init_check.py, which needs the run root."""
    recipe, ok = part.value, part.readable
    out = _train_problems(recipe, ok, locs)
    if ok(("deepspeed", "config")):
        out += [locs.problem(("deepspeed", "config", key), f"set by unigen from the recipe: use {owner}")
                for key, owner in RESERVED_DEEPSPEED.items() if key in recipe.deepspeed.config]
        zero = recipe.deepspeed.config.get("zero_optimization")
        if isinstance(zero, dict) and "stage" in zero:
            out.append(locs.problem(("deepspeed", "config", "zero_optimization", "stage"), "use deepspeed.zero_stage"))
    if model_config is not None and ok(("data", "image_size")) and model_config.get("image_size") != \
            recipe.data.image_size:
        out.append(locs.problem(("data", "image_size"), f"{recipe.data.image_size} differs from the model's image_size "
                                f"{model_config.get('image_size')}: set model.image_size={recipe.data.image_size} "
                                "too (or change data.image_size)"))
    if model_config is not None and model_config.get("compile_blocks") and ok(("deepspeed", "zero_stage")) and \
            recipe.deepspeed.zero_stage == 3:
        out.append(locs.problem(("model", "compile_blocks"), "ZeRO-3 gathers each layer's parameters in hooks that "
                                "torch.compile cannot trace, so every block breaks into per-layer graphs and "
                                "buys nothing: set deepspeed.zero_stage to 2 (or 0/1), or leave compile_blocks off"))
    if ok(("checkpoint", "uri")):
        out += uri_scheme_problem(recipe.checkpoint.uri, ("checkpoint", "uri"), locs)
    if ok(("data", "image_size")) and part.intact(("data", "sources")):
        out += source_problems(recipe.data.sources, ("data", "sources"), recipe.data.image_size, locs, ok)
    if ok(("tracking", "tracking_uri")):
        out += _tracking_uri_problem(recipe.tracking.tracking_uri, ("tracking", "tracking_uri"), locs)
    if part.intact(("eval", "sources")) and ok(("data", "image_size")):
        out += source_problems(recipe.eval.sources, ("eval", "sources"), recipe.data.image_size, locs, ok)
    if ok(("eval",)):
        out += eval_problems(recipe, locs, with_data=ok(("data",)))
    return out


def _train_problems(recipe: Recipe, ok: Callable[..., bool], locs: Locations) -> list[Problem]:
    out: list[Problem] = []
    train = recipe.__dict__.get("train")  # absent when the section could not be salvaged
    if train is None:
        return out
    if ok(("train", "warmup_steps"), ("train", "max_steps")) and train.warmup_steps >= train.max_steps:
        out.append(locs.problem(("train", "warmup_steps"), f"{train.warmup_steps} warmup steps leave no training "
                                f"after them (max_steps={train.max_steps}): make warmup_steps < max_steps"))
    if ok(("train", "micro_batch_size"), ("train", "global_batch_size")) and \
            train.micro_batch_size > train.global_batch_size:
        out.append(locs.problem(("train", "micro_batch_size"), f"{train.micro_batch_size} is larger than "
                                f"train.global_batch_size={train.global_batch_size}: lower it"))
    return out


def source_problems(sources: list, prefix: tuple, image_size: int, locs: Locations,
                    ok: Callable[..., bool]) -> list[Problem]:
    """Each source's URI scheme, and its field mapping and options as the data package's own adapters
    check them; problems are placed under ``prefix`` (data.sources or eval.sources). Sources with keys in
    doubt (``ok`` says no, see salvage.py) are left to their schema problems."""
    out: list[Problem] = []
    sources = [(i, src) for i, src in enumerate(sources) if ok(prefix + (i,))]
    for i, src in sources:
        out += uri_scheme_problem(src.uri, prefix + (i, "uri"), locs)
    from unigen.model.data.tasks import make_adapter

    for i, src in sources:
        where = ".".join(map(str, prefix + (i,)))
        try:
            make_adapter(src, image_size, where=where)
        except ValueError as err:
            text = str(err).splitlines()[0]
            head = text.split(":", 1)[0]  # "<where>.options.templates: ...": the part of the source at fault
            path = prefix + (i,) + (("options",) if ".options" in head else ("fields",) if ".fields" in head else ())
            message = text.split(": ", 1)[1] if text.startswith(where) and ": " in text else text
            out.append(locs.problem(path, message))
    return out


def slurm_time_seconds(text: str) -> int:
    """Seconds of an sbatch --time value (already matched by SLURM_TIME)."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
    elif len(parts) == 1:  # minutes
        return parts[0] * 60
    # [D-]HH:MM:SS or MM:SS: each part counts 60 times the one after it
    return int(days or 0) * 86400 + sum(p * 60 ** k for k, p in enumerate(reversed(parts)))


def profile_problems(part: Salvaged[Profile], locs: Locations) -> list[Problem]:
    """Cross-field problems of a profile, checked where its fields are not in doubt (salvage.py)."""
    profile, ok = part.value, part.readable
    out: list[Problem] = []
    if not ok(("launcher",)):
        return out  # every other check depends on it
    for other in ("local", "slurm", "ray"):
        if other != profile.launcher and other in profile.model_fields_set and ok((other,)) and \
                getattr(profile, other) is not None:
            out.append(locs.problem((other,), f"this profile's launcher is {profile.launcher}, so this section would "
                                    f"be ignored: remove it, or set launcher: {other}"))
    if ok(("resources",)):
        res, given = profile.resources, profile.resources.model_fields_set
        if profile.launcher == "local":
            for key, fix in (("nodes", "the local launcher runs on this machine only"),
                             ("gpus_per_node", "it uses every visible GPU (limit them with CUDA_VISIBLE_DEVICES)"),
                             ("ranks_per_node", "set local.cpu_ranks for CPU ranks; GPUs get one rank each")):
                if key in given and getattr(res, key) != type(res).model_fields[key].default:
                    out.append(locs.problem(("resources", key), f"not used by launcher: local ({fix}): remove it"))
        elif profile.launcher == "slurm":
            if ok(("slurm",)):
                out += _slurm_problems(profile, locs)
        else:
            out += [locs.problem(("resources", key), "not used by launcher: ray: size the job with ray.workers and "
                                 "ray.gpus_per_worker") for key in ("nodes", "gpus_per_node", "ranks_per_node")
                    if key in given]
    if ok(("env",)):
        out += [locs.problem(("env", name), "not a valid environment variable name (letters, digits, _)")
                for name in profile.env if not ENV_NAME.match(name)]
    if ok(("tracking", "tracking_uri")):
        out += _tracking_uri_problem(profile.tracking.tracking_uri, ("tracking", "tracking_uri"), locs)
    return out


def _slurm_problems(profile: Profile, locs: Locations) -> list[Problem]:
    out: list[Problem] = []
    res, slurm = profile.resources, profile.slurm
    if res.gpus_per_node == 0 and res.ranks_per_node is None:
        out.append(locs.problem(("resources",), "a CPU job (gpus_per_node: 0) needs resources.ranks_per_node: "
                                "the number of training processes per node"))
    if res.gpus_per_node and res.ranks_per_node not in (None, res.gpus_per_node):
        out.append(locs.problem(("resources", "ranks_per_node"), f"{res.ranks_per_node} with {res.gpus_per_node} GPUs "
                                "per node: unigen runs one rank per GPU; remove ranks_per_node"))
    if slurm.time is not None:
        if not SLURM_TIME.match(slurm.time):
            out.append(locs.problem(("slurm", "time"), f"{slurm.time!r} is not an sbatch time: write minutes or "
                                    "[D-]HH:MM:SS in quotes, e.g. \"24:00:00\""))
        elif slurm.signal_grace_s >= slurm_time_seconds(slurm.time):
            out.append(locs.problem(("slurm", "signal_grace_s"), f"{slurm.signal_grace_s} s is not shorter than the "
                                    f"time limit {slurm.time}: lower it or raise slurm.time"))
    for i, line in enumerate(slurm.extra_sbatch):
        if "\n" in line or not line.startswith("--") or line.startswith("--=") or len(line) < 3:
            out.append(locs.problem(("slurm", "extra_sbatch", i), "write one sbatch option per item as --key=value "
                                    "or --flag (no #SBATCH prefix, no newlines)"))
    out += [locs.problem(("slurm", "setup", i), "one shell line per item: split it at the newline")
            for i, line in enumerate(slurm.setup) if "\n" in line]
    return out
