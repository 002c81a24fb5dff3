"""The module's side of the frozen companion models (lit_pref.models.companions): find, register, attach,
prepare and refresh them. Mixed into PolicyModule, which provides `policy`, `layout` and `named_children`.

A callback changes a companion only through these methods (`add_companion`, `refresh_companion`).
"""

from __future__ import annotations

from lit_pref.errors import ConfigError
from lit_pref.models.companions import CompanionModel, RefreshableCopy


class CompanionHost:
    """The companion registry of a PolicyModule: every CompanionModel attribute of the module is one."""

    def companions(self) -> dict[str, CompanionModel]:
        """The frozen companion models in use, by attribute name: every CompanionModel attribute of the module
        (an algorithm's own, and those callbacks added with `add_companion`)."""
        return {name: m for name, m in self.named_children() if isinstance(m, CompanionModel)}

    def add_companion(self, name: str, provider: CompanionModel) -> CompanionModel:
        """Register another frozen model (e.g. RewardEvaluation's starting policy) before `configure_model`, so
        it is attached, moved and sharded like the algorithm's own; returns the registered provider."""
        existing = getattr(self, name, None)
        if existing is not None:
            if isinstance(existing, CompanionModel) and type(existing) is type(provider):
                return existing  # registered already (e.g. a second fit on the same module)
            raise ConfigError(f"{type(self).__name__} already has an attribute {name!r}; pick another name")
        if self.policy is not None:
            raise ConfigError(
                f"add_companion({name!r}) must run before the model is configured (in a callback's setup)"
            )
        setattr(self, name, provider)
        return provider

    def attach_companions(self) -> None:
        """Give every companion the module's sequence layout and attach it (in `configure_model`, after the
        policy is built and before sharding)."""
        for provider in self.companions().values():
            provider.use_layout(self.layout)
            provider.attach(self)

    def refresh_companion(self, name: str, ema_decay: float | None = None) -> int:
        """Refresh a RefreshableCopy companion from the policy (hard copy, or parameter EMA with `ema_decay`);
        returns its refresh count. Callbacks (MagnetUpdate) change companions only through this method."""
        provider = self.refreshable(name)
        if ema_decay is None:
            provider.refresh_from(self.policy)
        else:
            provider.ema_update(self.policy, ema_decay)
        return int(provider.refreshes)

    def refreshable(self, name: str) -> RefreshableCopy:
        """The RefreshableCopy companion `name`; a ConfigError naming the option if it is something else."""
        provider = self.companions().get(name)
        if not isinstance(provider, RefreshableCopy):
            raise ConfigError(
                f"{type(self).__name__}.{name} is {type(provider).__name__ if provider else 'not a companion'}, "
                f"not a lit_pref.RefreshableCopy: set model.init_args.{name}: lit_pref.RefreshableCopy to refresh it"
            )
        return provider

    def _prepare_companions(self) -> None:
        for provider in self.companions().values():
            provider.prepare(self)

    def on_fit_start(self) -> None:
        self._prepare_companions()

    def on_validation_start(self) -> None:
        self._prepare_companions()

    def on_test_start(self) -> None:
        self._prepare_companions()
