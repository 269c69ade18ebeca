"""The test harness: a dev Slurm cluster for the demo and the end-to-end tests."""
