"""``launcher: slurm`` (runbooks/running-on-slurm.md), torch-free.

Submitting side: ``launcher`` (the ``Launcher``: submit, wait, cancel, status) and ``submission``
(submitit's executor: renders, submits and cancels the job). Job side: ``job`` (the driver that
submitit runs once on the batch host), ``task`` (one per rank, started by the driver's srun) and
``policy`` (complete, requeue or give up). ``tools``: the scontrol and scancel --signal calls.
"""
