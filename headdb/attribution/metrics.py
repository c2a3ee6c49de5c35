"""Metrics L(current logits) of one example, evaluated at its last real (non-pad) token.

    kl          KL(p_clean || p_current) of the next-token distributions, where p_clean is the
                model's distribution on the clean prompt (fixed; no gradient flows into it).
                The default. Note: it is 0 at the clean point and its gradient vanishes there,
                so plain `eap` (gradient at the clean point) scores ~0 with it; use eap-ig.
    logit-diff  logit[answer] - logit[wrong_answer] (needs wrong_answer in every item)
    logprob     log p(answer)
answer / wrong_answer are the first tokens of those strings (see headdb.attribution.tasks).

All computed in float32 whatever the model dtype. Attribution scores use EAP-IG's sign,
score ~ L(corrupted) - L(clean) (the input edges sum to about that), so:
    kl          positive = corrupting the edge moves the output away from the clean
                distribution (the edge carries clean behaviour); input edges sum to about
                +KL(clean || corrupted)
    logit-diff  positive = corrupting the edge RAISES logit[answer] - logit[wrong]: the edge's
    logprob     clean value works against the answer; edges that support it are negative
                (MIB attributes the loss -logit-diff, so its scores are these negated)
`HELPS_SIGN[metric]` turns a score into "supports the clean behaviour" orientation (MIB's, used
for its signed-ranking CPR): +1 for kl, -1 for logit-diff and logprob.
"""

from __future__ import annotations

import torch

from headdb.errors import UserError
from headdb.settings import METRICS

# sign * score > 0 <=> the edge supports the clean behaviour (L is a distance for kl, a reward
# for logit-diff and logprob).
HELPS_SIGN = {"kl": 1.0, "logit-diff": -1.0, "logprob": -1.0}


def check_metric(name: str, wrong_ids) -> None:
    """Raise a UserError for an unknown metric or a logit-diff task without wrong answers."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    if name == "logit-diff" and any(int(w) < 0 for w in wrong_ids):
        raise UserError(
            "metric 'logit-diff' needs a wrong_answer for every task item; "
            "add wrong_answer or use --metric kl or logprob"
        )


def metric_values(
    name: str, logits: torch.Tensor, clean_logprobs: torch.Tensor | None, answer: torch.Tensor, wrong: torch.Tensor
) -> torch.Tensor:
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
