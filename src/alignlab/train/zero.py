"""The DeepSpeed engine as alignlab's loop drives it (train.distributed=deepspeed, ZeRO-2 or 3).

Example: ``zero = ZeroEngine(plan, CompletionLogps(model), model, adamw(settings, params))``;
``Trainer(settings, zero, ..., engine=zero)``

The loop keeps everything it owns: the loss normalisation (``engine.backward(...,
scale_wrt_gas=False)``, so the loss of a step is still the sum over its examples divided by
their global count), the client AdamW and the LR schedule, the non-finite guard and the
checkpoints. The engine reduces and partitions gradients (no ``no_sync`` needed: ZeRO reduces
into partitions as the backward runs), clips to train.max_grad_norm and steps. Checkpoints hold
full, unpartitioned tensors in the format the other backends write, gathered by every rank and
written by rank 0, so resuming needs neither the same number of ranks nor DeepSpeed's own files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from alignlab.forward import split_model
from alignlab.logprobs import LogProbs
from alignlab.train.deepspeed import DeepSpeedPlan

MOMENTS = ("exp_avg", "exp_avg_sq")


class _Fields(nn.Module):
    """The module DeepSpeed wraps: LogProbs as a dict, because the engine hooks its backward
    bookkeeping onto the tensors of a tensor, tuple or dict output (a dataclass is skipped)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: Any) -> dict[str, Any]:
        out = self.policy(batch)
        return {name: getattr(out, name) for name in LogProbs.__dataclass_fields__}


class ZeroEngine(nn.Module):
    """A CompletionLogps under DeepSpeed: ``forward`` gives LogProbs; backward, step and the
    full state for checkpoints are methods the loop calls (every rank, together)."""

    def __init__(self, plan: DeepSpeedPlan, policy: nn.Module, model: nn.Module,
                 optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        import deepspeed

        self.plan = plan
        self.optimizer = optimizer  # the client AdamW: its param groups carry lr (the schedule's)
        self.lm_params = list(model.named_parameters())  # a list: not registered twice as submodule
        self.engine, *_ = deepspeed.initialize(model=_Fields(policy), optimizer=optimizer, config=plan.config,
                                               dist_init_required=False)
        if plan.stage == 3:
            # CompletionLogps runs the backbone, then the output layer on completion positions in
            # chunks, recomputed in the backward. ZeRO-3 gathers a weight only while its own
            # module runs. alignlab calls a hooked head as a module (alignlab.logprobs.hooked),
            # which gathers it; registered on the module the engine runs, the head and the
            # embeddings also stay gathered for a direct read of their weights, in the forward
            # and in the recomputing backward (tested with the head's weight read directly).
            backbone, head = split_model(model)
            for param in (*head.parameters(), *backbone.get_input_embeddings().parameters()):
                deepspeed.zero.register_external_parameter(self.engine.module, param)

    def forward(self, batch: Any) -> LogProbs:
        return LogProbs(**self.engine(batch))

    # ---- one optimizer step ----------------------------------------------------------------

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate ``loss``'s gradients as they are: the loop has scaled it already."""
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        """Clip and step; the gradient norm before clipping. A non-finite norm: DeepSpeed has
        skipped the step (weights and optimizer state untouched) and cleared the gradients."""
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    def discard(self, loss: torch.Tensor) -> None:
        """Drop the gradients this step has accumulated so far (a non-finite loss on some rank).

        ZeRO holds them reduced in its own partitioned buffers, with no call to clear them in
        the middle of an accumulation; its overflow path clears them on every rank together.
        So every rank backpropagates a NaN and steps: the step is skipped, nothing else changes.
        """
        self.backward(loss * float("nan"), last=True)
        self.step()

    # ---- full state (collectives: every rank calls; rank 0 gets the tensors) -----------------

    def full_state(self) -> dict[str, torch.Tensor]:
        """The trainable weights by this module's parameter names: the fp32 master copies."""
        keep = torch.distributed.get_rank() == 0
        out = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                full = _full_weight(param)
                if keep:
                    out[name] = full.cpu()
        return out

    def load_full_state(self, weights: dict[str, torch.Tensor]) -> None:
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param

        for name, param in self.named_parameters():
            if name in weights:
                value = weights[name].to(param.device)
                safe_set_full_fp32_param(param, value)  # the master copy
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    param.data.copy_(value)  # the working copy (bf16 with train.precision=bf16)

    def full_optimizer_state(self) -> dict[str, Any]:
        """AdamW's state as ``torch.optim.AdamW.state_dict()`` of the unpartitioned parameters."""
        from deepspeed.utils import safe_get_full_optimizer_state

        keep = torch.distributed.get_rank() == 0
        step = self._allocate_state()
        trainable = [p for p in self.parameters() if p.requires_grad]
        state = {}
        for index, param in enumerate(trainable):
            entry = {"step": torch.tensor(step, dtype=torch.float32)}
            for key in MOMENTS:
                full = safe_get_full_optimizer_state(param, key)
                if keep:
                    entry[key] = full.cpu()
            state[index] = entry
        group = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(trainable)))}]} if keep else {}

    def load_full_optimizer_state(self, saved: dict[str, Any]) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        trainable = [p for p in self.parameters() if p.requires_grad]
        step = float(saved["state"][0]["step"]) if saved["state"] else 0.0
        self._allocate_state(step)
        for index, param in enumerate(trainable):
            for key in MOMENTS:
                safe_set_full_optimizer_state(param, saved["state"][index][key].to(param.device), key)
        for key, value in saved["param_groups"][0].items():  # lr as the schedule left it, betas, ...
            if key != "params":
                self.optimizer.param_groups[0][key] = value

    def consolidated(self, fresh: Callable[[], nn.Module]) -> nn.Module | None:
        """On rank 0, a plain model (``fresh()``, loaded from model.name_or_path) holding the
        trained weights; the other ranks take part in the gather and get None."""
        keep = torch.distributed.get_rank() == 0
        weights = {}
        for name, param in self.lm_params:
            full = _full_weight(param)
            if keep:
                weights[name] = full.cpu()
        if not keep:
            return None
        model = fresh()
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied head is not stored twice
            raise RuntimeError(f"gathered weights do not fit the model: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
        return model

    def _allocate_state(self, step: float | None = None) -> float:
        """AdamW's state on ZeRO's flat fp32 partitions, as AdamW would create it (it does so
        only in its first step, and a resume sets the state before that); with ``step`` set to
        it. The step count of the state."""
        zero, basic = self.engine.optimizer, self.optimizer
        flats = zero.single_partition_of_fp32_groups if self.plan.stage == 2 else zero.fp32_partitioned_groups_flat
        fused = bool(basic.param_groups[0].get("fused"))
        plain_step = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        created = False
        for flat in flats:
            if basic.state.get(flat):
                continue
            basic.state[flat] = {
                "step": (torch.zeros((), dtype=torch.float32, device=flat.device) if fused
                         else torch.tensor(0.0, dtype=plain_step)),
                **{key: torch.zeros_like(flat, memory_format=torch.preserve_format) for key in MOMENTS}}
            created = True
        if created and self.plan.stage == 2:
            zero._lazy_init_hp_params_optimizer_state()  # points each parameter at its slice of the state
        if step is not None:
            for flat in flats:
                basic.state[flat]["step"].fill_(step)
        return float(basic.state[flats[0]]["step"])


def _full_weight(param: nn.Parameter) -> torch.Tensor:
    """One parameter unpartitioned: the fp32 master of a trained one, the gathered working copy
    of a frozen one (which has no master)."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(param) if param.requires_grad else None
    if full is None:
        with deepspeed.zero.GatheredParameters([param]):
            full = param.detach().clone()
    return full
