"""The Slurm adapter: what a job asked for and was given (jobinfo), and the
Slurm configuration that matches the node (confgen + templates)."""
