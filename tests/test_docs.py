"""The documentation kept in step: docs/configuration.md names the schema's keys and no others, and the README
is a front door to every page of docs/."""

import re

import yaml

from tests.helpers import REPO

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _resolved(node: dict) -> dict:
    while "$ref" in node:
        node = {
            **SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    return node


def schema_keys(node: dict, path: str = "") -> set[str]:
    """Every key a study file may write, as the page names them: ``models.<name>.family``, ``study[].models``;
    a method's keys are those of any of its kinds."""
    node, keys = _resolved(node), set()
    children = dict(node.get("properties", {}))
    for branch in node.get("allOf", []):
        children.update({k: v for k, v in branch.get("then", {}).get("properties", {}).items() if v})
    for name, child in children.items():
        key = f"{path}.{name}" if path else name
        keys |= {key} | schema_keys(child, key)
    if isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"]:
        keys |= schema_keys(node["additionalProperties"], f"{path}.<name>")
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        keys |= schema_keys(node["items"], f"{path}[]")
    return keys


def test_the_reference_documents_every_key_of_the_schema_and_no_other():
    page = (REPO / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", page, re.M))
    keys = schema_keys(SCHEMA)
    assert sorted(keys - documented) == [], "in the schema, not on the page"
    assert sorted(documented - keys) == [], "on the page, not in the schema"


def test_the_reference_gives_every_key_a_meaning_and_its_sections_an_example():
    page = (REPO / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|.*\| ([^|]*) \|$", page, re.M)
    assert [key for key, meaning in rows if not meaning.strip()] == []
    sections = re.findall(r"^## `(\w+)`", page, re.M)
    assert set(sections) == set(SCHEMA["properties"])
    assert page.count("```yaml") == len(sections)


def test_the_readme_is_a_front_door_that_links_every_page_and_times_nothing():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    pages = {f"docs/{page.name}" for page in (REPO / "docs").glob("*.md")}
    assert pages <= set(re.findall(r"\((docs/[\w-]+\.md)\)", readme))
    assert re.findall(r"\b\d+(?:\.\d+)? ?(?:s|ms|seconds?|minutes?|min|hours?|h)\b", readme) == []
