"""Router near-ties of a mixture-of-experts model, for the references of tools/hf_gpu_ref.py
and tools/make_hf_fixtures.py (tests/gpu/test_model_hf.c reads the keys).

router_ties(ref_model, bf16_model, ids) -> dict of ref.json keys, empty for a dense model:
  router_gap       per row of the teacher-forced sequence, the smallest margin over the MoE
                   layers between the k-th and (k+1)-th router logit of the reference model
                   (the last expert chosen and the first one left out)
  router_bf16_err  the largest |bf16 - reference| router logit of HF's own bf16 forward over
                   every row and layer: how far bf16 arithmetic moves a router's inputs
A row whose gap is below that error may choose another expert in bf16, and then differs by
a whole expert's output; the test keeps such rows out of its worst-row limit."""
import torch


def _router_logits(model, ids):
    """[layers] of [rows, E] f32 router logits, and each router's top k."""
    got, ks, hooks = [], [], []
    for mod in model.modules():
        if type(mod).__name__.endswith("TopKRouter"):  # transformers 5: (logits, scores, idx)
            ks.append(mod.top_k)
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out: got.append(out[0].detach().float().reshape(-1, out[0].shape[-1]))))
    try:
        with torch.no_grad():
            model(torch.tensor([ids], device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return got, ks


def router_ties(ref_model, bf16_model, ids):
    ref, ks = _router_logits(ref_model, ids)
    if not ref:
        return {}
    low, _ = _router_logits(bf16_model, ids)
    gap = None
    for lg, k in zip(ref, ks):
        top = torch.topk(lg, k + 1, dim=-1).values
        g = top[:, k - 1] - top[:, k]
        gap = g if gap is None else torch.minimum(gap, g)
    err = max(float((b.to(a.device) - a).abs().max()) for a, b in zip(ref, low))
    return dict(router_gap=[float(x) for x in gap.cpu()], router_bf16_err=err)
