rule prepare_data:
    input:
        lambda w: study.local_data_files(w.dataset),
    output:
        train=f"{R}/data/{{dataset}}/train.parquet",
        validation=f"{R}/data/{{dataset}}/validation.parquet",
        test=f"{R}/data/{{dataset}}/test.parquet",
        stats=f"{R}/data/{{dataset}}/stats.json",
    log:
        f"{R}/logs/prepare_data/{{dataset}}.log",
    wildcard_constraints:
        dataset=one_of(d for d in config["datasets"] if d not in study.unions),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=job_code("data.prepare_data"),
        settings=lambda w: study.data_settings(w.dataset).as_dict(),
    script:
        "../scripts/prepare_data.py"


# The union of datasets' prepared splits, for joint training (RQ3).
rule join_data:
    input:
        lambda w: [
            f"{data_dir(member)}/{split}.parquet"
            for member in config["datasets"][w.dataset]["union"]
            for split in ("train", "validation", "test")
        ],
    output:
        train=f"{R}/data/{{dataset}}/train.parquet",
        validation=f"{R}/data/{{dataset}}/validation.parquet",
        test=f"{R}/data/{{dataset}}/test.parquet",
        stats=f"{R}/data/{{dataset}}/stats.json",
    log:
        f"{R}/logs/join_data/{{dataset}}.log",
    wildcard_constraints:
        dataset=one_of(study.unions),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=job_code("data.join_data"),
        members=lambda w: {m: data_dir(m) for m in config["datasets"][w.dataset]["union"]},
    script:
        "../scripts/join_data.py"


# A dense retriever's embeddings of a dataset's training and test intents, once per dataset and encoder.
rule embed_data:
    input:
        train=lambda w: f"{data_dir(w.dataset)}/train.parquet",
        test=lambda w: f"{data_dir(w.dataset)}/test.parquet",
    output:
        f"{R}/embeddings/{{dataset}}/{{encoder}}.npz",
    log:
        f"{R}/logs/embed_data/{{dataset}}/{{encoder}}.log",
    conda:
        "../../envs/models.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=job_code("data.embed_data"),
        encoder=lambda w: study.encoder_named(w.encoder),
    script:
        "../scripts/embed_data.py"


rule prepare_model:
    input:
        lambda w: study.local_model_files(w.model),
    output:
        directory(f"{R}/models/{{model}}"),
    log:
        f"{R}/logs/prepare_model/{{model}}.log",
    conda:
        "../../envs/models.yaml"
    resources:
        mem_mb=lambda w: plan.mem_mb("prepare", w.model),
        runtime=60,
    params:
        code=job_code("models.prepare_model"),
        settings=lambda w: study.model_settings(w.model).as_dict(),
    script:
        "../scripts/prepare_model.py"


# QLoRA's base model, its linear layers quantized by bitsandbytes once for the method's fine-tune and
# inference jobs.
rule quantize_model:
    input:
        lambda w: model_dir(w.model),
    output:
        directory(f"{R}/quantized/{{model}}/{{variant}}"),
    log:
        f"{R}/logs/quantize_model/{{model}}/{{variant}}.log",
    conda:
        "../../envs/models.yaml"
    resources:
        **compute_resources("quantize"),
    params:
        code=job_code("models.quantize_model"),
        family=lambda w: study.model_settings(w.model).family,
        quantization=lambda w: study.quantization(w.variant),
        precision=lambda w: study.precision(w.model, w.variant),
    script:
        "../scripts/quantize_model.py"


# An adapter trained elsewhere (a method of kind adapter): fetched into the hub cache, or checked in its
# local folder; a manifest says where it lies for the inference jobs.
rule fetch_adapter:
    input:
        lambda w: study.local_adapter_files(w.variant),
    output:
        directory(f"{R}/adapters/{{variant}}"),
    log:
        f"{R}/logs/fetch_adapter/{{variant}}.log",
    conda:
        "../../envs/models.yaml"
    params:
        code=job_code("models.fetch_adapter"),
        source=lambda w: study.adapter_source(w.variant),
    script:
        "../scripts/fetch_adapter.py"
