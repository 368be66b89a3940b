rule infer:
    input:
        unpack(infer_inputs),
    output:
        generations=f"{R}/generations/{{model}}/{{method}}/{{dataset}}.parquet",
        memory=f"{R}/generations/{{model}}/{{method}}/{{dataset}}.memory.json",
    params:
        code=code_version("infer"),
        settings=lambda w: plan.infer_settings(w.model, w.method, w.dataset),
    threads: config["threads"]
    resources:
        **compute_resources("infer"),
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/infer.py"
