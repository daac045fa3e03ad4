#!/usr/bin/env python
"""`make demo`: the paper's central claim at CPU scale, from the shared data to docs/RESULTS.md.

    python scripts/reproduce.py [--budget smoke|quick|full] [--data-dir ../shared/data] [--output-dir runs/reproduce]
                                [--docs-dir docs] [--tasks sst2 cola mrpc story_cloze] [--seeds 0 1]
                                [--skip-pretrain] [--overwrite] [--with-task-text]

Trains a BPE on the corpus (small presets), pretrains a small GPT-1 with scripts/pretrain.py, scores the paper's
zero-shot heuristics along pretraining, fine-tunes (a) pretrained λ=0.5, (b) pretrained λ=0 and (c) random-init
λ=0.5 models on SST-2, CoLA, MRPC and Story Cloze, and writes the table, the claims checked against it and the
plots. `--with-task-text` is the labelled variant that adds the tasks' unlabeled training sentences to the
pretraining text (its own folders: runs/reproduce-task-text, docs/task-text). The stages and budgets are in
hf_gpt1/reproduction.py.
"""

from __future__ import annotations

import sys

from hf_gpt1.reproduction import main

if __name__ == "__main__":
    sys.exit(main())
