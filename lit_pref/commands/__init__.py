"""Subcommands of `python -m lit_pref`: the Lightning ones (fit, validate, test, predict) and lit_pref's own."""
