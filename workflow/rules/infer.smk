rule infer:
    input:
        unpack(infer_inputs),
    output:
        generations=f"{R}/generations/{{model}}/{{variant}}/{{dataset}}.parquet",
        cost=f"{R}/generations/{{model}}/{{variant}}/{{dataset}}.cost.json",
    log:
        f"{R}/logs/infer/{{model}}/{{variant}}/{{dataset}}.log",
    # As fine-tunes: model jobs first where several are ready.
    priority: 1
    conda:
        "../../envs/models.yaml"
    threads: config["threads"]
    resources:
        **compute_resources("infer"),
    params:
        code=job_code("inference.infer"),
        settings=lambda w: plan.infer_settings(w.model, w.variant, w.dataset).as_dict(),
        # Finished examples live outside the outputs, which Snakemake deletes before it reruns a job.
        resume=lambda w: f"{R}/resume/infer/{w.model}/{w.variant}/{w.dataset}",
    script:
        "../scripts/infer.py"


# vLLM's environment, found once for the cells vLLM decodes (generation.engine): vLLM pins its own
# transformers, so its worker runs in an interpreter of its own (peftcode.inference.vllm_engine).
rule vllm_engine:
    output:
        f"{R}/engines/vllm.json",
    log:
        f"{R}/logs/vllm_engine.log",
    conda:
        "../../envs/vllm.yaml"
    params:
        code=job_code("inference.vllm_engine"),
    script:
        "../scripts/vllm_engine.py"
