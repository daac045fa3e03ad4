"""GPT-1: the decoder of "Improving Language Understanding by Generative Pre-Training" (Radford et al., 2018).

The network in one file, read top to bottom: embeddings -> 12 post-LayerNorm blocks -> heads.

    h = tokens_embed(x) + positions_embed(pos)      learned absolute positions
    for each block:
        h = LN(h + attn(h))                          post-LN (GPT-2 later moved LN in front)
        h = LN(h + mlp(h))                           mlp = W2 · gelu_tanh(W1 · h)
    logits = h · tokens_embedᵀ                       LM head tied to the token table, no final LN

The fine-tuning heads (paper §3.2) read the final state at the extract token, h_l^m, feed it to a linear layer and
optimise L3 = L2 + λ·L1, L1 being the language-modelling loss on the same inputs.

HF plumbing (attention-function interface, masks, KV cache, output recording) follows transformers'
`models/gpt2/modeling_gpt2.py`. The file is plain PyTorch and ships as remote code next to checkpoints, so it imports
only torch, transformers and the siblings that ship with it (`configuration_gpt1`, `conversion_gpt1`,
`input_checks_gpt1`, `modeling_outputs_gpt1`). CPU speed paths plug in from outside (docs/ARCHITECTURE.md). Projections are `nn.Linear` ([out, in]) rather than the `Conv1D`
([in, out]) of transformers' `openai-gpt`, so PEFT and quantisers see ordinary linear layers; `openai-gpt`
checkpoints are converted on load (`conversion_gpt1`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_gpt1 import GPT1Config
from .conversion_gpt1 import OpenAIGPTLoadingMixin, config_from_openai_gpt, convert_openai_gpt_state_dict
from .input_checks_gpt1 import (
    check_choice_labels,
    check_class_labels,
    check_input_ids,
    check_lm_labels,
    check_model_kwargs,
    check_positions,
    tracing,
)
from .modeling_outputs_gpt1 import GPT1ClassifierOutput, GPT1DoubleHeadsModelOutput

# --- The network ------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ/√d + mask) · v, written out; the reference for every other implementation. Without a mask it is
    causal, the queries being the last positions of the keys (what sdpa's `is_causal` does when the mask is skipped)."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (batch, heads, q_len, kv_len)
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if attention_mask is None and q_len > 1:
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = may attend
            attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
        else:
            attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1).to(value.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2)  # (batch, seq, heads, head_dim)
    return attn_output, attn_weights


class GPT1Attention(nn.Module):
    """Causal multi-head self-attention with one fused q/k/v projection, computed by the attention function
    `config._attn_implementation` names (eager, sdpa, or any registered with transformers' `AttentionInterface`)."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the sdpa/flash integrations
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # rows: q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq, _ = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(batch, seq, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)
        if cache is not None:  # append this step's keys/values, get the whole history back
            key, value = cache.update(key, value, self.layer_idx)

        implementation = self.config._attn_implementation
        if kwargs.get("output_attentions") and implementation == "sdpa":
            implementation = "eager"  # sdpa never forms the weights; asked for, they come from the written-out softmax
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attn_pdrop if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch, seq, -1)
        return self.resid_dropout(self.c_proj(attn_output)), attn_weights


class GPT1MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide, tanh-GELU (paper §4.1)."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.act = ACT2FN[config.afn]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT1Block(GradientCheckpointingLayer):
    """One post-LayerNorm transformer block."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.attn = GPT1Attention(config, layer_idx)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT1MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        h = self.ln_1(x + self.attn(x, attention_mask, cache, **kwargs)[0])
        return self.ln_2(h + self.mlp(h))


# --- Pretrained-model plumbing and the base model ---------------------------------------------------------------------


class GPT1PreTrainedModel(OpenAIGPTLoadingMixin, PreTrainedModel):
    config: GPT1Config
    config_class = GPT1Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT1Block"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    _supports_attention_backend = True
    # Traced, the forwards have no host syncs (the input checks step aside, the auxiliary LM loss keeps static shapes):
    # torch.compile(model, fullgraph=True) works for every class.
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": GPT1Block, "attentions": OutputRecorder(GPT1Attention, index=1)}
    # `openai-gpt` checkpoints carry the causal mask as a buffer; we build masks per call instead.
    _keys_to_ignore_on_load_unexpected = [r"\.attn\.bias$"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """N(0, initializer_range) for weights and embeddings, zero biases, unit LayerNorm (paper §4.1)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """`PreTrainedModel.push_to_hub`, then hf-gpt1's model card (Hub metadata, hyperparameters, the paper's
        citation) replaces transformers' generic README. As remote code without the plugin: the generic card."""
        result = super().push_to_hub(repo_id, *args, **kwargs)
        try:
            from hf_gpt1.hub import upload_model_card
        except ImportError:
            return result
        upload_model_card(self, repo_id, token=kwargs.get("token"), revision=kwargs.get("revision"))
        return result


class GPT1Model(GPT1PreTrainedModel):
    """The bare decoder. Accepts any leading shape, e.g. (batch, choices, seq), and keeps it in the output.
    `torch.compile(model, fullgraph=True)` works: traced, the forward has no host syncs (the input checks step aside)."""

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT1Block(config, layer_idx=i) for i in range(config.n_layer)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tokens_embed

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.tokens_embed = new_embeddings

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        """token_type_ids: optional ids embedded with the token table and added to the input, as in the original
        code and transformers' `OpenAIGPTModel` (GPT-1 has no separate segment table)."""
        check_model_kwargs(self, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GPT1Model: pass exactly one of input_ids or inputs_embeds.")
        # The config's output_attentions reaches the attention modules too (they switch to eager to form the weights).
        kwargs.setdefault("output_attentions", self.config.output_attentions)
        # Fold leading dims (batch, choices, ...) into one batch dim; restored at the end.
        leading_shape = input_ids.shape[:-1] if input_ids is not None else inputs_embeds.shape[:-2]
        if input_ids is not None:
            input_ids = input_ids.reshape(-1, input_ids.shape[-1])
            # PEFT may wrap tokens_embed (trainable token rows); config.vocab_size follows resize_token_embeddings.
            check_input_ids(input_ids, getattr(self.tokens_embed, "num_embeddings", None) or self.config.vocab_size)
            inputs_embeds = self.tokens_embed(input_ids)
        else:
            inputs_embeds = inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])
        seq_len = inputs_embeds.shape[1]  # inputs_embeds: (batch, seq, E)
        if attention_mask is not None and attention_mask.dim() < 4:
            attention_mask = attention_mask.reshape(inputs_embeds.shape[0], -1)
        if position_ids is not None:
            position_ids = position_ids.reshape(-1, position_ids.shape[-1])

        if use_cache and cache is None and not self.training:
            cache = DynamicCache(config=self.config)
        past_seen = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = self._position_ids(attention_mask, past_seen, seq_len, inputs_embeds.device)
        check_positions(position_ids, past_seen, seq_len, self.config.n_positions)

        hidden_states = inputs_embeds + self.positions_embed(position_ids)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.tokens_embed(token_type_ids.reshape(-1, token_type_ids.shape[-1]))
        hidden_states = self.drop(hidden_states)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        for block in self.h:
            hidden_states = block(hidden_states, causal_mask, cache, position_ids=position_ids, **kwargs)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states.reshape(*leading_shape, seq_len, -1),
            cache=cache if use_cache else None,
        )

    @staticmethod
    def _position_ids(attention_mask, past_seen: int, seq_len: int, device) -> torch.Tensor:
        """Absolute positions counted over real tokens, so a left-padded row starts at position 0 like an
        unpadded one (matters for incremental decoding of padded batches). Without padding: past_seen + arange."""
        plain = (torch.arange(seq_len, device=device) + past_seen).unsqueeze(0)
        if attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape[-1] < seq_len:
            return plain
        counted = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
        # A mask without padding keeps past_seen + arange (whatever length it has); chosen without a host sync.
        return torch.where(attention_mask.bool().all(-1, keepdim=True), plain, counted)


# --- Heads ------------------------------------------------------------------------------------------------------------


class GPT1ForCausalLM(GPT1PreTrainedModel, GenerationMixin):
    """GPT-1 with its language-modelling head (the pretraining objective L1), tied to the token embedding."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """`labels` are shifted inside (set labels = input_ids); -100 marks positions that are not scored."""
        check_model_kwargs(self, kwargs)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))  # (batch, seq, V)
        loss = None
        if labels is not None:
            check_lm_labels(labels[..., 1:], logits.shape[-1])  # position 0 is never a target
            loss = self.loss_function(logits, labels, vocab_size=logits.shape[-1], **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


GPT1LMHeadModel = GPT1ForCausalLM  # the name users of OpenAIGPTLMHeadModel reach for


class _GPT1FineTuningHeadMixin:
    """The fine-tuning heads' shared part (paper §3.2): run the transformer, read h_l^m at the extract token, hand it
    to the head's `task_head`, and add the auxiliary LM loss: L3 = L2 + λ·L1."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}
    # Trainer must not pass num_items_in_batch: it would count *task* labels, which says nothing about how
    # many tokens the auxiliary LM loss averages over. Our losses are means; Trainer rescales for accumulation.
    accepts_loss_kwargs = False

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mc_token_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        lm_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GPT1ClassifierOutput:
        """mc_token_ids: the extract token's index in every sequence (input_ids without the seq dim); found from the
        ids if omitted. labels: the task's targets (see the head's class). lm_labels: targets of the auxiliary LM loss
        (default: the input ids with padding masked)."""
        outputs, hidden_states, extract_states = self.encode_extract_states(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, mc_token_ids, **kwargs
        )
        logits, task_loss = self.task_head(extract_states, labels)
        lm_loss = None  # L1, computed only when it counts: λ ≠ 0 and a loss is asked for
        if self.config.lm_coef != 0 and (labels is not None or lm_labels is not None):
            lm_loss = self.auxiliary_lm_loss(hidden_states, input_ids, attention_mask, lm_labels)
        loss = task_loss if task_loss is None or lm_loss is None else task_loss + self.config.lm_coef * lm_loss
        return GPT1ClassifierOutput(
            loss=loss,
            logits=logits,
            task_loss=task_loss,
            lm_loss=lm_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def encode_extract_states(
        self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, mc_token_ids, **kwargs
    ):
        """Run the transformer; return its outputs, the final hidden states (batch, [choices or 2,] seq, E) and
        h_l^m at each extract token (batch, [choices or 2,] E)."""
        check_model_kwargs(self, kwargs)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if mc_token_ids is None:
            mc_token_ids = self.extract_positions(
                input_ids, attention_mask, hidden_states.shape[:-1], hidden_states.device
            )
        index = mc_token_ids.unsqueeze(-1).unsqueeze(-1).expand(*mc_token_ids.shape, 1, hidden_states.shape[-1])
        return outputs, hidden_states, hidden_states.gather(-2, index).squeeze(-2)

    def extract_positions(self, input_ids, attention_mask, seq_shape: torch.Size, device) -> torch.Tensor:
        """Index of the extract token in every sequence: the last `extract_token_id` if the config knows it,
        else the last non-padding token (what `pipeline(...)` callers without `mc_token_ids` get)."""
        seq_len = seq_shape[-1]
        index = torch.arange(seq_len, device=device)
        if attention_mask is not None:
            last_real = (attention_mask.reshape(seq_shape).long() * index).argmax(-1)
        elif input_ids is not None and self.config.pad_token_id is not None:
            last_real = ((input_ids != self.config.pad_token_id).long() * index).argmax(-1)
        else:
            last_real = torch.full(seq_shape[:-1], seq_len - 1, device=device, dtype=torch.long)
        if input_ids is None or self.config.extract_token_id is None:
            return last_real
        is_extract = input_ids == self.config.extract_token_id
        last_extract = (is_extract.long() * index).argmax(-1)
        return torch.where(is_extract.any(-1), last_extract, last_real)

    def auxiliary_lm_loss(self, hidden_states, input_ids, attention_mask, lm_labels) -> torch.Tensor | None:
        """L1 on the task inputs themselves: predict every next token, padding excluded. Mean per sequence, then over
        sequences, as the original train.py does: every sequence weighs the same whatever its length, which also
        keeps gradient accumulation exact for micro-batches of unequal lengths."""
        if lm_labels is None:
            if input_ids is None:
                return None
            lm_labels = input_ids
            if attention_mask is not None:
                lm_labels = lm_labels.masked_fill(attention_mask.reshape(input_ids.shape) == 0, -100)
            elif self.config.pad_token_id is not None:
                lm_labels = lm_labels.masked_fill(input_ids == self.config.pad_token_id, -100)
        hidden = hidden_states[..., :-1, :].reshape(-1, hidden_states.shape[-1])  # (sequences * (seq - 1), E)
        targets = lm_labels[..., 1:].reshape(-1, lm_labels.shape[-1] - 1)  # (sequences, seq - 1)
        keep = targets != -100
        if tracing():  # static shapes: every position goes through the vocabulary, unscored ones count 0
            token_losses = self.token_lm_losses(self.lm_head(hidden), targets.reshape(-1)).view(targets.shape)
        else:  # eager: only the scored positions are projected onto the vocabulary (padding can be half a batch)
            logits = self.lm_head(hidden[keep.reshape(-1)])  # (scored tokens, V)
            check_lm_labels(targets, logits.shape[-1])
            scored_losses = self.token_lm_losses(logits, targets[keep])
            token_losses = scored_losses.new_zeros(targets.shape).masked_scatter(keep, scored_losses)
        counts = keep.sum(dim=1)
        per_sequence = token_losses.sum(dim=1) / counts.clamp(min=1)
        scored = (counts > 0).to(per_sequence.dtype)
        return (per_sequence * scored).sum() / scored.sum().clamp(min=1)

    def token_lm_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token fp32 cross-entropy of logits (N, V) against targets (N,), 0 where a target is -100. An instance
        may carry its own (like `loss_function`), computing the same numbers another way."""
        return F.cross_entropy(logits.float(), targets, reduction="none")


class GPT1ForSequenceClassification(_GPT1FineTuningHeadMixin, GPT1PreTrainedModel):
    """Paper §3.3 classification, entailment and similarity: a linear layer on h_l^m at the extract token.

    - input_ids (batch, seq): classification / entailment; `num_labels == 1` gives regression (STS-B).
    - input_ids (batch, 2, seq): the *similarity* mode — both orderings of a sentence pair, whose extract
      states are summed before the classifier, as the paper does for MRPC/QQP/STS-B.
    labels: class ids (batch,), or float targets for regression. mc_token_ids: (batch,) or (batch, 2).
    loss = task_loss + lm_coef * lm_loss (L3 = L2 + λ·L1); both parts are returned too.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # for the auxiliary L1
        self.clf_dropout = nn.Dropout(config.clf_pdrop)
        self.score = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()

    def task_head(self, extract_states: torch.Tensor, labels: torch.Tensor | None):
        if extract_states.dim() == 3:  # similarity: sum the representations of both orderings
            extract_states = extract_states.sum(dim=1)
        logits = self.score(self.clf_dropout(extract_states))  # (batch, num_labels)
        return logits, (self._task_loss(logits, labels) if labels is not None else None)

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:  # as transformers' sequence classifiers infer it
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(-1))
        if self.config.problem_type == "single_label_classification":
            check_class_labels(labels, self.num_labels)
            return F.cross_entropy(logits.float(), labels.reshape(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class GPT1ForMultipleChoice(_GPT1FineTuningHeadMixin, GPT1PreTrainedModel):
    """Paper §3.3 multiple choice (Story Cloze, RACE, SWAG): one `start context delim answer extract` sequence per
    answer, input (batch, choices, seq), each scored by a linear layer on its extract state, softmax over choices.
    mc_token_ids: (batch, choices); labels: (batch,), the index of the right choice."""

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # for the auxiliary L1
        self.clf_dropout = nn.Dropout(config.clf_pdrop)
        self.score = nn.Linear(config.n_embd, 1)
        self.post_init()

    def task_head(self, extract_states: torch.Tensor, labels: torch.Tensor | None):
        if extract_states.dim() != 3:  # (batch, choices, E)
            raise ValueError(
                f"GPT1ForMultipleChoice expects input_ids of shape (batch, num_choices, seq_len), got "
                f"{extract_states.dim()}-dimensional input."
            )
        logits = self.score(self.clf_dropout(extract_states)).squeeze(-1)  # (batch, choices)
        if labels is None:
            return logits, None
        check_choice_labels(labels, logits.shape[-1])
        return logits, F.cross_entropy(logits.float(), labels.reshape(-1))


class GPT1MultipleChoiceHead(nn.Module):
    """`summary` projection named as in transformers' `OpenAIGPTSequenceSummary`, so its weights load as they are."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        self.first_dropout = nn.Dropout(config.clf_pdrop)
        self.summary = nn.Linear(config.n_embd, 1)

    def forward(self, extract_states: torch.Tensor) -> torch.Tensor:
        return self.summary(self.first_dropout(extract_states))


class GPT1DoubleHeadsModel(_GPT1FineTuningHeadMixin, GPT1PreTrainedModel):
    """Drop-in for `transformers.OpenAIGPTDoubleHeadsModel`: same arguments (`mc_token_ids`, `labels` for the LM,
    `mc_labels` for the choice) and outputs (`loss` = LM loss, `mc_loss`, `logits` = LM logits, `mc_logits`)."""

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.multiple_choice_head = GPT1MultipleChoiceHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mc_token_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        mc_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GPT1DoubleHeadsModelOutput:
        if mc_token_ids is None:  # as the reference: the last token of every sequence
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            mc_token_ids = torch.full(shape[:-1], shape[-1] - 1, device=device)
        outputs, hidden_states, extract_states = self.encode_extract_states(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, mc_token_ids, **kwargs
        )
        lm_logits = self.lm_head(hidden_states)  # (batch, choices, seq, V)
        mc_logits = self.multiple_choice_head(extract_states).squeeze(-1)  # (batch, choices)
        mc_loss = lm_loss = None
        if mc_labels is not None:
            mc_loss = F.cross_entropy(mc_logits.reshape(-1, mc_logits.shape[-1]), mc_labels.reshape(-1))
        if labels is not None:
            shift_logits = lm_logits[..., :-1, :].reshape(-1, lm_logits.shape[-1])
            lm_loss = F.cross_entropy(shift_logits, labels[..., 1:].reshape(-1))
        return GPT1DoubleHeadsModelOutput(
            loss=lm_loss,
            mc_loss=mc_loss,
            logits=lm_logits,
            mc_logits=mc_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "GPT1PreTrainedModel",
    "GPT1Model",
    "GPT1ForCausalLM",
    "GPT1LMHeadModel",
    "GPT1ForSequenceClassification",
    "GPT1ForMultipleChoice",
    "GPT1DoubleHeadsModel",
    "GPT1ClassifierOutput",
    "GPT1DoubleHeadsModelOutput",
    "config_from_openai_gpt",
    "convert_openai_gpt_state_dict",
]
