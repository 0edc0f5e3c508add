"""The ``unigen`` command: argument parsing and dispatch, nothing heavy.

Each subcommand lives in ``unigen.orchestrator.commands.<name>`` as ``run(args) -> int`` and is imported
only when it runs, so ``unigen --help`` imports argparse and this file (no pydantic, torch, mlflow...).
``unigen data ...`` is registered by the data package (``unigen.model.data.cli.add_subcommands``),
loaded only when the command line starts with ``data``.

Exit codes: 0 success; 1 the command ran and failed (e.g. a run failed); 2 a usage or input error
(printed as ``error: ...`` lines, one per problem, never a traceback); 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from unigen.orchestrator import __version__
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.exitcodes import EXIT_INTERRUPTED, EXIT_USAGE

# Kept equal to unigen.orchestrator.runs.STATUSES by a test (importing runs here would slow --help).
RUN_STATUSES = ("queued", "running", "requeued", "completed", "failed", "cancelled")
STAGES = ("pretrain", "instruct")
# Kept equal to unigen.model.evaluation.suites.SUITES by a test (for `unigen eval --help` without numpy).
EVAL_SUITES = ("t2i", "edit", "edit_multiturn", "multi_image", "interleaved", "depth", "normal", "segmentation",
               "pose", "grounding", "understanding")

_EPILOG = """examples:
  unigen data synth --out unigen-data/shapes
  unigen submit recipes/smoke-pretrain.yaml recipes/smoke-instruct.yaml --profile local --wait
  unigen validate recipes/pretrain.yaml --profile slurm-a100 train.micro_batch_size=8
  unigen runs --stage pretrain
  unigen generate --run smoke-instruct --prompt "a red circle" --out circle.png
  unigen eval smoke-instruct --suite edit depth --samples 16

docs: runbooks/first-run.md, runbooks/recipes-and-overrides.md, runbooks/evaluation.md,
      runbooks/troubleshooting.md"""

_RUN_HELP = "run id, unique id prefix or run folder"
_INPUTS_HELP = ("recipe files (several = stages in order, each started from the previous run) and "
                "KEY=VALUE overrides, e.g. train.lr=5e-5 data.sources.0.weight=0.5 instruct:train.max_steps=50 "
                "profile.resources.nodes=4")


def _add_recipe_commands(sub) -> None:
    """submit, validate and prefetch: recipe files and KEY=VALUE overrides on a cluster profile."""
    p = sub.add_parser("submit", help="start training: one run per recipe, in order",
                       description="Validate the recipes against the profile, create one run per recipe and "
                       "launch them in order (stage N+1 starts from stage N's final checkpoint).")
    p.add_argument("inputs", nargs="+", metavar="RECIPE|KEY=VALUE", help=_INPUTS_HELP)
    p.add_argument("--profile", required=True, metavar="P", help="cluster profile: a name (P.yaml in "
                   "./cluster_profiles, $UNIGEN_PROFILES_DIR, or ../cluster_profiles next to the recipe) or a path")
    p.add_argument("--name", help="run name (default: the recipe's name); run ids are <name>-<time>-<hex>")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config of every stage and submit nothing")
    p.add_argument("--wait", action="store_true", help="stay attached: show progress until every stage ends")

    p = sub.add_parser("validate", help="check recipes and a profile; print the resolved config and memory per GPU",
                       description="Check recipe files (with their base and overrides) against a profile without "
                       "running anything: every problem is listed with its file and line. On success prints the "
                       "resolved config, the derived batch numbers, the DeepSpeed config and a memory estimate.")
    p.add_argument("inputs", nargs="*", metavar="RECIPE|KEY=VALUE",
                   help=_INPUTS_HELP + " (none: check the profile only)")
    p.add_argument("--profile", default="local", metavar="P", help="cluster profile, as for submit (default: local)")
    p.add_argument("--quiet", action="store_true", help="print only the summary lines, not the resolved configs")
    p.add_argument("--fields", action="store_true", help="print every recipe and profile field with its type, "
                   "default and description, then exit")

    p = sub.add_parser("prefetch", help="download the pretrained weights the recipes name into the profile's cache",
                       description="Fetch every hub repository the recipes' models load from (backbone, tokenizer, "
                       "Sana transformer and DC-AE, at the presets' pinned revisions) into the hub cache the "
                       "profile's ranks read (its env HF_HOME), so offline jobs find them. Resumable: a rerun "
                       "fetches only what is missing. See runbooks/new-cluster-profile.md.")
    p.add_argument("inputs", nargs="+", metavar="RECIPE|KEY=VALUE", help=_INPUTS_HELP)
    p.add_argument("--profile", required=True, metavar="P", help="cluster profile, as for submit")


def _add_run_commands(sub) -> None:
    """The commands on the runs under a run root (each takes --run-root) and on the models they trained."""
    parsers = []

    def command(name: str, help: str, *, run: bool = False, **kwargs) -> argparse.ArgumentParser:
        """A subcommand on the runs (with the RUN positional when ``run``); it gets --run-root below."""
        p = sub.add_parser(name, help=help, **kwargs)
        if run:
            p.add_argument("run", metavar="RUN", help=_RUN_HELP)
        parsers.append(p)
        return p

    p = command("status", "state of one run, or of every run")
    p.add_argument("run", nargs="?", metavar="RUN", help=_RUN_HELP + " (default: all runs)")

    p = command("runs", "table of runs (stage, status, step, loss, checkpoint, MLflow id)")
    p.add_argument("--experiment", metavar="E", help="only runs of this MLflow experiment")
    p.add_argument("--stage", choices=STAGES, help="only runs of this stage")
    p.add_argument("--status", choices=RUN_STATUSES, help="only runs in this state")
    p.add_argument("--sync", action="store_true", help="send tracking calls spooled while MLflow was unreachable")

    command("lineage", "where a model came from: data -> stage runs -> checkpoints -> export", run=True)

    p = command("ui", "start the MLflow UI for the runs' tracking store (127.0.0.1)")
    p.add_argument("--port", type=int, metavar="P", help="port (default 5000, or a free one)")

    p = command("generate", "generate images with a trained run or checkpoint",
                description="Generate from a prompt (with any number of input images) or from a "
                "conversation file whose empty image_gen slots are filled in order, each seeing the "
                "images before it. See runbooks/generating.md.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="a run: its exported model, else its last checkpoint")
    src.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or exported model folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", metavar="TEXT", help="what to draw (or the edit instruction)")
    what.add_argument("--conversation", metavar="FILE", help="a JSON or YAML list of messages with one or more "
                      "empty image_gen slots (image paths relative to the file)")
    p.add_argument("--image", action="append", metavar="IN", help="input image, before the prompt text; "
                   "repeat for several, in order (e.g. 'put the circle of the second image into the first')")
    p.add_argument("--out", required=True, metavar="OUT.png", help="where to write the image; with several "
                   "slots OUT-1.png, OUT-2.png, ...")

    def sampling_options(p: argparse.ArgumentParser) -> None:  # generate and chat sample alike
        p.add_argument("--steps", type=int, metavar="N", help="sampling steps (default 20)")
        p.add_argument("--guidance", type=float, metavar="G", help="text guidance scale (default 4.5; 1 = off)")
        p.add_argument("--image-guidance", type=float, metavar="G", help="image guidance scale, used when there "
                       "are input images (default 1.5; 1 = off)")
        p.add_argument("--seed", type=int, metavar="S", help="sampling seed (slot k of a conversation uses S + k)")

    sampling_options(p)
    p.add_argument("--height", type=int, metavar="H", help="image height in pixels")
    p.add_argument("--width", type=int, metavar="W", help="image width in pixels")

    p = command("chat", "talk with a trained run: questions about images, and images drawn or edited",
                description="With --prompt: one answer about the --image inputs. Without: an interactive "
                "session on stdin (a pipe works too): a line is a question; /image PATH adds an input "
                "image; /gen TEXT (or /draw) draws, or edits the latest image; /reset; /quit.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help=_RUN_HELP)
    src.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or exported model folder")
    p.add_argument("--image", action="append", metavar="IN", help="image to ask about (repeat for several); "
                   "in a session, input images of the first turn")
    p.add_argument("--prompt", metavar="TEXT", help="the question (one answer, then exit)")
    p.add_argument("--out-dir", default="unigen-chat", metavar="DIR", help="where a session writes its images, "
                   "turn-<k>.png (default: ./unigen-chat)")
    sampling_options(p)
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="longest answer in tokens")

    p = command("eval", "score a run's model on the evaluation suites (t2i, edit, depth, ...)", run=True,
                description="Generate from held-out cases of each task and score them with the task's "
                "standard metric beside a trivial baseline. Results: a table here, --out (suites.json, "
                "suites.md, pictures), eval.jsonl, run.json and MLflow. See runbooks/evaluation.md.")
    p.add_argument("--step", type=int, metavar="N", help="evaluate checkpoints/step-N (default: the final model: "
                   "the export, else the newest checkpoint)")
    p.add_argument("--suite", nargs="+", action="extend", metavar="S", help="suites to run (default: the recipe's "
                   "eval.suites, else all): " + " ".join(EVAL_SUITES))
    p.add_argument("--samples", type=int, metavar="N", help="cases per suite (default: the recipe's "
                   "eval.suite_samples)")
    p.add_argument("--out", metavar="DIR", help="folder for suites.json, suites.md and the pictures (default: "
                   "<run>/eval/step-<N>/)")
    p.add_argument("--steps", type=int, metavar="N", help="sampling steps (default: the recipe's "
                   "eval.num_inference_steps)")
    p.add_argument("--guidance", type=float, metavar="G", help="text guidance scale (default: the recipe's "
                   "eval.guidance_scale)")
    p.add_argument("--image-guidance", type=float, metavar="G", help="image guidance scale (default: the "
                   "recipe's eval.image_guidance_scale)")
    p.add_argument("--seed", type=int, metavar="S", help="cases and noise (default: the recipe's eval.seed)")

    p = command("export", "ZeRO-3 checkpoint -> a UniGenPipeline.from_pretrained folder", run=True)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the model into")
    p.add_argument("--last-weights", action="store_true",
                   help="the weights after the last step instead of their average (runs with train.ema_decay)")

    p = command("resume", "restart a stopped run from its newest verified checkpoint", run=True)
    p.add_argument("--plan", action="store_true",
                   help="only print which checkpoint would load and why newer ones would not")
    p.add_argument("--wait", action="store_true", help="stay attached until the run ends")

    command("cancel", "stop a run (it saves a checkpoint first)", run=True)

    p = command("logs", "print a run's logs", run=True)
    p.add_argument("--rank", type=int, metavar="R", help="only this rank's log (default: the launcher's and rank 0's)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the run ends")

    for p in parsers:  # last, so that --run-root ends every command's option list
        p.add_argument("--run-root", metavar="DIR", help="folder holding the runs (default: $UNIGEN_RUN_ROOT, "
                       "else ./unigen-runs)")


def _add_data(sub, load: bool) -> None:
    p = sub.add_parser("data", help="prepare and inspect datasets (synth, check, preview, encode)",
                       description="Dataset tools of unigen.model.data.")
    p.set_defaults(data_parser=p)
    if not load:
        return  # `unigen --help` stays fast: the data commands are only built for `unigen data ...`
    try:
        module = importlib.import_module("unigen.model.data.cli")
    except ModuleNotFoundError as err:
        if err.name != "unigen.model.data.cli":
            raise
        p.set_defaults(unavailable="unigen.model.data.cli")
        return
    module.add_subcommands(p.add_subparsers(dest="data_command", metavar="COMMAND"))


def build_parser(load_data: bool = False) -> argparse.ArgumentParser:
    """The whole ``unigen`` parser (``load_data``: also build the ``unigen data`` subcommands)."""
    parser = argparse.ArgumentParser(prog="unigen", description="Train and use unified image understanding + "
                                     "generation models: recipes (what to train) on cluster profiles (where).",
                                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"unigen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_recipe_commands(sub)
    _add_run_commands(sub)
    _add_data(sub, load_data)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "data":
        if getattr(args, "unavailable", None):
            print(f"error: `unigen data` is not available in this build ({args.unavailable} is missing)",
                  file=sys.stderr)
            return EXIT_USAGE
        func = getattr(args, "func", None)
        if func is None:
            args.data_parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(func(args) or 0)
    module_name = f"unigen.orchestrator.commands.{args.command}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise  # a dependency of the command is missing: that is not "command not built yet"
        print(f"error: `unigen {args.command}` is not available in this build ({module_name} is missing)",
              file=sys.stderr)
        return EXIT_USAGE
    return int(module.run(args) or 0)


def report_user_error(err: UserError) -> None:
    """Print a user error as ``error: ...`` lines (one per problem) on stderr, secrets scrubbed."""
    from unigen.orchestrator.secrets import scrub

    for line in scrub(str(err)).splitlines() or ["(no message)"]:
        if line.strip():
            print(line if line.startswith("error: ") else f"error: {line}", file=sys.stderr)


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse a command line; exits 2 with usage on a malformed one (argparse's own behaviour)."""
    parser = build_parser(load_data=bool(argv) and argv[0] == "data")
    # Overrides may follow options (`submit R.yaml --profile P train.lr=1e-4`), which argparse leaves
    # unparsed after a positional list: take those back as inputs of submit / validate.
    args, extras = parser.parse_known_args(argv)
    if extras:
        if args.command in ("submit", "validate", "prefetch") and not any(e.startswith("-") for e in extras):
            args.inputs = list(args.inputs) + extras
        else:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return parser, args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unigen`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, args = parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except UserError as err:
        report_user_error(err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `unigen runs | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
