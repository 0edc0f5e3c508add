"""unigen.orchestrator: recipes, cluster profiles, the ``unigen`` CLI, launchers, the per-rank
training runtime, checkpoints and their sync, and tracking.

Importing this package must not import torch, deepspeed, mlflow, ray or boto3 (tested): heavy
imports live inside the functions that need them.
"""
__version__ = "0.1.0"
