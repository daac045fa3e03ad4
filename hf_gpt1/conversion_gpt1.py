"""Checkpoints in transformers' `openai-gpt` layout -> GPT-1's (`GPT1PreTrainedModel.from_pretrained` converts on load).

Conv1D stores [in, out]; nn.Linear stores [out, in]. Ships next to `modeling_gpt1.py` as remote code (its relative
import), so it imports only torch/transformers and `.configuration_gpt1`.
"""

from __future__ import annotations

import os

import torch
from transformers import PretrainedConfig
from transformers.utils import cached_file, logging

from .configuration_gpt1 import GPT1Config

logger = logging.get_logger(__name__)

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def config_from_openai_gpt(openai_config: dict) -> GPT1Config:
    """Map a transformers `OpenAIGPTConfig` dict onto `GPT1Config` (same attribute names, by design)."""
    keep = (
        "vocab_size n_positions n_embd n_layer n_head afn resid_pdrop embd_pdrop attn_pdrop layer_norm_epsilon "
        "initializer_range id2label label2id problem_type pad_token_id bos_token_id eos_token_id"
    ).split()
    values = {k: openai_config[k] for k in keep if openai_config.get(k) is not None}
    if "summary_first_dropout" in openai_config:
        values["clf_pdrop"] = openai_config["summary_first_dropout"]
    return GPT1Config(**values)


def convert_openai_gpt_state_dict(
    state_dict: dict[str, torch.Tensor], model_class: type, config: GPT1Config
) -> dict[str, torch.Tensor]:
    """Rename/transpose an `openai-gpt` state dict (any of its head classes) into `model_class`'s layout.

    Conv1D stores [in, out]; nn.Linear stores [out, in]. Keys we cannot place are reported by name.
    """
    converted, unmapped, lm_head = {}, [], None
    has_score_bias = "score.bias" in state_dict
    for key, tensor in state_dict.items():
        name = key[len("transformer.") :] if key.startswith("transformer.") else key
        if name.startswith(("tokens_embed.", "positions_embed.")):
            converted[f"transformer.{name}"] = tensor
        elif name.startswith("h.") and name.endswith(".attn.bias"):
            continue  # the reference's causal-mask buffer
        elif name.startswith("h."):
            is_conv_weight = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
            converted[f"transformer.{name}"] = tensor.t().contiguous() if is_conv_weight else tensor
        elif name == "lm_head.weight":
            lm_head = tensor  # tied to tokens_embed; some reference heads save only this side of the tie
        elif name.startswith("multiple_choice_head.summary."):
            target = "multiple_choice_head.summary." if model_class.__name__ == "GPT1DoubleHeadsModel" else "score."
            converted[target + name.rsplit(".", 1)[1]] = tensor
        elif name == "score.weight":
            converted["score.weight"] = tensor
        else:
            unmapped.append(key)
    if "transformer.tokens_embed.weight" not in converted and lm_head is not None:
        converted["transformer.tokens_embed.weight"] = lm_head
    if "score.weight" in converted and not has_score_bias and "multiple_choice_head" not in " ".join(state_dict):
        converted["score.bias"] = torch.zeros(converted["score.weight"].shape[0], dtype=converted["score.weight"].dtype)
    if unmapped:
        logger.warning(
            f"openai-gpt checkpoint: {len(unmapped)} tensor(s) have no counterpart in {model_class.__name__} and were "
            f"dropped: {', '.join(unmapped[:10])}{' ...' if len(unmapped) > 10 else ''}"
        )
    expected = f"[{config.vocab_size}, {config.n_embd}]"
    tokens = converted.get("transformer.tokens_embed.weight")
    if tokens is None:
        raise ValueError("openai-gpt checkpoint has no tokens_embed.weight; it is not a GPT-1 checkpoint.")
    if list(tokens.shape) != [config.vocab_size, config.n_embd]:
        raise ValueError(f"openai-gpt checkpoint: tokens_embed.weight is {list(tokens.shape)}, config says {expected}.")
    return converted


def load_openai_gpt_state_dict(path, hub_kwargs: dict) -> dict[str, torch.Tensor]:
    """The state dict of an `openai-gpt` folder or Hub id (safetensors, else a weights-only torch file)."""
    weights_file = None
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights_file = cached_file(path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if weights_file is not None:
            break
    if weights_file is None:
        raise OSError(f"{path} has an openai-gpt config but neither model.safetensors nor pytorch_model.bin.")
    if weights_file.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(weights_file)
    return torch.load(weights_file, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects


class OpenAIGPTLoadingMixin:
    """`from_pretrained` of the GPT-1 model classes (mixed in before `PreTrainedModel`): also loads checkpoints in
    transformers' `openai-gpt` layout, and refuses other architectures' checkpoints with a clear error."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus checkpoints in transformers' `openai-gpt` layout.

        An `openai-gpt` folder or Hub id (e.g. `openai-community/openai-gpt`) is converted on the fly:
        its config becomes a `GPT1Config` and its Conv1D weights are transposed into our Linear layout.
        """
        config = kwargs.get("config")
        if pretrained_model_name_or_path is not None and (config is None or isinstance(config, (str, os.PathLike))):
            source = config if config is not None else pretrained_model_name_or_path
            hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            try:
                config_dict, _ = PretrainedConfig.get_config_dict(source, **hub_kwargs)
            except OSError:
                config_dict = {}  # let the regular path raise its usual, detailed error
            model_type = config_dict.get("model_type")
            if model_type == "openai-gpt":
                return cls._from_openai_gpt(pretrained_model_name_or_path, config_dict, *model_args, **kwargs)
            if model_type not in (None, GPT1Config.model_type):
                # transformers would only warn and then initialise a GPT-1 from scratch around foreign weights.
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a '{model_type}' checkpoint; {cls.__name__} loads 'gpt1' "
                    f"checkpoints (and converts transformers' 'openai-gpt' ones). Load it with its own class, or "
                    f"point to a GPT-1 checkpoint."
                )
        elif isinstance(config, PretrainedConfig) and config.model_type == "openai-gpt":
            return cls._from_openai_gpt(pretrained_model_name_or_path, config.to_dict(), *model_args, **kwargs)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":
                raise
            raise OSError(
                f"Could not read the weights of {pretrained_model_name_or_path}: {err}. The safetensors file is "
                f"truncated or corrupted (an interrupted download, copy or save); re-download or re-save it."
            ) from err

    @classmethod
    def _from_openai_gpt(cls, path, openai_config: dict, *model_args, **kwargs):
        kwargs.pop("config", None)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        config = config_from_openai_gpt(openai_config)
        for key in list(kwargs):  # config overrides such as num_labels=3, as from_pretrained accepts them
            if hasattr(config, key) and key not in _HUB_KWARGS:
                setattr(config, key, kwargs.pop(key))
        state_dict = load_openai_gpt_state_dict(path, hub_kwargs)
        state_dict = convert_openai_gpt_state_dict(state_dict, cls, config)
        logger.info(f"Converted openai-gpt checkpoint {path} to the gpt1 layout ({len(state_dict)} tensors).")
        for key in _HUB_KWARGS:
            kwargs.pop(key, None)
        return super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)
