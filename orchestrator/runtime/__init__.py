"""The per-rank training runtime: ``python -m unigen.orchestrator.runtime RUN_DIR``.

Every launcher (local, SLURM, Ray) ends up starting this module once per rank with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment. It reads the resolved recipe from the run's
run.json, so what runs is exactly what was validated and recorded.
"""
