"""Corpus CodeBLEU from each example's terms, so that a bootstrap resample costs a sum, not a re-parse.

The ``codebleu`` package's corpus score weighs four corpus-level scores equally, each a function of sums
over the examples: BLEU and keyword-weighted BLEU (clipped n-gram counts and totals per order, hypothesis
lengths and closest reference lengths, then the brevity penalty and smoothing), syntax match (reference
subtrees found among the candidate's, over the reference's subtrees) and data-flow match (the same for
data-flow edges). Recomputing the corpus score re-parses every example, twice per resample; HumanEval's
164 programs took 2.7 s a resample. :class:`CodebleuSums` computes each example's terms once, with the
package's own functions where it has them, and scores any multiset of examples from their sums: the same
score as ``calc_codebleu`` on those examples (tested on resamples).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from codebleu import bleu, dataflow_match, weighted_ngram_match
from codebleu.codebleu import PACKAGE_DIR
from codebleu.parser import remove_comments_and_docstrings
from codebleu.utils import get_tree_sitter_language
from tree_sitter import Parser

ORDERS = (1, 2, 3, 4)
KEYWORDS = frozenset(
    line.strip()
    for line in (PACKAGE_DIR / "keywords" / "python.txt").read_text(encoding="utf-8").splitlines()
)
# Columns of an example's terms: numerators of orders 1-4 then their denominators, for BLEU and weighted
# BLEU; lengths; matched and total subtrees; matched and total data flows.
BLEU, WEIGHTED = slice(0, 8), slice(8, 16)
HYPOTHESIS_LENGTH, REFERENCE_LENGTH, WEIGHTED_REFERENCE_LENGTH = 16, 17, 18
SYNTAX, DATAFLOW = slice(19, 21), slice(21, 23)
COLUMNS = 23


def _without_comments(code: str) -> str:
    try:
        return remove_comments_and_docstrings(code, "python")
    except Exception:  # the package scores the code as it is where its tokenizer fails, and so do we
        return code


def _subtrees(root) -> list[str]:
    """The S-expressions of the root and of every node with children, as the package's syntax match
    collects them."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(str(node))
        stack.extend(child for child in node.children if child.children)
    return found


class CodebleuSums:
    """Each example's terms of corpus CodeBLEU for Python (references and predictions as ``calc_codebleu``
    takes them, one reference an example)."""

    def __init__(self, references: list[str], predictions: list[str]):
        language = get_tree_sitter_language("python")
        self.parser = Parser()
        self.parser.language = language
        self.flow_parser = [self.parser, dataflow_match.dfg_function["python"]]
        self.terms = np.array(
            [self._terms(r.strip(), p.strip()) for r, p in zip(references, predictions, strict=True)],
            dtype=np.float64,
        ).reshape(len(references), COLUMNS)

    def _terms(self, reference: str, prediction: str) -> list[float]:
        reference_tokens, hypothesis = reference.split(), prediction.split()
        weighted = [reference_tokens, {t: 1 if t in KEYWORDS else 0.2 for t in reference_tokens}]
        counts = [bleu.modified_precision([reference_tokens], hypothesis, n) for n in ORDERS]
        weighted_counts = [weighted_ngram_match.modified_recall([weighted], hypothesis, n) for n in ORDERS]
        return [
            *(c[0] for c in counts), *(c[1] for c in counts),
            *(c[0] for c in weighted_counts), *(c[1] for c in weighted_counts),
            len(hypothesis), bleu.closest_ref_length([reference_tokens], len(hypothesis)),
            # The package's weighted match measures each reference as its (tokens, weights) pair: length 2.
            weighted_ngram_match.closest_ref_length([weighted], len(hypothesis)),
            *self._syntax(reference, prediction), *self._dataflow(reference, prediction),
        ]  # fmt: skip

    def _syntax(self, reference: str, prediction: str) -> tuple[int, int]:
        candidate = set(_subtrees(self.parser.parse(_without_comments(prediction).encode()).root_node))
        subtrees = _subtrees(self.parser.parse(_without_comments(reference).encode()).root_node)
        return sum(subtree in candidate for subtree in subtrees), len(subtrees)

    def _dataflow(self, reference: str, prediction: str) -> tuple[int, int]:
        def flows(code: str) -> list:
            graph = dataflow_match.get_data_flow(_without_comments(code), self.flow_parser)
            # The package merges a variable's sources through set(), whose order follows Python's string
            # hashing, which differs from process to process: the names it then numbers in that order
            # made the score of the same code vary between runs. Sorted, they number the same every run.
            graph = [(*flow[:3], sorted(flow[3]), sorted(flow[4])) for flow in graph]
            return dataflow_match.normalize_dataflow(graph)

        candidate, matched = flows(prediction), 0
        reference_flows = flows(reference)
        for flow in reference_flows:
            if flow in candidate:
                matched += 1
                candidate.remove(flow)
        return matched, len(reference_flows)

    def score(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Corpus CodeBLEU and its components over the examples ``rows`` (with repeats; all by default)."""
        sums = self.terms.sum(axis=0) if rows is None else self.terms[rows].sum(axis=0)
        ngram = _corpus_bleu(bleu, sums[BLEU], sums[HYPOTHESIS_LENGTH], sums[REFERENCE_LENGTH])
        weighted = _corpus_bleu(
            weighted_ngram_match, sums[WEIGHTED], sums[HYPOTHESIS_LENGTH], sums[WEIGHTED_REFERENCE_LENGTH]
        )
        syntax_matched, subtrees = sums[SYNTAX]
        flows_matched, flows = sums[DATAFLOW]
        if flows == 0 and rows is None:
            logging.warning("no data flow in any reference: CodeBLEU's data-flow match is 0 for this corpus")
        scores = {
            "codebleu_ngram": ngram,
            "codebleu_weighted_ngram": weighted,
            "codebleu_syntax": float(syntax_matched / subtrees),
            "codebleu_dataflow": float(flows_matched / flows) if flows else 0.0,
        }
        # The package counts a data-flow match of 0 as 1 in the overall score (whether no reference has a
        # data flow or none matched), and so do we, for numbers comparable with its users'.
        overall = 0.25 * (ngram + weighted + scores["codebleu_syntax"] + (scores["codebleu_dataflow"] or 1))
        return {"codebleu": overall, **scores}


def _corpus_bleu(module, counts: np.ndarray, hypothesis_length: float, reference_length: float) -> float:
    """The end of the package's corpus BLEU (``module`` being its BLEU or its weighted n-gram match), from
    the summed counts."""
    numerators, denominators = counts[:4], counts[4:]
    if numerators[0] == 0:
        return 0.0
    penalty = module.brevity_penalty(int(reference_length), int(hypothesis_length))
    smoothed = module.SmoothingFunction().method1(
        list(zip(numerators.tolist(), denominators.tolist(), strict=True))
    )
    return penalty * math.exp(math.fsum(0.25 * math.log(n / d) for n, d in smoothed))
