"""The shipped offline ``evaluate`` metric module against scikit-learn / SciPy, and
``adapter.compute_metrics`` on EvalPredictions (including inside a real ``Trainer``)."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

import task_adapters as ta
from task_adapters import METRIC_SCRIPT, load_metric

rng = np.random.default_rng(0)
N = 200
Y2 = rng.integers(0, 2, N)
P2 = np.where(rng.random(N) < 0.7, Y2, 1 - Y2)  # correlated predictions, so all metrics are non-trivial
YS = rng.uniform(0, 5, N).astype(np.float32)
PS = (YS + rng.normal(0, 1, N)).astype(np.float32)


@pytest.mark.parametrize(
    "config", ["accuracy", "sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli"]
)
def test_accuracy(config):
    y = rng.integers(0, 3, N)
    p = np.where(rng.random(N) < 0.6, y, (y + 1) % 3)
    assert load_metric(config).compute(predictions=p, references=y) == {"accuracy": accuracy_score(y, p)}


@pytest.mark.parametrize("config", ["accuracy_f1", "mrpc", "qqp"])
def test_f1_and_accuracy(config):
    out = load_metric(config).compute(predictions=P2, references=Y2)
    assert out == {"accuracy": accuracy_score(Y2, P2), "f1": f1_score(Y2, P2)}
    assert 0.5 < out["f1"] < 1.0


@pytest.mark.parametrize("config", ["matthews_correlation", "cola"])
def test_matthews(config):
    out = load_metric(config).compute(predictions=P2, references=Y2)
    assert out == {"matthews_correlation": matthews_corrcoef(Y2, P2)}
    assert 0.2 < out["matthews_correlation"] < 0.8


@pytest.mark.parametrize("config", ["pearson_spearmanr", "stsb"])
def test_pearson_spearman(config):
    out = load_metric(config).compute(predictions=PS, references=YS)
    # identical to SciPy on the float32 values the metric (like GLUE's) stores ...
    assert out == {"pearson": float(pearsonr(PS, YS)[0]), "spearmanr": float(spearmanr(PS, YS)[0])}
    # ... and to float64 within float32 rounding
    assert out["pearson"] == pytest.approx(pearsonr(PS.astype(np.float64), YS.astype(np.float64))[0], rel=1e-6)


def test_loads_offline_with_plain_evaluate_and_rejects_unknown_config():
    metric = evaluate.load(str(METRIC_SCRIPT), "mrpc")  # HF_HUB_OFFLINE=1 in the test session
    assert metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {
        "accuracy": 0.75,
        "f1": f1_score([0, 1, 0, 0], [0, 1, 1, 0]),
    }
    with pytest.raises(KeyError, match="unknown config 'bleu'"):
        evaluate.load(str(METRIC_SCRIPT), "bleu")


@pytest.mark.parametrize("task", ta.list_tasks())
def test_every_task_reports_its_metrics(task):
    adapter = ta.get_adapter(task)
    n, k = 40, adapter.num_labels
    labels = YS[:n] if adapter.spec.is_regression else rng.integers(0, k, n)
    logits = PS[:n, None] if adapter.spec.is_regression else rng.normal(size=(n, k))
    out = adapter.compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert set(out) == set(adapter.spec.metric_names)


def test_compute_metrics_classification_argmax_and_unlabeled_rows():
    adapter = ta.get_adapter("mrpc")
    logits = np.zeros((N, 2))
    logits[np.arange(N), P2] = 1.0
    labels = Y2.copy()
    labels[:10] = -1  # unlabeled rows are not scored
    lm_logits = rng.normal(size=(N, 2, 5, 7)).astype(np.float32)  # extra model outputs are ignored
    lm_labels = rng.integers(0, 7, size=(N, 2, 5))
    out = adapter.compute_metrics(EvalPrediction(predictions=(lm_logits, logits), label_ids=(labels, lm_labels)))
    assert out == {"accuracy": accuracy_score(Y2[10:], P2[10:]), "f1": f1_score(Y2[10:], P2[10:])}


def test_compute_metrics_regression_squeezes_and_multiple_choice():
    out = ta.get_adapter("stsb").compute_metrics((PS[:, None], YS))  # a plain (predictions, labels) tuple works
    assert out["pearson"] == float(pearsonr(PS, YS)[0])
    y = rng.integers(0, 4, N)
    logits = rng.normal(size=(N, 4))
    assert ta.get_adapter("race").compute_metrics(EvalPrediction(logits, y)) == {
        "accuracy": accuracy_score(y, logits.argmax(-1))
    }


def test_compute_metrics_errors():
    adapter = ta.get_adapter("sst2")
    with pytest.raises(ValueError, match="no labels to score"):
        adapter.compute_metrics(EvalPrediction(np.zeros((3, 2)), None))
    with pytest.raises(ValueError, match="no gold labels"):
        adapter.compute_metrics(EvalPrediction(np.zeros((3, 2)), np.full(3, -1)))
    with pytest.raises(ValueError, match=r"task-logits shape \(n, 2\); got shapes \[\(3, 5\)\]"):
        adapter.compute_metrics(EvalPrediction(np.zeros((3, 5)), np.zeros(3)))


def test_preprocess_logits_for_metrics_keeps_task_logits():
    task = torch.randn(4, 3)
    picked = ta.get_adapter("mnli").preprocess_logits_for_metrics((torch.randn(4, 9, 11), task), None)
    assert picked is task


def test_trainer_evaluate_end_to_end(tmp_path, glue_dir, gpt1_tokenizer):
    """Trainer + GPT1DataCollator + compute_metrics + preprocess_logits_for_metrics on real MRPC rows
    and the plugin's similarity head: eval metrics come back with the GLUE names."""
    from transformers import Trainer, TrainingArguments

    from hf_gpt1 import GPT1Config, GPT1ForSequenceClassification

    torch.manual_seed(0)
    adapter = ta.get_adapter("mrpc")
    data = adapter.encode(ta.load_task("mrpc", glue_dir)["validation"].select(range(12)), gpt1_tokenizer, max_length=64)
    model = GPT1ForSequenceClassification(
        GPT1Config(
            vocab_size=len(gpt1_tokenizer),
            n_embd=32,
            n_layer=1,
            n_head=2,
            num_labels=adapter.num_labels,
            id2label=adapter.spec.id2label,
            label2id=adapter.spec.label2id,
            extract_token_id=40480,
            pad_token_id=40481,
        )
    )
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path), per_device_eval_batch_size=5, report_to=[], use_cpu=True, dataloader_num_workers=0
        ),
        eval_dataset=data,
        data_collator=ta.GPT1DataCollator(gpt1_tokenizer),
        compute_metrics=adapter.compute_metrics,
        preprocess_logits_for_metrics=adapter.preprocess_logits_for_metrics,
    )
    metrics = trainer.evaluate()
    assert {"eval_accuracy", "eval_f1", "eval_loss"} <= set(metrics)
    preds = trainer.predict(data)
    labels = np.asarray(data["labels"][:])
    logits = preds.predictions if not isinstance(preds.predictions, tuple) else preds.predictions[0]
    assert metrics["eval_accuracy"] == pytest.approx(accuracy_score(labels, np.asarray(logits).argmax(-1)))
