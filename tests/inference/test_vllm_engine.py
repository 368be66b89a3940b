"""Finding vLLM's environment: the interpreters tried, and one line where there is none."""

import json
import sys

import pytest

from peftcode.inference import vllm_engine


def test_without_vllm_one_line_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "candidates", lambda: [str(tmp_path / "none" / "python")])
    with pytest.raises(SystemExit) as stopped:
        vllm_engine.find_vllm(tmp_path / "vllm.json")
    assert str(stopped.value) == vllm_engine.INSTALL and "\n" not in vllm_engine.INSTALL
    assert "make vllm" in vllm_engine.INSTALL and not (tmp_path / "vllm.json").exists()


def test_the_interpreter_named_by_the_environment_is_tried_after_the_jobs_own(monkeypatch):
    monkeypatch.setenv("PEFTCODE_VLLM_PYTHON", "/opt/vllm/bin/python")
    found = vllm_engine.candidates()
    assert found[:2] == [sys.executable, "/opt/vllm/bin/python"] and found[2].endswith(
        ".venv-vllm/bin/python"
    )


def test_an_interpreter_with_vllm_is_recorded_with_its_version(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "candidates", lambda: ["/a/python", "/b/python"])
    monkeypatch.setattr(
        vllm_engine, "vllm_version", lambda python: "0.32.0" if python == "/b/python" else None
    )
    assert vllm_engine.find_vllm(tmp_path / "engines" / "vllm.json") == {
        "python": "/b/python",
        "vllm": "0.32.0",
    }
    assert json.loads((tmp_path / "engines" / "vllm.json").read_text())["python"] == "/b/python"
