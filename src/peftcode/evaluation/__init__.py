"""Metrics of a cell's generations: EM@k, CodeBLEU, pass@k, and their bootstrap statistics."""
