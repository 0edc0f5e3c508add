"""``unigen data synth``: write the synthetic shapes corpus and print what was written."""
from __future__ import annotations


def run(args) -> int:
    import time

    from unigen.model.data.synth.writers import write_corpus
    start = time.time()
    manifest = write_corpus(args.out, seed=args.seed, scale=args.scale)
    print(f"wrote the synthetic shapes corpus to {args.out} (seed {args.seed}, scale {args.scale}) "
          f"in {time.time() - start:.1f}s:")
    for name, info in manifest["written"].items():
        extra = "".join(f", {k} {v}" for k, v in info.items() if k not in ("format", "records", "uri"))
        print(f"  {name:22s} {info['format']:14s} {info['records']:5d} records{extra}  {args.out}/{info['uri']}")
    print(f"  manifest.json lists a ready data.sources entry for each ({len(manifest['sources'])} sources) and "
          f"eval.sources entries for the held-out split ({len(manifest['heldout_sources'])})")
    return 0
