"""FSDP for the training loop (`compute.fsdp: true` with more than one process): torch's FSDP2
(`fully_shard`) on every transformer block and on the root, identically on CPU (gloo) and GPU (NCCL).

accelerate shards models only on GPUs (its FSDP type needs a GPU distributed type), so the loop
applies FSDP itself and leaves accelerate the process group, autocast and the RNG/scheduler state.
Parameters, gradients, optimizer state and the EMA are sharded along dim 0 across all processes.

- Blocks: every child of an `nn.ModuleList` that has trainable parameters (the encoder's, decoder's
  and generator's transformer blocks); the rest (embeddings, heads, the frozen VAE) is the root's
  group. With `mixed_precision: bf16`, parameters are gathered in bf16 and gradients reduced in fp32.
- Checkpoint: one safetensors file per process (`fsdp-rank00000-of-00002.safetensors`) with its
  shard of every module, optimizer and EMA tensor, plus the optimizer's hyperparameters in
  `fsdp-optim.json`. A resume needs the same number of processes.
- Export: the full state is gathered to the main process and loaded into an unsharded copy of the
  module (kept on the meta device until then), which `save_pretrained` writes as usual.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semtok.config import ComputeConfig, ConfigError

OPTIM_FILE = "fsdp-optim.json"


def shard_file(rank: int, world: int) -> str:
    return f"fsdp-rank{rank:05d}-of-{world:05d}.safetensors"


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (the tensor itself otherwise)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor, on every process (collective); the tensor itself otherwise."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks sharded as units: children of ModuleLists with trainable parameters, the
    outermost only (a block's own lists, such as diffusers' `attn.to_out`, stay in the block)."""
    found: list[nn.Module] = []
    inside: set[int] = set()
    for m in module.modules():  # parents before children
        if id(m) in inside or not isinstance(m, nn.ModuleList):
            continue
        for child in m:
            if any(p.requires_grad for p in child.parameters()):
                found.append(child)
                inside.update(id(d) for d in child.modules())
    return found


def replicate(param: nn.Parameter, world: int) -> None:
    """Keep a scalar parameter (FSDP2 cannot shard one; e.g. the contrastive logit scale) whole on
    every process: moved to the process's device, its gradient averaged after each backward."""
    import torch.distributed as dist

    with torch.no_grad():
        param.data = param.data.to(
            torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        )

    def average(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)  # gloo has no AVG
        p.grad.div_(world)

    if param.requires_grad:
        param.register_post_accumulate_grad_hook(average)


class FSDP:
    """Shards the loop's modules and saves, loads and exports their sharded state."""

    def __init__(self, compute: ComputeConfig, rank: int, world: int) -> None:
        if compute.mixed_precision == "fp16":
            raise ConfigError(
                "compute.fsdp: fp16 needs a sharded gradient scaler, which the loop does not have; "
                "use compute.mixed_precision bf16 (or no)"
            )
        self.precision = compute.mixed_precision if torch.cuda.is_available() else "no"
        self.rank, self.world = rank, world
        self.unsharded: dict[str, nn.Module] = {}  # main process: meta-device copies for the export

    def shard(self, key: str, module: nn.Module) -> nn.Module:
        """Shard `module` in place (blocks first, then the root); returns it."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if self.rank == 0:
            self.unsharded[key] = copy.deepcopy(module).to("meta")
        policy = MixedPrecisionPolicy()
        if self.precision == "bf16":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        scalars = {p for p in module.parameters() if p.ndim == 0}
        for block in blocks(module):
            fully_shard(block, mp_policy=policy, ignored_params=scalars)
        fully_shard(module, mp_policy=policy, ignored_params=scalars)
        for p in scalars:
            replicate(p, self.world)
        return module

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, folder: Path, modules: dict, optimizers: dict, emas: dict) -> None:
        """Write this process's shards of every module, optimizer and EMA into `folder`."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        groups = {}
        for key, module in modules.items():
            for name, value in module.state_dict().items():
                tensors[f"{key}.model.{name}"] = local(value)
            state = optimizers[key].state_dict()
            for index, entries in state["state"].items():
                for name, value in entries.items():
                    tensors[f"{key}.optim.{index}.{name}"] = local(value)
            groups[key] = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
            if key in emas:
                for name, value in zip(emas[key].names, emas[key].shadow, strict=True):
                    tensors[f"{key}.ema.{name}"] = local(value)
        # clone: safetensors refuses tensors that share memory (shards may be views of one buffer)
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(folder / shard_file(self.rank, self.world)))
        if self.rank == 0:
            (folder / OPTIM_FILE).write_text(json.dumps(groups))

    def load(self, folder: Path, modules: dict, optimizers: dict, emas: dict) -> None:
        """Load this process's shards written by `save` (same number of processes)."""
        from safetensors.torch import load_file

        path = folder / shard_file(self.rank, self.world)
        if not path.exists():
            written = sorted(p.name for p in folder.glob("fsdp-rank*.safetensors"))
            raise RuntimeError(
                f"{folder}: no FSDP shard {path.name} for process {self.rank} of {self.world}; the "
                f"checkpoint holds {written[:2]}...: resume with the number of processes that wrote it"
            )
        tensors = load_file(str(path))
        groups = json.loads((folder / OPTIM_FILE).read_text())
        with torch.no_grad():
            for key, module in modules.items():
                for name, value in module.state_dict().items():
                    local(value).copy_(tensors[f"{key}.model.{name}"])
                if key in emas:
                    for name, value in zip(emas[key].names, emas[key].shadow, strict=True):
                        local(value).copy_(tensors[f"{key}.ema.{name}"])
                optimizers[key].load_state_dict(self._optim_state(key, optimizers[key], tensors, groups[key]))

    @staticmethod
    def _optim_state(
        key: str, opt: torch.optim.Optimizer, tensors: dict, groups: list[dict]
    ) -> dict[str, Any]:
        """The optimizer's state dict from the saved shards: tensors shaped like their parameter's
        shard become DTensors like the parameter; the rest (Adam's step) stay plain."""
        from torch.distributed.tensor import DTensor

        params = [p for g in opt.param_groups for p in g["params"]]
        prefix = f"{key}.optim."
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if not name.startswith(prefix):
                continue
            index, entry = name[len(prefix) :].split(".", 1)
            param = params[int(index)]
            if isinstance(param, DTensor) and value.shape == param.to_local().shape:
                value = DTensor.from_local(
                    value.to(param.device),
                    param.device_mesh,
                    param.placements,
                    shape=param.shape,
                    stride=param.stride(),
                )
            state.setdefault(int(index), {})[entry] = value
        sizes = [len(g["params"]) for g in opt.param_groups]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        param_groups = [
            {**saved, "params": list(range(start, start + size))}
            for saved, start, size in zip(groups, starts, sizes, strict=True)
        ]
        return {"state": state, "param_groups": param_groups}

    # -- export ---------------------------------------------------------------------------------
    def gather(self, key: str, module: nn.Module) -> nn.Module | None:
        """The whole `module` as a plain module on the main process (None elsewhere); collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank != 0:
            return None
        whole = self.unsharded[key]
        whole.load_state_dict(state, assign=True)
        return whole
