"""Instruction tuning as the seed papers do it: FLAN's templated mixture with held-out clusters, Flan 2022's
mixed formats (zero-shot, few-shot, chain of thought), and Orca 2's strategy prompts with prompt erasure."""
