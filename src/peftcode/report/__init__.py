"""The study's results table and its RQ1-RQ4 reports."""
