"""``unigen prefetch RECIPE... --profile P [KEY=VALUE...]``: fetch the pretrained weights once, before the job.

Resolves the recipes as ``unigen validate`` does, collects every hub repository their models load from
(backbone, tokenizer, Sana transformer + DC-AE) at the presets' pinned revisions, and downloads them into
the hub cache the profile's ranks read (env HF_HUB_CACHE or HF_HOME of the profile, else this shell's,
else ~/.cache/huggingface/hub). Run it where the hub is reachable (a login node) and the cache is mounted;
rerunning it fetches only what is missing. Prints each file fetched with its size and a summary line.
Exit 0 when everything is cached, 1 when a download failed, 2 for a usage or recipe error.
"""
from __future__ import annotations

import argparse
import os
import sys

from unigen.orchestrator.commands.inputs import split_inputs
from unigen.orchestrator.errors import UserError


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator import weights_cache as wc
    from unigen.orchestrator.config import resolve_submission

    recipes, overrides = split_inputs(list(args.inputs))
    if not recipes:
        raise UserError("no recipe file given: unigen prefetch RECIPE.yaml [RECIPE.yaml ...] --profile P [KEY=VALUE ...]")
    sub = resolve_submission(recipes, args.profile, overrides, purpose="validate")
    cache_dir, origin = wc.cache_dir_for(sub.profile)
    weights = wc.submission_weights(sub)
    if not weights:
        print(f"nothing to fetch: {', '.join(recipes)} load(s) no weights from the hub (random parts, local "
              "folders and assets:// sources need none)")
        return 0
    # huggingface_hub reads either variable as "never touch the network".
    offline = [n for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if wc.env_true(os.environ.get(n))]
    if offline:
        raise UserError(f"{' and '.join(offline)} set in this shell, and prefetch downloads from the hub: run it "
                        "where the hub is reachable, without it: env " + " ".join(f"-u {n}" for n in offline)
                        + f" {wc.prefetch_command(args.inputs, args.profile)}")
    if "HF_HOME" not in sub.profile.env and "HF_HUB_CACHE" not in sub.profile.env:
        print(f"warning: profile {sub.profile.name} sets no env HF_HOME: its ranks read the cache of whatever "
              "environment they inherit; set profile env HF_HOME to a folder every node mounts", file=sys.stderr)
    endpoint = os.environ.get("HF_ENDPOINT")
    print(f"prefetch into {cache_dir} ({origin}) for profile {sub.profile.name}"
          + (f" from {endpoint}" if endpoint else ""))
    try:
        done = wc.prefetch(weights, cache_dir)
    except wc.PrefetchError as err:
        print(f"error: {err}", file=sys.stderr)
        print("error: files fetched so far stay in the cache: rerun the same command to fetch the rest",
              file=sys.stderr)
        return 1
    fetched = sum(len(d.fetched) for d in done)
    cached = sum(len(d.cached) for d in done)
    print(f"\nprefetch: {len(done)} repositor{'y' if len(done) == 1 else 'ies'}, {fetched} file(s) fetched "
          f"({wc.human_bytes(sum(sum(d.fetched.values()) for d in done))}), {cached} already cached "
          f"({wc.human_bytes(sum(sum(d.cached.values()) for d in done))}), sizes verified, in {cache_dir}")
    return 0
