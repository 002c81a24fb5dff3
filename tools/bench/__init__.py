"""The benchmark behind tools/bench.py:

- rows.py: the pre-tokenized rows every contender gets;
- contenders.py: what each contender runs (lit_pref, TRL's DPOTrainer, a bare PyTorch loop, generation, MPO
  scoring, a profile), given a cfg dict and a baton;
- coordinator.py: processes and the baton protocol (interleaved and solo runs; `Stopwatch` and `run_inline`
  for a contender in the caller's process);
- report.py: shapes, FLOPs, summaries, markdown tables, the machine and the versions;
- sections.py: the benchmark's sections (they run contenders and return markdown); cli.py: the command line.

tools/gpu_check.py reuses the contenders, the Stopwatch and the report helpers.
"""
