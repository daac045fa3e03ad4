"""hf-gpt1: GPT-1 as a Hugging Face plugin. (Being assembled: modeling lands next.)"""

from .configuration_gpt1 import GPT1Config

__all__ = ["GPT1Config"]
