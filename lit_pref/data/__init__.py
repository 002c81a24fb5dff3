from lit_pref.data.datamodule import PreferenceDataModule

__all__ = ["PreferenceDataModule"]
