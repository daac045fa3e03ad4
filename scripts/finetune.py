#!/usr/bin/env python
"""Fine-tune GPT-1 on a task with transformers.Trainer, the recipe of Radford et al. (2018) §4.1.

    python scripts/finetune.py --task sst2 --model openai-community/openai-gpt --output-dir runs/sst2 \
        [--data-dir ../shared/data/glue] [--lm-coef 0.5] [--learning-rate 6.25e-5] [--batch-size 32] [--epochs 3]

    accelerate launch --multi_gpu --num_processes 2 scripts/finetune.py ...   # several processes / GPUs

    python scripts/finetune.py ... --peft lora [--lora-r 8] [--merge-adapter]     # a LoRA (or IA³) adapter
    python scripts/finetune.py ... --push-to-hub --hub-model-id user/name         # publish at the end

`python scripts/finetune.py --help` lists every option with the paper's defaults. Exit status: 0 done, 2 bad input
found before training (including a Hub token that cannot push), 1 a NaN/inf loss (earlier checkpoints kept) or a
failed upload (local output complete), 128 + N stopped by signal N (resumable). The logic lives in
`hf_gpt1.finetuning` so it can be imported and tested; this file only runs it.
"""

import sys

from hf_gpt1.finetuning import main

if __name__ == "__main__":
    sys.exit(main())
