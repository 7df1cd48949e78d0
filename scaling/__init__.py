"""Core of the toolkit: MEDS input, the synthetic cohort, the tokenizer and token store, the single-run
trainer, evaluation, and the `scaling` command line."""
