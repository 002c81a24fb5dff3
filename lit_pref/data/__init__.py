from lit_pref.data.datamodule import PreferenceDataModule
from lit_pref.data.needs import DataNeeds

__all__ = ["DataNeeds", "PreferenceDataModule"]
