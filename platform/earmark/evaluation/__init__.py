"""`earmark eval`: score an annotation output against references (ASR, tagging, captions, answers).

Entry points for the CLI:
    result = evaluate(output, references)  # each a path, URL or storage.Location
    result = evaluate_predictions("preds.jsonl", references)  # predictions made elsewhere
    print_result(result); write_json(result, "eval.json")
    violations = check_thresholds(result, ["wer=0.2", "map>=0.3"])
"""

from earmark.evaluation.reading import read_output, read_references
from earmark.evaluation.runner import EvalResult, evaluate, evaluate_predictions
from earmark.evaluation.summary import check_thresholds, parse_threshold, print_result, write_json

__all__ = [
    "EvalResult",
    "check_thresholds",
    "evaluate",
    "evaluate_predictions",
    "parse_threshold",
    "print_result",
    "read_output",
    "read_references",
    "write_json",
]
