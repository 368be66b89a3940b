"""Datasets: a hub dataset or local files in its format -> one schema, one parquet file per split.

Our schema: ``id`` (str), ``source_id`` (str: the source's own identifier, HumanEval's ``task_id`` say,
else empty), ``intent`` (str), ``prefix`` (str: the start of the code that the prompt gives, HumanEval's
signature and docstring, which the model continues; else empty), ``code`` (str), ``tests`` (str: the tests
the code must meet, which the judge runs, see :mod:`peftcode.sandbox.tests_column`; empty for a dataset
without tests), ``difficulty`` (str, APPS' level; else empty), ``split`` (str).

Local and package files are read here, line by line for JSON Lines: a line that does not parse, or a row
whose field is not text, is skipped and counted with its line number; a file that cannot be read at all
stops the job with one line naming it and where.
"""

from __future__ import annotations

import gzip
import json
import logging
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi

from peftcode.data.packaged import packaged_file
from peftcode.data.presets import PRESETS, is_python_example
from peftcode.data.splits import COLUMNS, SPLITS
from peftcode.study.settings import DataSettings

if TYPE_CHECKING:
    import datasets

# Line numbers of skipped rows kept in stats.json, per split and reason.
SHOWN_LINES = 10
logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset that cannot be read as configured; the message names the file and column."""


@dataclass
class Rows:
    """One split's raw rows: each with where it came from (a file's line or item, a hub dataset's row),
    the columns they have, the lines that did not parse, and a name for messages."""

    rows: Iterable[tuple[str, dict]]
    columns: list[str]
    origin: str
    unparsed: list[int] = field(default_factory=list)


def package_file(source: dict) -> Path:
    """A data file inside an installed Python package."""
    install = "pip install " + source.get("pip", source["package"].replace("_", "-"))
    try:
        return packaged_file(source["package"], source["file"], install)
    except FileNotFoundError as error:
        raise DataError(str(error)) from None


def _decoded(path: Path, raw: bytes) -> str:
    """UTF-8 text, without the byte-order mark that files saved by many Windows tools begin with."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(f"{path}:{line}:{column}: not UTF-8 text ({error.reason})") from None


def read_file(path: Path) -> Rows:
    """A local data file's rows: JSON Lines (a skipped line for each that does not parse, or is not an
    object), a JSON list of objects, or parquet; ``.gz`` compressed or not."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"{path}: not a readable parquet file ({error})") from None
        items = table.to_pylist()
        return Rows([(f"row {i + 1}", row) for i, row in enumerate(items)], table.column_names, str(path))
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: not a readable gzip file ({error})") from None
    text = _decoded(path, raw)
    if kind == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise DataError(f"{path}: expected a JSON list of objects")
        columns = list(dict.fromkeys(key for item in items for key in item))
        return Rows([(f"item {i + 1}", item) for i, item in enumerate(items)], columns, str(path))
    if kind != ".jsonl":
        raise DataError(f"{path}: unknown data format '{kind}' (jsonl, json or parquet, optionally .gz)")
    rows, unparsed = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = None
        if isinstance(item, dict):
            rows.append((f"line {number}", item))
        else:
            unparsed.append(number)
    columns = list(dict.fromkeys(key for _, item in rows for key in item))
    return Rows(rows, columns, str(path), unparsed)


def count_rows(settings: DataSettings, split: str) -> int | None:
    """Rows of a local or package dataset's split file as :func:`read_file` reads them, before any are
    dropped; None for a hub dataset, or for a file that cannot be read (its prepare_data job says why)."""
    if split not in settings.splits:
        return 0
    source = settings.source
    if "hub" in source:
        return None
    path = package_file(source) if "package" in source else None
    path = path or Path(source["path"]) / f"{settings.splits[split]}.{settings.format}"
    try:
        return len(read_file(path).rows)
    except (DataError, OSError):
        return None


def _load_split(source: dict, file_format: str, split: str) -> Rows:
    """Load one split of the source."""
    if "package" in source:
        return read_file(package_file(source))
    origin = f"{source.get('hub')}[{split}]"
    if "hub" in source and "data_files" in source:
        rows = _load_hub_data_files(source, split)
        return Rows(((f"row {i + 1}", row) for i, row in enumerate(rows)), rows.column_names, origin)
    if "hub" in source:
        import datasets  # only for a hub dataset: it is slow to import

        rows = datasets.load_dataset(source["hub"], revision=source.get("revision"), split=split)
        return Rows(((f"row {i + 1}", row) for i, row in enumerate(rows)), rows.column_names, origin)
    path = Path(source["path"]) / f"{split}.{file_format}"
    if not path.is_file():
        raise DataError(f"{path}: no such file for split '{split}'")
    return read_file(path)


BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _load_hub_data_files(source: dict, split: str) -> datasets.Dataset:
    """A hub repository's data files, read by their format's builder from ``hf://`` paths at the pinned
    commit. ``datasets`` refuses a repository that ships a loading script (APPS, docprompting-conala) even
    when it is given data files; reading the files themselves never runs the script."""
    files = source["data_files"]
    files = files if isinstance(files, dict) else {"train": files}
    base = f"hf://datasets/{source['hub']}@{source['revision']}/"
    located = {
        name: [base + path for path in ([paths] if isinstance(paths, str) else paths)]
        for name, paths in files.items()
    }
    suffixes = {Path(path).suffix for paths in located.values() for path in paths}
    if len(suffixes) != 1 or next(iter(suffixes)) not in BUILDERS:
        raise DataError(f"{source['hub']}: data_files must share one format of {', '.join(BUILDERS)}")
    import datasets

    return datasets.load_dataset(BUILDERS[suffixes.pop()], data_files=located, split=split)


def _as_columns(spec) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def _identifier(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def _text(value) -> str | None:
    """A cell as text; a list of lines (MBPP's ``test_list``) is joined."""
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        value = "\n".join(value)
    return value if isinstance(value, str) else None


def _template_columns(spec: str) -> list[str]:
    """The columns a template such as ``"{prompt}{canonical_solution}"`` reads; none for a column name."""
    return [name for _, name, _, _ in string.Formatter().parse(spec) if name]


def _first_present(row: dict, columns: list[str]) -> str | None:
    """The first non-empty value among ``columns``, each a column name or a template over columns (a
    template with an empty column yields nothing)."""
    for spec in columns:
        names = _template_columns(spec)
        if names:
            values = {name: _text(row.get(name)) for name in names}
            value = None if any(not v or not v.strip() for v in values.values()) else spec.format_map(values)
        else:
            value = _text(row.get(spec))
        if value and value.strip():
            return value
    return None


def _readable(spec: str, present: list[str]) -> bool:
    return all(name in present for name in _template_columns(spec) or [spec])


def _held(row: dict, column: str) -> str:
    """What a row holds in ``column``, for the message of a row that was dropped."""
    if column not in row:
        return "no such column"
    value = row[column]
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text" if value.strip() else "empty text"
    kinds = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _unusable(row: dict, wanted: dict[str, list[str]]) -> str:
    """Why a row has no text for a field it needs: the field, and what each of its columns holds."""
    for ours in ("intent", "code", "tests", "prefix"):
        if ours in wanted and _first_present(row, wanted[ours]) is None:
            columns = [name for spec in wanted[ours] for name in _template_columns(spec) or [spec]]
            held = [f"{name!r} holds {_held(row, name)}" for name in columns]
            return f"no text for {ours}: " + ", ".join(held)
    return "no text for a field"


def normalise_rows(rows: Rows, settings: DataSettings, split: str) -> tuple[pd.DataFrame, list[str], int]:
    """Map the source's columns onto our schema. Rows missing intent, code or (where the dataset has
    them) tests, or whose field is not text (a number, a list where text is expected, null), are dropped;
    with ``python_only``, examples that are not Python are filtered out and counted apart. Returns the
    rows, where the dropped ones were, and the filtered count."""
    origin = rows.origin
    if not rows.columns:
        raise DataError(f"{origin}: no rows for split '{split}'")
    present, preset = list(rows.columns), PRESETS.get(settings.preset)
    if preset is not None:
        raw, derived, _ = preset
        missing = [column for column in raw if column not in present]
        if missing:
            raise DataError(f"{origin}: missing column {missing[0]!r} of the '{settings.preset}' preset")
        present += derived
    fields = dict(settings.fields)
    source_id = fields.pop("source_id", None)
    wanted = {ours: _as_columns(spec) for ours, spec in fields.items()}
    for ours, columns in wanted.items():
        if not any(_readable(column, present) for column in columns):
            raise DataError(
                f"{origin}: missing column {' or '.join(map(repr, columns))} for field '{ours}' "
                f"(columns present: {', '.join(present)})"
            )
    records, dropped, filtered = [], [], 0
    for index, (where, row) in enumerate(rows.rows):
        row = preset[2](row) if preset is not None else row
        if row is None:
            dropped.append(f"{where} (unreadable by the '{settings.preset}' preset)")
            continue
        intent = _first_present(row, wanted["intent"])
        code = _first_present(row, wanted["code"])
        tests = _first_present(row, wanted["tests"]) if "tests" in wanted else ""
        prefix = _first_present(row, wanted["prefix"]) if "prefix" in wanted else ""
        if intent is None or code is None or tests is None or prefix is None:
            dropped.append(f"{where} ({_unusable(row, wanted)})")
            continue
        extra = _first_present(row, wanted["input"]) if "input" in wanted else None
        if extra:
            intent = f"{intent.strip()}\n{extra.strip()}"
        if settings.python_only and not is_python_example(intent, code):
            filtered += 1
            continue
        records.append(
            {
                "id": f"{split}-{index}",
                "source_id": _identifier(row, source_id) if source_id else "",
                "intent": intent.strip(),
                "prefix": prefix.lstrip("\n"),
                "code": code.strip("\n"),
                "tests": tests,
                "difficulty": _first_present(row, wanted["difficulty"]) if "difficulty" in wanted else "",
                "split": split,
            }
        )
    return pd.DataFrame.from_records(records, columns=COLUMNS), dropped, filtered


def prepare_data(settings: DataSettings, out_dir: str | Path) -> dict:
    """Write ``{train,validation,test}.parquet`` and ``stats.json`` under ``out_dir``; returns the stats. A
    split the dataset does not have (a test-only benchmark's training split) is written empty."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = dict(settings.source)
    stats = {"source": settings.source, "splits": {}}
    if "hub" in source:
        # Every split from one commit, recorded.
        source["revision"] = HfApi().dataset_info(source["hub"], revision=source.get("revision")).sha
        stats["commit"] = source["revision"]
    for split in SPLITS:
        if split not in settings.splits:
            pd.DataFrame(columns=COLUMNS).to_parquet(out_dir / f"{split}.parquet", index=False)
            stats["splits"][split] = {"rows": 0, "absent": True}
            continue
        rows = _load_split(source, settings.format, settings.splits[split])
        frame, dropped, filtered = normalise_rows(rows, settings, split)
        for reason, places in (
            ("did not parse", [f"line {n}" for n in rows.unparsed]),
            ("had no text for a field", dropped),
        ):
            if places:
                logger.warning(
                    "%s: %d rows skipped that %s (%s)",
                    rows.origin,
                    len(places),
                    reason,
                    ", ".join(places[:SHOWN_LINES]),
                )
        limit = settings.limit.get(split)
        if limit is not None:
            frame = frame.head(limit)
        if frame.empty:
            raise DataError(f"{rows.origin}: no usable rows for split '{split}'")
        frame.to_parquet(out_dir / f"{split}.parquet", index=False)
        stats["splits"][split] = {
            "rows": len(frame),
            "unparsed_lines": len(rows.unparsed),
            "unparsed_at": rows.unparsed[:SHOWN_LINES],
            "dropped_rows": len(dropped),
            "dropped_at": dropped[:SHOWN_LINES],
            "filtered_rows": filtered,
            "mean_intent_chars": round(frame["intent"].str.len().mean(), 1),
            "mean_code_chars": round(frame["code"].str.len().mean(), 1),
        }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
