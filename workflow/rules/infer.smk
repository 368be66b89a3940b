rule infer:
    input:
        unpack(infer_inputs),
    output:
        generations=f"{R}/generations/{{model}}/{{method}}/{{dataset}}.parquet",
        memory=f"{R}/generations/{{model}}/{{method}}/{{dataset}}.memory.json",
    log:
        f"{R}/logs/infer/{{model}}/{{method}}/{{dataset}}.log",
    conda:
        "../../envs/models.yaml"
    threads: config["threads"]
    resources:
        **compute_resources("infer"),
    params:
        code=code_version("infer"),
        settings=lambda w: plan.infer_settings(w.model, w.method, w.dataset),
    script:
        "../scripts/infer.py"
