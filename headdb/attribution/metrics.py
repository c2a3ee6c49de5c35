"""Metrics L(current logits) of one example, evaluated at its last real (non-pad) token.

    kl          KL(p_clean || p_current) of the next-token distributions, where p_clean is the
                model's distribution on the clean prompt (fixed; no gradient flows into it).
                The default. Note: it is 0 at the clean point and its gradient vanishes there,
                so plain `eap` (gradient at the clean point) scores ~0 with it; use eap-ig.
    logit-diff  logit[answer] - logit[wrong_answer] (needs wrong_answer in every item)
    logprob     log p(answer)
answer / wrong_answer are the first tokens of those strings (see headdb.attribution.tasks).

All computed in float32 whatever the model dtype. Attribution scores use the sign convention
score ~ L(clean) - L(corrupted), so for `kl` the input edges sum to about -KL(clean||corrupted).
"""
from __future__ import annotations

import torch

from headdb.errors import UserError
from headdb.settings import METRICS



def check_metric(name: str, wrong_ids) -> None:
    """Raise a UserError for an unknown metric or a logit-diff task without wrong answers."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    if name == "logit-diff" and any(int(w) < 0 for w in wrong_ids):
        raise UserError("metric 'logit-diff' needs a wrong_answer for every task item; "
                        "add wrong_answer or use --metric kl or logprob")


def metric_values(name: str, logits: torch.Tensor, clean_logprobs: torch.Tensor | None,
                  answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """Per-example metric [B] from the logits at each example's evaluated position [B, V]."""
    logits = logits.float()
    if name == "kl":
        logp = torch.log_softmax(logits, dim=-1)
        ref = clean_logprobs.float()
        return (ref.exp() * (ref - logp)).sum(dim=-1)
    if name == "logit-diff":
        return (logits.gather(1, answer[:, None]) - logits.gather(1, wrong[:, None])).squeeze(1)
    if name == "logprob":
        return torch.log_softmax(logits, dim=-1).gather(1, answer[:, None]).squeeze(1)
    raise UserError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
