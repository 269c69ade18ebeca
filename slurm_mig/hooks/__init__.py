"""The Slurm hook contract: Prolog, TaskProlog and Epilog for both modes.

A hook exits 0 or 1, never anything else: per-job problems fail the job
alone (exit 0, reason for its TaskProlog); only node problems exit 1, which
Slurm answers by draining the node.
"""
