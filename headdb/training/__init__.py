"""Training helpers: demo recipes (tiny-model pretraining, trl SFT and GRPO) and trl callbacks."""
