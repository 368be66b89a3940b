rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{R}/metrics/{{model}}/{{variant}}/{{dataset}}.json",
    log:
        f"{R}/logs/evaluate/{{model}}/{{variant}}/{{dataset}}.log",
    conda:
        "../../envs/analysis.yaml"
    # The sandbox runs this many model-written programs at once; CodeBLEU uses one core. As many as a model
    # job's, so that evaluations run beside model jobs rather than after them.
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=job_code("evaluation.evaluate"),
        cell=lambda w: study.cell_info(Cell(w.model, w.variant, w.dataset)),
        settings=study.eval_settings().as_dict(),
    script:
        "../scripts/evaluate.py"


rule aggregate:
    input:
        [metrics_path(c.model, c.variant, c.dataset) for c in study.cells],
    output:
        table=f"{R}/results.parquet",
        csv=f"{R}/results.csv",
    log:
        f"{R}/logs/aggregate.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        code=job_code("report.aggregate"),
    script:
        "../scripts/aggregate.py"
