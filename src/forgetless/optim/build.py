"""`build`: one optimizer for a whole model, hidden matrices on the named rule, the rest on AdamW.

Routing of each trainable parameter (requires_grad=False is skipped; a tensor met twice, as tied
embeddings, is counted once):
1. name == "adamw": everything goes to AdamW.
2. `hidden_patterns` given: a parameter whose name matches one of them (re.search) goes to the
   rule (a non-2-D one is an error for a matrix rule); every other parameter goes to AdamW.
3. otherwise a 2-D parameter whose name matches none of `adamw_patterns` goes to the rule;
   embeddings, the output head, norms, biases and any non-2-D parameter go to AdamW.
The default `adamw_patterns` cover Hugging Face Llama/Mistral/Qwen (`embed_tokens`, `lm_head`,
`*norm`), GPT-2 (`wte`, `wpe`, `ln_1`, `ln_2`, `ln_f`) and PEFT (`lora_A`/`lora_B` are hidden
matrices and go to the rule; `modules_to_save` copies of the head or embeddings go to AdamW).

Orientation: the column/row rules need columns = inputs, i.e. W of shape (d_out, d_in) as
`nn.Linear` stores it. GPT-2's `Conv1D` stores (d_in, d_out); when a module is given, the weights
of modules whose class is named `Conv1D` are put in a group with `transposed=True`, and
`transposed_patterns` does the same by name (needed when only named parameters are given).

One lr serves both sides (as Moonlight and LLaMA-Factory do) unless `adamw_lr` is given.
By default the AdamW side decays only parameters with >= 2 dimensions (embeddings, head), not norm
gains or biases (nanoGPT's convention); `decay_1d=True` decays them too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from .optimizer import SteepestDescent
from .registry import OPTIMIZERS, describe

DEFAULT_ADAMW_PATTERNS: tuple[str, ...] = (
    r"embed",                    # embed_tokens, embed_positions, lora_embedding_A/B
    r"(^|\.)(wte|wpe)(\.|$)",    # GPT-2 token / position embeddings
    r"lm_head",                  # output head (also PEFT modules_to_save copies)
    r"norm",                     # input_layernorm, post_attention_layernorm, model.norm, q_norm
    r"(^|\.)ln_\w*(\.|$)",       # GPT-2 ln_1, ln_2, ln_f
    r"bias$",
)


def _check_positive(field: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{field} must be a number > 0, got {value!r}")


def _named(model_or_named_params: nn.Module | Iterable[tuple[str, Tensor]]
           ) -> tuple[list[tuple[str, Tensor]], set[str]]:
    """Trainable (name, parameter) pairs, each tensor once, and the names of Conv1D weights."""
    conv1d: set[str] = set()
    if isinstance(model_or_named_params, nn.Module):
        pairs = list(model_or_named_params.named_parameters())
        for mod_name, mod in model_or_named_params.named_modules():
            if type(mod).__name__ == "Conv1D":
                conv1d.add(f"{mod_name}.weight" if mod_name else "weight")
    else:
        pairs = list(model_or_named_params)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Tensor)):
                raise TypeError("model_or_named_params must be an nn.Module or an iterable of "
                                f"(name, tensor) pairs, got an element {type(pair).__name__}")
    seen: set[int] = set()
    out = []
    for name, p in pairs:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out, conv1d


def route(
    model_or_named_params: nn.Module | Iterable[tuple[str, Tensor]],
    name: str,
    hidden_patterns: list[str] | None = None,
    adamw_patterns: list[str] | None = None,
    transposed_patterns: list[str] | None = None,
) -> dict[str, list[tuple[str, Tensor]]]:
    """Split trainable parameters into {"rule", "rule_transposed", "adamw"} (see module doc)."""
    info = describe(name)
    pairs, conv1d = _named(model_or_named_params)
    adamw_re = [re.compile(p) for p in (DEFAULT_ADAMW_PATTERNS if adamw_patterns is None
                                        else adamw_patterns)]
    hidden_re = None if hidden_patterns is None else [re.compile(p) for p in hidden_patterns]
    transposed_re = [re.compile(p) for p in (transposed_patterns or [])]
    out: dict[str, list[tuple[str, Tensor]]] = {"rule": [], "rule_transposed": [], "adamw": []}
    for pname, p in pairs:
        if name == "adamw":
            to_rule = False
        elif hidden_re is not None:
            to_rule = any(r.search(pname) for r in hidden_re)
            if to_rule and p.ndim != 2 and not info.element_wise:
                raise ValueError(
                    f"hidden_patterns sends parameter {pname!r} of shape {tuple(p.shape)} to "
                    f"matrix rule {name!r}; allowed: 2-D parameters only")
        else:
            to_rule = p.ndim == 2 and not any(r.search(pname) for r in adamw_re)
        if not to_rule:
            out["adamw"].append((pname, p))
        elif pname in conv1d or any(r.search(pname) for r in transposed_re):
            out["rule_transposed"].append((pname, p))
        else:
            out["rule"].append((pname, p))
    return out


def build(
    model_or_named_params: nn.Module | Iterable[tuple[str, Tensor]],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    *,
    adamw_lr: float | None = None,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    adamw_eps: float = 1e-8,
    momentum: float | None = None,
    hidden_patterns: list[str] | None = None,
    adamw_patterns: list[str] | None = None,
    transposed_patterns: list[str] | None = None,
    decay_1d: bool = False,
    distributed: bool = False,
    process_group: Any = None,
    **rule_kwargs: Any,
) -> SteepestDescent:
    """A `SteepestDescent` optimizer: hidden matrices on rule `name`, the rest on AdamW.

    Args:
        model_or_named_params: an nn.Module, or (name, parameter) pairs.
        name: a name of `OPTIMIZERS` (`forgetless optimizers` lists them).
        lr: learning rate of both sides (> 0); `adamw_lr` overrides it for the AdamW side.
        weight_decay: decoupled weight decay (>= 0), W <- (1 - lr wd) W, both sides.
        momentum: the rule's momentum beta in [0, 1) (default 0.95; Lion uses its betas instead).
        hidden_patterns, adamw_patterns, transposed_patterns, decay_1d: routing, see module doc.
        distributed, process_group: run sharded under torch.distributed (FSDP2 DTensor
            parameters or DDP replicas), passed to `SteepestDescent`; see `optim.sharded`.
        rule_kwargs: more `SteepestDescent` group options for the rule side (nesterov, betas for
            Lion, update_rms, ns_steps, ns_coefficients, ns_dtype, and the options a registered
            rule names in its `lmo_options`).
    Each param group carries `lr`, `rule` and `param_names`.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name {name!r} is unknown; allowed values: {', '.join(OPTIMIZERS)}")
    _check_positive("lr", lr)
    _check_positive("adamw_lr", adamw_lr)
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    allowed = ["nesterov", "betas", "update_rms", "ns_steps", "ns_coefficients", "ns_dtype",
               "foreach"]
    allowed += [k for k in OPTIMIZERS[name].lmo_options if k not in allowed]  # a rule's own
    unknown = set(rule_kwargs) - set(allowed)
    if unknown:
        raise ValueError(f"unknown keyword(s) {sorted(unknown)}; allowed values: "
                         f"{', '.join(allowed)}")

    parts = route(model_or_named_params, name, hidden_patterns, adamw_patterns,
                  transposed_patterns)
    rule_opts: dict[str, Any] = dict(rule=name, lr=float(lr), weight_decay=float(weight_decay),
                                     **rule_kwargs)
    if momentum is not None:
        rule_opts["momentum"] = float(momentum)
    adamw_opts = dict(rule="adamw", lr=float(adamw_lr or lr), betas=tuple(adamw_betas),
                      eps=adamw_eps, foreach=rule_kwargs.get("foreach"))
    if name == "adamw":  # the rule side *is* AdamW: the rule options apply
        adamw_opts.update({k: v for k, v in rule_opts.items() if k in ("betas", "foreach")})
    decayed = [(n, p) for n, p in parts["adamw"] if decay_1d or p.ndim >= 2]
    undecayed = [(n, p) for n, p in parts["adamw"] if not (decay_1d or p.ndim >= 2)]

    groups = []
    if parts["rule"]:
        groups.append(dict(params=parts["rule"], transposed=False, **rule_opts))
    if parts["rule_transposed"]:
        groups.append(dict(params=parts["rule_transposed"], transposed=True, **rule_opts))
    if decayed:
        groups.append(dict(params=decayed, weight_decay=float(weight_decay), **adamw_opts))
    if undecayed:
        groups.append(dict(params=undecayed, weight_decay=0.0, **adamw_opts))
    if not groups:
        raise ValueError("model_or_named_params holds no parameter with requires_grad=True")
    return SteepestDescent(groups, momentum=0.95 if momentum is None else float(momentum),
                           distributed=distributed, process_group=process_group)
