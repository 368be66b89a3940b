rule infer:
    input:
        unpack(infer_inputs),
    output:
        generations=f"{R}/generations/{{model}}/{{method}}/{{dataset}}.parquet",
        memory=f"{R}/generations/{{model}}/{{method}}/{{dataset}}.memory.json",
    params:
        code=code_version("infer"),
        settings=lambda w: study.infer_settings(w.model, w.method, w.dataset),
    threads: config["threads"]
    resources:
        mem_mb=lambda w: study.job_memory_mb(w.model, "infer"),
        runtime=lambda w: study.job_runtime_min(w.model, "infer"),
    script:
        "../scripts/infer.py"
