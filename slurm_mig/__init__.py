"""slurm-mig: per-job NVIDIA MIG for Slurm."""
__version__ = "0.1.0"
