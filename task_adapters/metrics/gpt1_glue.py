"""GLUE-style metrics for the GPT-1 task adapters, as an offline ``evaluate`` module.

Why this exists: ``evaluate.load("glue", "mrpc")`` downloads its script from the Hub, which fails
offline. This file is a self-contained ``evaluate.Metric`` that computes the same numbers with the
same formulas (scikit-learn / SciPy), and loads from disk::

    import evaluate
    from task_adapters.metrics import METRIC_SCRIPT
    metric = evaluate.load(str(METRIC_SCRIPT), "mrpc")      # or "accuracy_f1"
    metric.compute(predictions=[0, 1], references=[0, 1])  # {'accuracy': 1.0, 'f1': 1.0}

Config names: the metric sets ``accuracy``, ``accuracy_f1``, ``matthews_correlation``,
``pearson_spearmanr``, and the GLUE task names (``sst2``, ``mnli``, ``mnli_matched``,
``mnli_mismatched``, ``qnli``, ``rte``, ``wnli``, ``hans``, ``mrpc``, ``qqp``, ``cola``, ``stsb``)
mapped like the official GLUE metric. Keep this file free of package-relative imports: ``evaluate``
copies it into its module cache and imports it from there.
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_DESCRIPTION = """GLUE metrics (accuracy, F1+accuracy, Matthews correlation, Pearson/Spearman) computed
offline, for GPT-1 fine-tuning on GLUE, SNLI, SciTail, RACE, Story Cloze and SWAG."""

_CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={ICLR}, year={2019}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted label ids (class / choice index), or scores for ``pearson_spearmanr`` / ``stsb``.
    references: gold label ids, or gold scores.
Returns: depending on the config
    accuracy: {"accuracy"}; accuracy_f1: {"accuracy", "f1"} (binary F1 of class 1);
    matthews_correlation: {"matthews_correlation"}; pearson_spearmanr: {"pearson", "spearmanr"}.
"""

METRIC_SETS = {
    "accuracy": "accuracy",
    "accuracy_f1": "accuracy_f1",
    "matthews_correlation": "matthews_correlation",
    "pearson_spearmanr": "pearson_spearmanr",
    "sst2": "accuracy",
    "mnli": "accuracy",
    "mnli_matched": "accuracy",
    "mnli_mismatched": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "hans": "accuracy",
    "mrpc": "accuracy_f1",
    "qqp": "accuracy_f1",
    "cola": "matthews_correlation",
    "stsb": "pearson_spearmanr",
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gpt1Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in METRIC_SETS:
            raise KeyError(f"unknown config {self.config_name!r}; use one of {sorted(METRIC_SETS)}")
        dtype = "float32" if METRIC_SETS[self.config_name] == "pearson_spearmanr" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            codebase_urls=[],
            reference_urls=["https://gluebenchmark.com/"],
            format="numpy",
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("no predictions/references to score")
        kind = METRIC_SETS[self.config_name]
        if kind == "accuracy":
            return {"accuracy": float((predictions == references).mean())}
        if kind == "accuracy_f1":
            return {
                "accuracy": float((predictions == references).mean()),
                "f1": float(f1_score(y_true=references, y_pred=predictions)),
            }
        if kind == "matthews_correlation":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        return {
            "pearson": float(pearsonr(predictions, references)[0]),
            "spearmanr": float(spearmanr(predictions, references)[0]),
        }
