#!/usr/bin/env python
"""Publish a saved GPT-1 checkpoint folder on the Hugging Face Hub.

    python scripts/push_to_hub.py runs/sst2 me/gpt1-sst2 --dry-run     # validate + list files and sizes, no network
    python scripts/push_to_hub.py runs/sst2 me/gpt1-sst2 [--private] [--token hf_...]

The folder is what `model.save_pretrained` + `tokenizer.save_pretrained` write (a `scripts/finetune.py` or
`scripts/pretrain.py` output directory works as it is: checkpoints, optimizer states and logs are skipped). It is
validated before anything is sent; the model card README.md is rendered from `model_card.md` when the folder has
none. See `hf_gpt1.hub.push_folder`.

Exit status: 0 pushed (or dry run listed), 1 the Hub refused or could not be reached, 2 the folder is not a
publishable GPT-1 checkpoint (or bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Validate a GPT-1 checkpoint folder and upload it to a Hugging Face Hub model repo.",
        epilog="Token: --token, else HF_TOKEN, else the token stored by `hf auth login` (`huggingface-cli login`).",
    )
    parser.add_argument("folder", help="Checkpoint folder (model + tokenizer saved with save_pretrained).")
    parser.add_argument("repo_id", help="Target repo 'namespace/name' (your user name or an organization).")
    parser.add_argument("--private", action="store_true", help="Create the repo private (no effect if it exists).")
    parser.add_argument("--dry-run", action="store_true", help="List what would be uploaded; no network access.")
    parser.add_argument("--token", default=None, help="Hub token with write access (default: HF_TOKEN / stored login).")
    parser.add_argument("--commit-message", default="Upload GPT-1 checkpoint", help="Message of the upload commit.")
    parser.add_argument("--revision", default=None, help="Branch to commit to (must exist; default: main).")
    parser.add_argument("--base-model", default=None, help="Hub id recorded as base_model in a rendered card.")
    parser.add_argument(
        "--task",
        default=None,
        help="Task of a fine-tuned model for a rendered card (e.g. sst2), "
        "when the folder's eval_results.json does not name it.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hf_gpt1.hub import CheckpointError, HubPushError, push_folder

    card_kwargs = {k: v for k, v in (("base_model", args.base_model), ("task", args.task)) if v is not None}
    try:
        result = push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            token=args.token,
            dry_run=args.dry_run,
            commit_message=args.commit_message,
            revision=args.revision,
            card_kwargs=card_kwargs,
        )
    except CheckpointError as error:
        print(f"push_to_hub.py: error: {error}", file=sys.stderr)
        return 2
    except HubPushError as error:
        if os.environ.get("HF_GPT1_DEBUG"):
            raise
        print(f"push_to_hub.py: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    if not args.dry_run:
        print(
            f"Load it with: AutoModel...from_pretrained({result.repo_id!r}) after `import hf_gpt1`, or with "
            f"trust_remote_code=True without the package."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
