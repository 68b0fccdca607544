"""One training loop for every policy: checkpoints, resume, logging, data-parallel."""
