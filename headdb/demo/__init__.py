"""The offline miniature study: tiny models and tokenizers, trl recipes to train them, the demo."""
