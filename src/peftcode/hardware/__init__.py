"""Where and how a job computes: its GPUs, its model's placement, its precision, its measured memory."""
