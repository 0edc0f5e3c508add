"""Committed checkpoints: the save protocol, verification, resume planning, and S3/shared-path sync.

See DESIGN.md section 6 and runbooks/checkpoint-recovery.md. Importing this package pulls in no
torch, boto3, s3fs or mlflow: fsspec/s3fs load when a remote is first used, torch only through
``unigen.orchestrator.comm.TorchComm``.
"""
from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.checkpoint.layout import COMMIT_NAME, LATEST_NAME, QUARANTINE_DIR, manifest_name, step_dir_name
from unigen.orchestrator.checkpoint.manager import CheckpointManager
from unigen.orchestrator.checkpoint.plan import Candidate, ResumePlan
from unigen.orchestrator.checkpoint.protocol import CheckpointInfo
from unigen.orchestrator.checkpoint.transfer import TransferPolicy

__all__ = [
    "COMMIT_NAME",
    "LATEST_NAME",
    "QUARANTINE_DIR",
    "Candidate",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "ResumePlan",
    "TransferPolicy",
    "manifest_name",
    "step_dir_name",
]
