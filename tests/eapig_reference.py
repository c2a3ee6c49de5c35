"""An independent EAP-IG ("EAP-IG-inputs", hannamw/EAP-IG's default method) for HF Qwen2/Llama
models, written from the method's definition with plain PyTorch forward hooks: no
TransformerLens, no headdb engine code. Tests compare headdb's scores with it.

Definition (what EAP-IG computes, with a metric summed over the batch):
    score(u -> v) = 1/N sum_examples sum_{pos, d} (z_u(corrupted) - z_u(clean))
                    * 1/m sum_{k=0}^{m-1} dL/dx_v (embeddings = e_corr + k/m (e_clean - e_corr))
z_u: what node u writes into the residual stream (input: the token embeddings; head h of layer
l: its slice of o_proj's input times its columns of o_proj; m_l: the MLP output). x_v: the
residual stream as ONE reader sees it before its norm (a head's q, k or v input, an MLP's input,
the final norm's input). EAP-IG has no grouped-query attention: a GQA model is first UNGROUPED
(TransformerLens' `ungroup_grouped_query_attention`: every query head gets its own copy of its
kv head's K and V projections), so k/v ports are per QUERY head.

How the per-reader gradient is obtained here: a reader r of the normed residual y = norm(x)
(query head h, say) sees y only through its rows R of a projection, so
dL/dx_r = J_norm(x)^T (R^T dL/d(proj output)[.., h]): the projection-output gradient of that
head is mapped back through its rows and then through the norm with one vector-Jacobian product.
"""

from __future__ import annotations

import numpy as np
import torch


def ungrouped(model):
    """A copy of an HF GQA model with one K/V projection per query head (the same function)."""
    import copy

    cfg = copy.deepcopy(model.config)
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    if n_kv == n_heads:
        return model
    rep = n_heads // n_kv
    cfg.num_key_value_heads = n_heads
    out = type(model)(cfg).eval()
    state = dict(model.state_dict())
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    for key, value in list(state.items()):
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            grouped = value.reshape(n_kv, d_head, *value.shape[1:])
            # HF repeat_kv: query head h reads kv head h // rep.
            state[key] = grouped.repeat_interleave(rep, dim=0).reshape(n_heads * d_head, *value.shape[1:])
    out.load_state_dict(state)
    return out


def node_names(n_layers: int, n_heads: int) -> list[str]:
    names = ["input"]
    for layer in range(n_layers):
        names += [f"a{layer}.h{h}" for h in range(n_heads)] + [f"m{layer}"]
    return names


def _metric(name, last_logits, clean_last, answer, wrong):
    if name == "logit-diff":
        return (last_logits.gather(1, answer[:, None]) - last_logits.gather(1, wrong[:, None])).squeeze(1)
    if name == "kl":
        ref = torch.log_softmax(clean_last, -1)
        return (ref.exp() * (ref - torch.log_softmax(last_logits, -1))).sum(-1)
    if name == "logprob":
        return torch.log_softmax(last_logits, -1).gather(1, answer[:, None]).squeeze(1)
    raise ValueError(name)


def _vjp(norm, x, cot):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(norm(x), x, cot)
    return g


def eap_ig_inputs(
    hf_model, clean, corrupted, answer, wrong, *, metric="logit-diff", steps=5, alphas=None
) -> dict[str, float]:
    """{EAP-IG edge name: score} for equal-length token batches clean/corrupted [N, S] (no pads).

    Edge names are EAP-IG's: `src->a{l}.h{h}<q|k|v>` (per query head), `src->m{l}`, `src->logits`.
    alphas defaults to EAP-IG's k/steps, k = 0..steps-1.
    """
    model = ungrouped(hf_model).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    layers = model.model.layers
    alphas = [k / steps for k in range(steps)] if alphas is None else list(alphas)
    clean, corrupted = torch.as_tensor(clean), torch.as_tensor(corrupted)
    answer, wrong = torch.as_tensor(answer), torch.as_tensor(wrong)
    names = node_names(L, H)

    def outputs(ids):
        """Node outputs [n_nodes, N, S, D] and last-position logits."""
        got: dict = {}
        hooks = [model.model.embed_tokens.register_forward_hook(lambda m, i, o: got.__setitem__("input", o))]
        for l, layer in enumerate(layers):
            hooks.append(
                layer.self_attn.o_proj.register_forward_pre_hook(lambda m, i, l=l: got.__setitem__(("o", l), i[0]))
            )
            hooks.append(layer.mlp.register_forward_hook(lambda m, i, o, l=l: got.__setitem__(("m", l), o)))
        try:
            with torch.no_grad():
                logits = model(ids).logits[:, -1]
        finally:
            for h in hooks:
                h.remove()
        rows = [got["input"]]
        for l, layer in enumerate(layers):
            w_o = layer.self_attn.o_proj.weight  # [D, H*dh]
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                rows.append(got[("o", l)][..., sl] @ w_o[:, sl].T)
            rows.append(got[("m", l)])
        return torch.stack(rows), logits

    z_clean, clean_last = outputs(clean)
    z_corr, _ = outputs(corrupted)
    delta = (z_corr - z_clean).double()  # [n_nodes, N, S, D]

    emb_clean = model.model.embed_tokens(clean)
    emb_corr = model.model.embed_tokens(corrupted)
    grads: dict = {}
    for alpha in alphas:
        seen: dict = {}
        x_emb = emb_corr + alpha * (emb_clean - emb_corr)

        def keep(key):
            def hook(m, i, o):
                seen[key] = (i[0], o)

            return hook

        hooks = [model.model.embed_tokens.register_forward_hook(lambda m, i, o: x_emb)]
        for l, layer in enumerate(layers):
            hooks.append(layer.input_layernorm.register_forward_hook(keep(("ln1", l))))
            hooks.append(layer.post_attention_layernorm.register_forward_hook(keep(("ln2", l))))
            for proj in ("q_proj", "k_proj", "v_proj"):
                hooks.append(getattr(layer.self_attn, proj).register_forward_hook(keep((proj, l))))
        hooks.append(model.model.norm.register_forward_hook(keep("final")))
        try:
            with torch.enable_grad():
                x_emb.requires_grad_(True)
                logits = model(clean).logits[:, -1]
                value = _metric(metric, logits.float(), clean_last.float(), answer, wrong).sum()
                keys = (
                    [("q_proj", l) for l in range(L)]
                    + [("k_proj", l) for l in range(L)]
                    + [("v_proj", l) for l in range(L)]
                    + [("ln2", l) for l in range(L)]
                    + ["final"]
                )
                outs = torch.autograd.grad(value, [seen[k][1] for k in keys])
        finally:
            for h in hooks:
                h.remove()
        g_out = dict(zip(keys, outs))
        for l, layer in enumerate(layers):
            x_attn = seen[("ln1", l)][0]
            for port, proj in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
                w = getattr(layer.self_attn, proj).weight  # [H*dh, D]
                for h in range(H):
                    sl = slice(h * dh, (h + 1) * dh)
                    cot = g_out[(proj, l)][..., sl] @ w[sl]
                    g = _vjp(layer.input_layernorm, x_attn, cot)
                    grads[(port, l, h)] = grads.get((port, l, h), 0) + g.double()
            g = _vjp(layer.post_attention_layernorm, seen[("ln2", l)][0], g_out[("ln2", l)])
            grads[("m", l)] = grads.get(("m", l), 0) + g.double()
        g = _vjp(model.model.norm, seen["final"][0], g_out["final"])
        grads["logits"] = grads.get("logits", 0) + g.double()

    n, m = clean.shape[0], len(alphas)

    def score(src: int, key) -> float:
        return float((delta[src] * grads[key]).sum() / (n * m))

    out: dict[str, float] = {}
    for l in range(L):
        n_src = 1 + l * (H + 1)
        for h in range(H):
            for port in "qkv":
                for u in range(n_src):
                    out[f"{names[u]}->a{l}.h{h}<{port}>"] = score(u, (port, l, h))
        for u in range(n_src + H):
            out[f"{names[u]}->m{l}"] = score(u, ("m", l))
    for u in range(len(names)):
        out[f"{names[u]}->logits"] = score(u, "logits")
    return out


def grouped(scores: dict[str, float], n_heads: int, n_kv: int) -> dict[str, float]:
    """Per-query-head k/v scores summed per kv head (h -> h // (n_heads / n_kv)): headdb's names."""
    import re

    rep = n_heads // n_kv
    pat = re.compile(r"^(.*)->a(\d+)\.h(\d+)<([kv])>$")
    out: dict[str, float] = {}
    for name, value in scores.items():
        m = pat.match(name)
        if m:
            name = f"{m.group(1)}->a{m.group(2)}.h{int(m.group(3)) // rep}<{m.group(4)}>"
        out[name] = out.get(name, 0.0) + value
    return out


def as_array(scores: dict[str, float], edge_names: list[str]) -> np.ndarray:
    return np.array([scores[n] for n in edge_names], dtype=np.float64)
