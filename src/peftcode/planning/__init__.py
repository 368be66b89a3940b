"""The plan: every cell's memory and compute estimated from the models' shapes before any job runs."""
