# Chosen fine-tunes to the hub, with their cards (config `publish`; none by default; see common.smk).
rule publish:
    input:
        checkpoint=f"{R}/finetune/{{model}}/{{variant}}/{{dataset}}/checkpoint",
        metrics=published_metrics,
    output:
        f"{R}/published/{{model}}/{{variant}}/{{dataset}}.json",
    log:
        f"{R}/logs/publish/{{model}}/{{variant}}/{{dataset}}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        code=job_code("models.publish"),
        repo=lambda w: PUBLISHED[Cell(w.model, w.variant, w.dataset)]["repo"],
        private=lambda w: PUBLISHED[Cell(w.model, w.variant, w.dataset)]["private"],
    script:
        "../scripts/publish.py"
