"""The runtime the tests run the smoke recipes in. The recipes themselves are sized for a user's first run
(a global batch of 32 over 2 ranks without ZeRO: the fastest way to train the tiny-shapes model on 2 cores, see
runbooks/performance.md); the tests exercise the cluster path instead (ZeRO-3 partitioned over 2 ranks)
at a batch small enough for minutes on 2 cores, keep three checkpoints (the resume tests pick among them),
and keep the end-of-run suite evaluation short."""
from __future__ import annotations

SHAPE = ["deepspeed.zero_stage=3", "train.global_batch_size=8", "train.micro_batch_size=2", "checkpoint.keep_last=3",
         "eval.suite_samples=4", "eval.num_inference_steps=4"]
