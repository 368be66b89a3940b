from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.inference.vllm_engine import find_vllm

print(find_vllm(snakemake.output[0]))
