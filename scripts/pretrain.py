#!/usr/bin/env python
"""Pretrain GPT-1 as in Radford et al. (2018) §3.1/§4.1: a causal LM on contiguous windows of unlabeled text.

    python scripts/pretrain.py --corpus PATH_OR_DATASET --model-config PRESET_OR_JSON --output-dir DIR [options]
    accelerate launch [--config_file configs/accelerate/...yaml] scripts/pretrain.py ...   # multi-process/-node
    python scripts/pretrain.py ... --init-from CHECKPOINT --peft lora [--merge-adapter]   # continued, with LoRA
    python scripts/pretrain.py ... --push-to-hub --hub-model-id user/name                  # publish at the end

`python scripts/pretrain.py --help` lists every option (the corpus, the model, and every transformers
TrainingArguments option, the batch size, learning rate, warmup and length defaulting to the --model-config preset).
The outputs, the options and their earlier spellings are described in README.md ("Pre-training and fine-tuning")
and in `hf_gpt1/pretraining_run.py`. Exit status: 0 done; 1 NaN/inf loss (the last good checkpoint is kept) or a
failed final Hub push (the model stays in OUTPUT_DIR); 2 bad input, including a Hub token that cannot push; 128+signal
after SIGINT/SIGTERM (a checkpoint is saved first; continue with --resume-from-checkpoint auto). The logic lives in
`hf_gpt1.pretraining_run` so it can be imported and tested; this file only runs it.
"""

import sys

from hf_gpt1.pretraining_run import main

if __name__ == "__main__":
    sys.exit(main())
