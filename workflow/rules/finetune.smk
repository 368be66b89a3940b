rule finetune:
    input:
        model=lambda w: base_model_dir(w.model, w.variant),
        train=lambda w: f"{data_dir(w.dataset)}/train.parquet",
        validation=lambda w: f"{data_dir(w.dataset)}/validation.parquet",
    output:
        checkpoint=directory(f"{R}/finetune/{{model}}/{{variant}}/{{dataset}}/checkpoint"),
        log=f"{R}/finetune/{{model}}/{{variant}}/{{dataset}}/train_log.csv",
        cost=f"{R}/finetune/{{model}}/{{variant}}/{{dataset}}/cost.json",
    log:
        f"{R}/logs/finetune/{{model}}/{{variant}}/{{dataset}}.log",
    # Model jobs first where several are ready: they are the long ones, and evaluations fill the gaps.
    priority: 1
    conda:
        "../../envs/models.yaml"
    threads: config["threads"]
    resources:
        **compute_resources("finetune"),
    params:
        code=job_code("training.finetune"),
        settings=lambda w: study.train_settings(w.model, w.variant, w.dataset).as_dict(),
        # Resume state lives outside the outputs, which Snakemake deletes before it reruns a job.
        resume=lambda w: f"{R}/resume/finetune/{w.model}/{w.variant}/{w.dataset}",
    script:
        "../scripts/finetune.py"
