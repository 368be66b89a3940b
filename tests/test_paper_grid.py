from tests.conftest import REPO
from tests.workflow import planned_jobs


def test_paper_grid_dry_run_lists_every_cell():
    counts = planned_jobs(REPO / "studies" / "paper.yaml")
    small, peft_models, icl_models, qlora_models, datasets = 3, 9, 6, 3, 2
    icl_variants = 1 + 3 * 5  # 0-shot once, then 1, 2 and 3 shots over 5 seeds
    apps_lora = 3  # LoRA on the three CodeLlama sizes, on APPS
    joint_lora = 3  # RQ3: one LoRA on both datasets for the three CodeLlama sizes, tested on each
    trained = (small * 1 + peft_models * 4 + qlora_models * 2) * datasets + apps_lora + joint_lora
    cells = trained - joint_lora + joint_lora * datasets + icl_models * icl_variants * datasets
    assert counts == {
        "prepare_data": datasets + 1,
        "join_data": 1,
        "prepare_model": 12,
        "quantize_model": qlora_models * 2,
        "finetune": trained,
        "infer": cells,
        "evaluate": cells,
        "aggregate": 1,
        "report": 1,
        "all": 1,
    }
