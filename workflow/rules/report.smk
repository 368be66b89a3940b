RESEARCH_QUESTIONS = ("rq1", "rq2", "rq3", "rq4")


# Every cell's estimated peak memory and GPU-hours, the budget's verdict, and the cells it leaves out.
rule plan:
    output:
        f"{R}/plan.csv",
    log:
        f"{R}/logs/plan.log",
    conda:
        "../../envs/models.yaml"
    params:
        code=job_code("planning.plan"),
        rows=plan.rows,
    script:
        "../scripts/plan.py"


rule report:
    input:
        table=rules.aggregate.output.table,
        plan=rules.plan.output[0],
        train_logs=[
            f"{finetune_dir(c.model, c.variant, c.dataset)}/train_log.csv" for c in study.trained_cells
        ],
    output:
        **{rq: f"{R}/reports/{rq}.md" for rq in RESEARCH_QUESTIONS},
        **{
            f"{rq}_page": report(
                f"{R}/reports/{rq}.html",
                caption=f"../report/{rq}.rst",
                category="Research questions",
                labels={"question": rq.upper(), "page": "tables, claims and figure"},
            )
            for rq in RESEARCH_QUESTIONS
        },
        **{
            f"{rq}_figure": report(
                f"{R}/reports/{rq}.png",
                caption=f"../report/{rq}_figure.rst",
                category="Figures",
                labels={"figure": rq.upper()},
            )
            for rq in RESEARCH_QUESTIONS
        },
        figure1=report(
            f"{R}/reports/figure1_memory.png",
            caption="../report/figure1_memory.rst",
            category="Figures",
            labels={"figure": "Figure 1: peak fine-tuning memory"},
        ),
        losses=report(
            f"{R}/reports/losses.png",
            caption="../report/losses.rst",
            category="Figures",
            labels={"figure": "Training and validation loss"},
        ),
    log:
        f"{R}/logs/report.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        code=job_code("report.report"),
        expected=[study.cell_info(c) for c in study.cells],
        fine_tunes=[
            {"model": c.model, "variant": c.variant, "dataset": c.dataset} for c in study.trained_cells
        ],
    script:
        "../scripts/report.py"


# Reports from whatever cells have finished, e.g. while a long study runs or after some jobs failed:
#   snakemake partial_report --forcerun partial_report
rule partial_report:
    output:
        directory(f"{R}/reports/partial"),
    log:
        f"{R}/logs/partial_report.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        code=job_code("report.partial_report"),
        expected=[study.cell_info(c) for c in study.cells],
        metrics=[metrics_path(c.model, c.variant, c.dataset) for c in study.cells],
    script:
        "../scripts/partial_report.py"
