"""What every job shares: its log, its tracking run, its start-up, its preemption, its code version, the
cache."""
