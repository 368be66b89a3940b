import copy

import pytest

from peftcode.study.config import Cell, Study
from peftcode.study.validation import ConfigError, validate_config
from tests.helpers import SCHEMA, read_yaml


def test_default_config_is_valid_and_filled_with_paper_defaults(default_config):
    config = validate_config(default_config, SCHEMA)
    assert config["generation"] == {
        "num_beams": 10,
        "num_return_sequences": 10,
        "batch_size": 32,
        "early_stopping": True,
        "engine": "ours",
    }
    assert config["evaluation"]["k"] == [1, 2, 5, 10]
    assert config["methods"]["prompt-tuning"]["init_text"] == (
        "Generate Python code given a natural language instruction."
    )
    assert config["datasets"]["conala-style"]["splits"] == {
        "train": "train",
        "validation": "validation",
        "test": "test",
    }


def test_method_defaults_are_the_papers(tiny_config):
    tiny_config["methods"] = {
        kind: {"kind": kind} for kind in ("full-ft", "lora", "ia3", "prompt-tuning", "prefix-tuning", "icl")
    }
    tiny_config["training"] = {}
    methods = validate_config(tiny_config, SCHEMA)["methods"]
    assert methods["full-ft"]["lr"] == 5e-5
    assert (methods["lora"]["lr"], methods["lora"]["r"], methods["lora"]["alpha"]) == (3e-4, 8, 16)
    assert methods["lora"]["dropout"] == 0.05
    assert methods["ia3"]["lr"] == 3e-3
    assert (methods["prompt-tuning"]["lr"], methods["prompt-tuning"]["num_virtual_tokens"]) == (3e-3, 20)
    assert (methods["prefix-tuning"]["lr"], methods["prefix-tuning"]["num_virtual_tokens"]) == (3e-2, 10)
    assert methods["icl"]["seeds"] == [42, 777, 5432, 55555, 97]
    assert tiny_config["training"]["epochs"] == 5 and tiny_config["training"]["batch_size"] == 8


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["study"][0]["methods"].append("lorra"), "study[0].methods: unknown method 'lorra'"),
        (lambda c: c["study"][0]["models"].append("smol"), "study[0].models: unknown model 'smol'"),
        (lambda c: c["study"][0]["datasets"].append("conala"), "study[0].datasets: unknown dataset 'conala'"),
        (
            lambda c: c["methods"]["lora"].update(rank=8),
            "methods.lora: Additional properties are not allowed",
        ),
        (lambda c: c.update(trainig={}), "<top level>: Additional properties are not allowed ('trainig'"),
        (lambda c: c["methods"]["lora"].update(kind="loraa"), "methods.lora.kind: 'loraa' is not one of"),
        (
            lambda c: c["datasets"]["conala-style"].pop("fields"),
            "datasets.conala-style: 'fields' is a required",
        ),
        (lambda c: c["generation"].update(num_beams=0), "generation.num_beams: 0 is less than the minimum"),
        (lambda c: c["models"]["tiny-llama"].pop("tokenizer"), "models.tiny-llama: a built model needs"),
        (lambda c: c.update(resources={"gpu": -1}), "resources.gpu: -1 is less than the minimum"),
        (lambda c: c.update(resources={"gpu_model": "'a100'"}), "resources.gpu_model: \"'a100'\" does not"),
    ],
)
def test_bad_config_stops_with_one_line_naming_the_key(tiny_config, edit, message):
    edit(tiny_config)
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config, SCHEMA)
    text = str(error.value)
    assert message in text, text
    assert "\n" not in text


def test_cells_expand_models_methods_datasets_and_icl_shots_and_seeds(tiny_config):
    study = Study(validate_config(tiny_config, SCHEMA))
    methods = sorted({cell.variant for cell in study.cells})
    assert methods == sorted(
        [
            "full-ft",
            "lora",
            "ia3",
            "prompt-tuning",
            "prefix-tuning",
            "icl-0shot",
            "icl-1shot-seed42",
            "icl-1shot-seed777",
        ]
    )
    assert len(study.cells) == 8 * 2
    assert len(study.trained_cells) == 5 * 2
    assert study.kind("icl-1shot-seed777") == "icl" and not study.is_trained("icl-0shot")
    assert Cell("tiny-llama", "lora", "conala-style") in study.cells


def test_study_blocks_union_without_duplicates(tiny_config):
    tiny_config["study"] = [
        {"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["conala-style"]},
        {"models": ["tiny-llama"], "methods": ["lora", "full-ft"], "datasets": ["conala-style"]},
    ]
    study = Study(validate_config(tiny_config, SCHEMA))
    assert [c.variant for c in study.cells] == ["full-ft", "lora"]


def test_train_settings_merge_training_defaults_under_method_settings(tiny_config):
    tiny_config["methods"]["lora"]["epochs"] = 3
    study = Study(validate_config(tiny_config, SCHEMA))
    settings = study.train_settings("tiny-llama", "lora", "conala-style")
    assert settings.epochs == 3 and settings.batch_size == 4
    assert settings.lr == 1e-2 and settings.method_settings.r == 8
    assert (settings.max_input_length, settings.max_target_length) == (48, 12)
    assert study.train_settings("tiny-llama", "ia3", "conala-style").epochs == 1


def test_editing_one_method_changes_only_that_methods_params(tiny_config):
    import copy

    before = Study(validate_config(copy.deepcopy(tiny_config), SCHEMA))
    tiny_config["methods"]["lora"]["lr"] = 5e-3
    after = Study(validate_config(tiny_config, SCHEMA))
    changed = {
        cell
        for cell in before.trained_cells
        if before.train_settings(*_key(cell)) != after.train_settings(*_key(cell))
    }
    assert changed == {c for c in before.trained_cells if c.variant == "lora"}
    assert all(
        before.configured_infer_settings(*_key(c)) == after.configured_infer_settings(*_key(c))
        for c in before.cells
    )
    assert before.data_settings("conala-style") == after.data_settings("conala-style")


def _key(cell):
    return cell.model, cell.variant, cell.dataset


def test_icl_infer_settings_carry_shots_and_seed(tiny_config):
    study = Study(validate_config(tiny_config, SCHEMA))
    settings = study.configured_infer_settings("tiny-llama", "icl-1shot-seed777", "conala-style")
    assert (settings.shots, settings.seed, settings.stop) == (1, 777, "\n")
    assert settings.max_new_tokens == 12 and settings.num_beams == 3


def test_rag_methods_get_one_cell_per_number_of_retrieved_examples(tiny_config):
    tiny_config["methods"]["rag"] = {"kind": "rag", "shots": [1, 3]}
    tiny_config["study"][0]["methods"].append("rag")
    study = Study(validate_config(tiny_config, SCHEMA))
    rag = sorted(cell.variant for cell in study.cells if cell.variant.startswith("rag"))
    assert rag == ["rag-1shot", "rag-1shot", "rag-3shot", "rag-3shot"]  # on both datasets
    settings = study.configured_infer_settings("tiny-llama", "rag-3shot", "conala-style")
    assert (settings.shots, settings.retriever) == (3, "bm25")
    assert (
        study.configured_infer_settings("tiny-llama", "icl-1shot-seed777", "conala-style").retriever is None
    )
    assert not study.is_trained("rag-3shot")


def test_a_union_dataset_trains_one_model_tested_on_each_members_test_set(tiny_config):
    tiny_config["datasets"]["joint"] = {
        "union": ["conala-style", "codealpaca-style"],
        "max_target_length": 20,
    }
    tiny_config["study"] = [{"models": ["tiny-llama"], "methods": ["lora"], "datasets": ["joint"]}]
    study = Study(validate_config(tiny_config, SCHEMA))
    assert [_key(c) for c in study.cells] == [
        ("tiny-llama", "lora-joint", "codealpaca-style"),
        ("tiny-llama", "lora-joint", "conala-style"),
    ]
    assert study.trained_cells == [Cell("tiny-llama", "lora-joint", "joint")]
    assert study.train_dataset("lora-joint", "conala-style") == "joint"
    assert study.train_settings("tiny-llama", "lora-joint", "joint").max_target_length == 20
    # Decoding follows the test set's own settings.
    assert study.configured_infer_settings("tiny-llama", "lora-joint", "conala-style").stop == "\n"
    assert study.cell_info(study.cells[0])["train_dataset"] == "joint"


@pytest.mark.parametrize(
    ("union", "method", "message"),
    [
        (["conala-style", "nope"], "lora", "datasets.joint.union: 'nope' is not a dataset with a source"),
        (["conala-style", "codealpaca-style"], "icl", "method 'icl' trains nothing"),
    ],
)
def test_bad_unions_are_named(tiny_config, union, method, message):
    tiny_config["datasets"]["joint"] = {"union": union}
    tiny_config["study"] = [{"models": ["tiny-llama"], "methods": [method], "datasets": ["joint"]}]
    with pytest.raises(ConfigError, match=message):
        Study(validate_config(tiny_config, SCHEMA))


def test_model_jobs_ask_for_the_configured_gpus_and_the_memory_the_plan_estimates(tiny_config):
    from peftcode.planning.plan import Plan

    cpu = Study(validate_config(copy.deepcopy(tiny_config), SCHEMA))
    assert cpu.gpu_request() == {"gpu": 0}
    tiny_config["resources"] = {"gpu": 2, "gpu_model": "a100"}
    gpu = Study(validate_config(copy.deepcopy(tiny_config), SCHEMA))
    assert gpu.gpu_request() == {"gpu": 2, "gpu_model": "a100"}
    on_cpu, on_gpu = Plan(cpu), Plan(gpu)
    cell = ("tiny-llama", "full-ft", "conala-style")
    # On the CPU a fine-tune holds its whole estimated peak in host memory; on a GPU, the weights pass.
    assert on_cpu.mem_mb("finetune", *cell) > 2048 + on_cpu.rows[0]["infer_peak_mb"]
    assert on_gpu.mem_mb("finetune", *cell) == on_gpu.mem_mb("infer", *cell)
    # Time grows with the tokens to train on.
    tiny_config["resources"] = {"gpu": 0}
    tiny_config["training"]["epochs"] = 2000
    more = Plan(Study(validate_config(tiny_config, SCHEMA)))
    assert more.runtime_min("finetune", *cell) > on_cpu.runtime_min("finetune", *cell)


def test_the_schema_knows_the_kinds_of_the_registry_and_no_others():
    from peftcode.study.kinds import KINDS

    method = read_yaml(SCHEMA)["$defs"]["method"]
    assert method["properties"]["kind"]["enum"] == list(KINDS)
    blocks = {block["if"]["properties"]["kind"]["const"] for block in method["allOf"]}
    assert blocks == set(KINDS)


def test_the_settings_classes_have_the_schemas_keys_and_refuse_any_other():
    from dataclasses import FrozenInstanceError, fields

    from peftcode.study import settings as typed

    schema = read_yaml(SCHEMA)["$defs"]

    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    assert names(typed.ModelSettings) == set(schema["model"]["properties"])
    assert names(typed.DataSettings) == set(schema["dataset"]["properties"])
    assert names(typed.EvalSettings) == set(schema["evaluation"]["properties"])
    by_kind = [rule["then"]["properties"] for rule in schema["method"]["allOf"]]
    assert names(typed.MethodSettings) == set().union(*by_kind)
    assert set(schema["training"]["properties"]) | {"lr"} <= names(typed.TrainSettings)
    assert set(schema["generation"]["properties"]) <= names(typed.InferSettings)
    with pytest.raises(TypeError, match=r"models.m: ModelSettings has no field 'familly'"):
        typed.ModelSettings.of({"source": {"hub": "a/b"}, "familly": "causal"}, "models.m")
    settings = typed.ModelSettings(source={"hub": "a/b"}, family="causal")
    with pytest.raises(AttributeError):
        settings.familly  # noqa: B018
    with pytest.raises(FrozenInstanceError):
        settings.family = "seq2seq"
