"""Frozen companion models: "a model whose log-probs we need but never train".

Reference (DPO), magnet (MPO), previous iterate (IRFT/SPIN), weak models (WSPO) and base model f0 (CausalPO)
all go through this one interface. A provider is an `nn.Module` registered on the algorithm module, so it
follows the policy's device and sharding, and says itself whether its weights belong in checkpoints.

- FrozenCopy:       own frozen weights (a copy of the starting policy, or another model given by path).
- DisabledAdapter:  the LoRA policy with its adapter switched off (no extra memory).
- Precomputed:      log-probs of another provider computed once per dataset and cached on disk, keyed by
                    dataset fingerprint + model identity; the model is freed afterwards.
- RefreshableCopy:  a copy that a callback refreshes from the policy (hard copy or EMA); saved in checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lit_pref.atomic import atomic_write
from lit_pref.errors import ConfigError, check_range
from lit_pref.models.artifacts import cache_root
from lit_pref.models.loading import DType, is_peft, load_causal_lm, model_fingerprint
from lit_pref.models.logprobs import TokenLogps, sequence_logps
from lit_pref.models.packing import PLAIN, SequenceLayout

if TYPE_CHECKING:
    from lit_pref.algorithms.base import PolicyModule


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def frozen_copy_of_policy(policy: nn.Module) -> nn.Module:
    """A frozen copy of the policy's current weights, LoRA merged so the copy runs at plain-model cost."""
    clone = copy.deepcopy(policy)
    if is_peft(clone):
        clone = clone.merge_and_unload()
    return _freeze(clone)


def _drop_own_keys(module, state_dict, prefix, local_metadata):
    if module.checkpointed:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _keep_own_weights(module, state_dict, prefix, *args):
    """Loading a checkpoint (which does not hold these weights) keeps the ones `attach` built."""
    if module.checkpointed:
        return
    for child_name, child in module.named_children():  # the children carry no hook: their full state dicts
        for name, value in child.state_dict(prefix=f"{prefix}{child_name}.", keep_vars=True).items():
            state_dict.setdefault(name, value.detach())


def segment_lengths(dataset) -> torch.Tensor:
    """Response tokens of each cached segment, row by row (chosen, rejected / response, sample): what a cache
    file's offsets must describe."""
    first = dataset[0] if len(dataset) else {}
    columns = ["chosen_ids", "rejected_ids"] if "chosen_ids" in first else ["response_ids", "sample_ids"]
    columns = [c for c in columns if first.get(c) is not None]
    per_column = [[len(ids) for ids in dataset[c]] for c in columns]
    return torch.tensor([n for row in zip(*per_column) for n in row], dtype=torch.long)


def model_identity(model: nn.Module, name: str) -> str:
    """Cheap fingerprint of a model's weights: name, shapes and a sample of every parameter."""
    h = hashlib.sha256(name.encode())
    for key, p in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class CompanionModel(nn.Module):
    """Base class: something that gives per-token log-probs of a batch from a frozen model.

    A non-persistent provider (weights rebuilt by `attach`, e.g. a frozen copy of the starting policy) keeps its
    weights out of state dicts and accepts state dicts without them. Under FSDP2 (`checkpointed` set by the
    sharding), its shards are saved like the policy's: Lightning's sharded loader checks keys strictly.
    """

    #: whether this provider's weights are written to (and read from) checkpoints
    persistent = False

    def __init__(self):
        super().__init__()
        self.checkpointed = self.persistent
        self.layout = PLAIN
        self._register_state_dict_hook(_drop_own_keys)
        self._register_load_state_dict_pre_hook(_keep_own_weights, with_module=True)

    def use_layout(self, layout: SequenceLayout) -> None:
        """Lay batches out like the owner's policy (prefix sharing, packing); passed on to wrapped providers."""
        for provider in self.modules():
            if isinstance(provider, CompanionModel):
                provider.layout = layout

    def attach(self, owner: PolicyModule) -> None:
        """Build or bind the frozen model once the policy exists (called from `configure_model`)."""

    def prepare(self, owner: PolicyModule) -> None:
        """Runs when training/evaluation starts, with data and devices ready (precomputation hooks in here)."""

    def token_logps(self, batch: dict) -> TokenLogps:
        raise NotImplementedError

    def identity(self) -> str:
        """A string that changes whenever this provider's log-probs would change."""
        raise NotImplementedError

    def frozen_models(self) -> list[nn.Module]:
        """The models this provider owns (sharded like the policy under FSDP2)."""
        return []

    def fingerprint(self, owner: PolicyModule) -> str | None:
        """This provider's identity from files, without loading a model; None when only the weights can tell."""
        return None

    def sampling_model(self) -> nn.Module | None:
        """The model to generate from (e.g. an online method's snapshot or magnet), or None when this provider
        has no weights of its own to sample (a cache, or the policy's own weights behind a disabled adapter)."""
        return None

    def keep_in_checkpoints(self) -> None:
        """Write this provider's weights into checkpoints from now on (FSDP2's sharded loader is strict)."""
        self.checkpointed = True

    def release(self) -> None:
        """Free the weights this provider owns once nothing needs them (e.g. after a cache is complete)."""


class _OwnWeights(CompanionModel):
    """A provider with its own frozen model in `self.model`."""

    model: nn.Module | None

    def frozen_models(self) -> list[nn.Module]:
        return [self.model] if self.model is not None else []

    def sampling_model(self) -> nn.Module | None:
        return self.model

    def release(self) -> None:
        self.model = None

    @torch.no_grad()
    def token_logps(self, batch: dict) -> TokenLogps:
        return sequence_logps(self.model, batch, layout=self.layout)


class FrozenCopy(_OwnWeights):
    """A frozen model with its own weights.

    Args:
        model: Path/hub name/'builtin:tiny' of the model to load; if unset, a copy of the policy as it is when
            training starts (the usual DPO reference).
        dtype: Weight dtype when loading `model`.
    """

    def __init__(self, model: str | None = None, dtype: DType = "float32"):
        super().__init__()
        self.model_spec = model
        self.dtype = dtype
        self.model: nn.Module | None = None
        self.option = "FrozenCopy.model"  # the option that gave `model`, named in errors (WSPO sets its own)
        self._identity: str | None = None

    def fingerprint(self, owner: PolicyModule) -> str | None:
        """This provider's identity from files, without loading any model: the weight files of `model`, or of
        the policy spec when this is a copy of the starting policy; None when only the weights can tell."""
        if self._identity is None:
            if self.model_spec:
                files = model_fingerprint(self.model_spec, self.option, self.dtype)
            else:
                files = owner.starting_policy_fingerprint()
            self._identity = f"frozen-files-{files}" if files else None
        return self._identity

    def attach(self, owner: PolicyModule) -> None:
        if self.model is None:
            self.model = (
                _freeze(load_causal_lm(self.model_spec, self.dtype, self.option))
                if self.model_spec
                else frozen_copy_of_policy(owner.policy)
            )
            # the content decides the log-probs, not the path; weights are sampled only when files cannot tell
            # (fingerprinted unsharded, once: cache keys do not depend on the strategy)
            self._identity = self.fingerprint(owner) or model_identity(self.model, "frozen")

    def identity(self) -> str:
        return self._identity


class DisabledAdapter(CompanionModel):
    """The LoRA policy with its adapter disabled: the base model, at no extra memory (needs `lora` set)."""

    def attach(self, owner: PolicyModule) -> None:
        if not is_peft(owner.policy):
            raise ConfigError(
                "DisabledAdapter needs a LoRA policy: set model.init_args.lora (e.g. add --config configs/lora.yaml) "
                "or use lit_pref.FrozenCopy as the companion model"
            )
        object.__setattr__(self, "_policy", owner.policy)  # not a submodule: the policy is saved by its owner
        self._identity = model_identity(owner.policy.get_base_model(), "disabled-adapter")

    @torch.no_grad()
    def token_logps(self, batch: dict) -> TokenLogps:
        policy = self._policy
        was_training = policy.training
        policy.eval()
        try:
            with policy.disable_adapter():
                return sequence_logps(policy, batch, layout=self.layout)
        finally:
            policy.train(was_training)

    def identity(self) -> str:
        return self._identity


class RefreshableCopy(_OwnWeights):
    """A frozen copy of the policy that callbacks refresh (magnet, previous iterate, synced reference).

    Its weights and refresh counter are saved in checkpoints, so a resumed run continues identically.
    """

    persistent = True

    def __init__(self):
        super().__init__()
        self.model: nn.Module | None = None
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))

    def attach(self, owner: PolicyModule) -> None:
        if self.model is None:
            self.model = _freeze(copy.deepcopy(owner.policy))

    @torch.no_grad()
    def refresh_from(self, policy: nn.Module) -> None:
        """Hard refresh: copy the policy's current weights."""
        for mine, theirs in zip(self.model.parameters(), policy.parameters(), strict=True):
            mine.copy_(theirs)
        self.refreshes += 1

    @torch.no_grad()
    def ema_update(self, policy: nn.Module, decay: float) -> None:
        """Parameter EMA: w <- decay * w + (1 - decay) * w_policy."""
        for mine, theirs in zip(self.model.parameters(), policy.parameters(), strict=True):
            mine.lerp_(theirs, 1.0 - decay)
        self.refreshes += 1

    def identity(self) -> str:
        return model_identity(self.model, f"refreshable-{int(self.refreshes)}")


class Precomputed(CompanionModel):
    """Log-probs of another provider, computed once per dataset split and cached on disk.

    The cache file is named by the split's dataset fingerprint and the source model's identity, so a changed
    dataset, tokenizer, length limit or model never reuses stale values. A frozen copy is identified from its
    files (weights and config), so when every split is cached the source model is never loaded; otherwise it
    is freed after the pass, so training runs the policy alone. Each file stores a checksum of its values and is
    checked against the data's response lengths on load: a corrupt, truncated or foreign file is reported by
    path and recomputed (written atomically), never trusted.

    Args:
        source: The provider whose log-probs are cached (default: a frozen copy of the starting policy).
        cache_dir: Folder for cache files (default: $LIT_PREF_CACHE/logps).
        batch_size: Rows per forward during precomputation.
    """

    #: bumped when the file layout changes
    FORMAT = 2

    def __init__(
        self, source: CompanionModel | None = None, cache_dir: str | None = None, batch_size: int = 16
    ):
        super().__init__()
        if isinstance(source, RefreshableCopy):
            raise ConfigError(
                "Precomputed cannot wrap a RefreshableCopy: cached log-probs would go stale at every refresh. "
                "Use RefreshableCopy directly, or cache a FrozenCopy/DisabledAdapter"
            )
        check_range("Precomputed.batch_size", batch_size, ge=1)
        self.source = source if source is not None else FrozenCopy()
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "logps"
        self.batch_size = batch_size
        self.tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._identity: str | None = None
        self._attached = False

    def attach(self, owner: PolicyModule) -> None:
        self._identity = self.source.fingerprint(owner)
        dm = getattr(owner._trainer, "datamodule", None) if owner._trainer is not None else None
        if self._identity is not None and dm is not None and self._read_all(dm):
            return  # every split is cached: the source model is never built
        self._attach_source(owner)

    def _attach_source(self, owner: PolicyModule) -> None:
        self.source.attach(owner)
        self._attached = True

    def frozen_models(self) -> list[nn.Module]:
        return self.source.frozen_models()

    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.source.identity()
        return self._identity

    def _path(self, dm, split: str) -> Path:
        return self.cache_dir / f"{dm.fingerprints[split]}-{self.identity()}.pt"

    def _read_all(self, dm) -> bool:
        """Read every split's valid cache file into `tables`; whether all were there."""
        for split, dataset in dm.datasets.items():
            if split != "predict" and split not in self.tables:
                table = self._read(self._path(dm, split), dataset)
                if table is not None:
                    self.tables[split] = table
        return all(s in self.tables for s in dm.datasets if s != "predict")

    def prepare(self, owner: PolicyModule) -> None:
        dm = owner.trainer.datamodule
        self._read_all(dm)
        for split, dataset in dm.datasets.items():
            if split in self.tables or split == "predict":
                continue
            if not self._attached:  # a split the cache lacks: the source model is needed after all
                self._attach_source(owner)
                self.source.to(owner.device)
            self.tables[split] = self._compute(
                owner, dm, split, dataset
            )  # every rank: sharded forward is collective
            if owner.trainer.is_global_zero:
                self._save(self.tables[split], self._path(dm, split))  # written once
        if all(s in self.tables for s in dm.datasets if s != "predict"):
            self.source.release()  # every split is cached: free the source weights
            self._attached = False

    @torch.no_grad()
    def _compute(self, owner, dm, split, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat per-token values plus offsets: segment k of row i is [offsets[i*K+k], offsets[i*K+k+1])."""
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, collate_fn=dm.collator(split)
        )
        per_row: list[list[torch.Tensor]] = []
        for batch in loader:
            batch = {k: v.to(owner.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out = self.source.token_logps(batch)
            values = [out.logps[r][out.mask[r].bool()].float().cpu() for r in range(out.logps.shape[0])]
            n = len(batch["index"])
            k = len(values) // n
            per_row.extend([values[i + j * n] for j in range(k)] for i in range(n))
        segments = [seg for row in per_row for seg in row]
        lengths = torch.tensor([0] + [len(s) for s in segments])
        rank_zero_info(f"lit_pref: precomputed companion log-probs of {len(per_row)} {split} rows")
        return torch.cat(segments), lengths.cumsum(0)

    @staticmethod
    def _checksum(values: torch.Tensor, offsets: torch.Tensor) -> str:
        h = hashlib.sha256(values.contiguous().numpy().tobytes())
        h.update(offsets.contiguous().numpy().tobytes())
        return h.hexdigest()

    @classmethod
    def _save(cls, table, path: Path) -> None:
        values, offsets = table
        payload = {
            "format": cls.FORMAT,
            "values": values,
            "offsets": offsets,
            "checksum": cls._checksum(*table),
        }
        atomic_write(path, lambda tmp: torch.save(payload, tmp))  # readers never see a half-written cache

    @classmethod
    def _read(cls, path: Path, dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The table in `path` if it is intact and fits `dataset`'s response lengths; else None (and a warning
        naming the file, which is then recomputed)."""
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            values, offsets = saved["values"], saved["offsets"]
            if saved.get("format") != cls.FORMAT or saved.get("checksum") != cls._checksum(values, offsets):
                problem = "its checksum does not match its contents (edited or corrupted)"
            elif not torch.equal(offsets.diff(), segment_lengths(dataset)):
                problem = "its segment lengths do not match this data's responses"
            else:
                rank_zero_info(f"lit_pref: read cached log-probs from {path}")
                return values, offsets
        except Exception as exc:  # truncated, garbage, another format: never trusted
            problem = f"it cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
        rank_zero_warn(f"lit_pref: ignoring the cached log-probs {path}: {problem}. Recomputing them")
        return None

    def token_logps(self, batch: dict) -> TokenLogps:
        split = batch.get("split")
        if split not in self.tables:
            raise ConfigError(f"Precomputed log-probs are missing for split {split!r}; was prepare() run?")
        values, offsets = self.tables[split]
        mask = batch["labels"][:, 1:] != -100
        index = batch["index"].tolist()
        k = mask.shape[0] // len(index)  # responses per row
        segments = [values[offsets[i * k + j] : offsets[i * k + j + 1]] for j in range(k) for i in index]
        flat = torch.cat(segments).to(mask.device)
        if flat.numel() != int(mask.sum()):
            raise ConfigError(
                "cached log-probs do not match this batch's response tokens: the cache is stale. Delete "
                f"{self.cache_dir} and rerun"
            )
        logps = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        logps[mask] = flat
        return TokenLogps(logps, mask.float())
