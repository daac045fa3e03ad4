#!/usr/bin/env python
"""Convert GPT-1 weights into a native `gpt1` checkpoint folder (safetensors + tokenizer).

    # the original OpenAI release (github.com/openai/finetune-transformer-lm, or its model/ folder)
    python scripts/convert_openai_checkpoint.py --src finetune-transformer-lm --dst gpt1-base

    # a transformers `openai-gpt` checkpoint (folder or Hub id, e.g. openai-community/openai-gpt)
    python scripts/convert_openai_checkpoint.py --from-hf --src openai-gpt-folder --dst gpt1-base

The result loads with `hf_gpt1.GPT1ForCausalLM.from_pretrained(dst)` and `AutoTokenizer.from_pretrained(dst)`.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--src",
        required=True,
        help="release folder (or its model/ subfolder); with --from-hf an openai-gpt checkpoint folder or Hub id",
    )
    parser.add_argument("--dst", required=True, help="output folder; must not exist (or be empty)")
    parser.add_argument("--n-head", type=int, default=12, help="attention heads (not recorded in the release; 12)")
    parser.add_argument("--from-hf", action="store_true", help="convert a transformers openai-gpt checkpoint")
    parser.add_argument(
        "--no-special-tokens",
        action="store_true",
        help="keep the plain 40,478-token vocabulary (no _start_/_delimiter_/_classify_/<pad>)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hf_gpt1.convert_openai_checkpoint import convert_hf_openai_checkpoint, convert_openai_checkpoint

    add_special_tokens = not args.no_special_tokens
    try:
        if args.from_hf:
            report = convert_hf_openai_checkpoint(args.src, args.dst, add_special_tokens=add_special_tokens)
        else:
            report = convert_openai_checkpoint(
                args.src, args.dst, n_head=args.n_head, add_special_tokens=add_special_tokens
            )
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
