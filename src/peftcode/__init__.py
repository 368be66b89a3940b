"""peftcode: parameter-efficient fine-tuning of code LLMs for Python code generation, as a Snakemake study."""
