"""GPT-1 configuration.

Defaults are the model of "Improving Language Understanding by Generative Pre-Training"
(Radford et al., 2018): 12 post-LayerNorm decoder blocks of width 768 with 12 heads, a 3072-wide
tanh-GELU MLP, learned positions over a 512-token context, and the 40,478-token BPE vocabulary.

Attribute names follow `transformers.OpenAIGPTConfig` so that code (and checkpoints) written for
`openai-gpt` reads naturally here; `attribute_map` gives the generic names (`hidden_size`, ...).

This file imports only `transformers` so it can be shipped as remote code next to a checkpoint.
"""

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig


@strict
class GPT1Config(PretrainedConfig):
    r"""
    Configuration of a GPT-1 model (`model_type = "gpt1"`).

    Args:
        vocab_size: size of the token embedding. 40,478 BPE tokens in the paper; the tokenizer helper
            (`hf_gpt1.add_special_tokens`) grows it when it appends start/delimiter/extract/pad.
        n_positions: context length (learned absolute position table), 512 in the paper.
        n_embd: hidden size. n_layer: number of blocks. n_head: attention heads (must divide n_embd).
        afn: MLP activation, a `transformers.activations.ACT2FN` name. The paper's GELU is the tanh
            approximation; `"gelu"` is accepted as in `OpenAIGPTConfig` and means the same thing.
        resid_pdrop / embd_pdrop / attn_pdrop: dropout on residual branches, embeddings and attention
            probabilities (0.1 each in the paper).
        layer_norm_epsilon: LayerNorm epsilon. initializer_range: std of the N(0, std) weight init.
        clf_pdrop: dropout on the extract-token state before the classifier (0.1 in the paper).
        lm_coef: weight λ of the auxiliary language-modelling loss in fine-tuning heads,
            L3 = L2 + λ·L1 (0.5 in the paper; 0 switches the auxiliary objective off).
        start_token_id / delimiter_token_id / extract_token_id / pad_token_id: ids of the paper's
            special tokens, `None` until a tokenizer registers them.
    """

    model_type = "gpt1"
    attribute_map = {
        "max_position_embeddings": "n_positions",
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "hidden_dropout_prob": "resid_pdrop",
        "attention_probs_dropout_prob": "attn_pdrop",
    }
    # Trainer gathers every output tensor except these during evaluation: the scalar loss parts
    # are logged separately, and the cache is never a prediction.
    keys_to_ignore_at_inference = ["cache", "task_loss", "lm_loss"]

    vocab_size: int = 40478
    n_positions: int = 512
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    afn: str = "gelu_pytorch_tanh"
    resid_pdrop: float | int = 0.1
    embd_pdrop: float | int = 0.1
    attn_pdrop: float | int = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    clf_pdrop: float | int = 0.1
    lm_coef: float | int = 0.5
    use_cache: bool = True
    start_token_id: int | None = None
    delimiter_token_id: int | None = None
    extract_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        # OpenAIGPTConfig calls its tanh-GELU "gelu"; in ACT2FN "gelu" is the exact erf form.
        # Keep the paper's function whichever spelling arrives.
        if self.afn in ("gelu", "gelu_new"):
            self.afn = "gelu_pytorch_tanh"
        self._check_shapes()  # a plain ValueError here, before the strict validators wrap it
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        super().validate_architecture()
        self._check_shapes()

    def _check_shapes(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPT1Config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) so every "
                f"head gets n_embd / n_head dimensions; e.g. n_embd={self.n_head * max(1, self.n_embd // self.n_head)}."
            )
        for name in ("n_positions", "n_embd", "n_layer", "n_head", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPT1Config: {name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "clf_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPT1Config: {name} must be in [0, 1), got {getattr(self, name)}.")


__all__ = ["GPT1Config"]
