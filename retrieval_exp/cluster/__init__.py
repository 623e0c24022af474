"""Running on a SLURM cluster: the submitit launcher, and what a job records about itself."""
