rule prepare_data:
    input:
        lambda w: study.local_data_files(w.dataset),
    output:
        train=f"{R}/data/{{dataset}}/train.parquet",
        validation=f"{R}/data/{{dataset}}/validation.parquet",
        test=f"{R}/data/{{dataset}}/test.parquet",
        stats=f"{R}/data/{{dataset}}/stats.json",
    params:
        settings=lambda w: study.data_settings(w.dataset),
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/prepare_data.py"


rule prepare_model:
    output:
        directory(f"{R}/models/{{model}}"),
    params:
        settings=lambda w: study.model_settings(w.model),
    resources:
        mem_mb=lambda w: study.job_memory_mb(w.model, "prepare"),
        runtime=60,
    script:
        "../scripts/prepare_model.py"
