"""What every stage command shares: the command wrapper (stage.py), whole-file writes, logs, checkpoints."""
