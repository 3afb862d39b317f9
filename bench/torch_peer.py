#!/usr/bin/env python3
"""The eager-PyTorch peer of `blip2 bench`, for machines where HuggingFace
transformers cannot be installed (this project's build machines reach no PyPI).

It runs HuggingFace transformers' BLIP-2 + OPT forward (version 4.45, `eager`
attention, the version that made ../shared/golden) op for op in plain torch:
the same modules, the same tensor shapes, the same KV-cache handling (past
keys/values concatenated every step), the same 4-D float masks rebuilt every
step, logits over the whole vocabulary for every prefill position, and a
prefill repeated per beam as HF's generate() does. What it leaves out is HF's
Python-side bookkeeping in generate() (logits-processor objects, stopping
criteria, BeamSearchScorer's per-candidate loop), so it is, if anything, a
little faster than transformers: ratios against it understate ours.

    python3 bench/torch_peer.py --check ../shared/golden/opt      # reproduce HF's golden outputs first
    python3 bench/torch_peer.py --preset vitl-opt125m --threads 2 --json
    OPENBLAS_NUM_THREADS=1 python3 bench/torch_peer.py ...          # torch at its best thread setting

Prints the same keys as `blip2 bench --json` (those it measures), with
"peer": "eager-torch (HF 4.45 graph)". Needs python3-torch (Debian's 1.13 is
what the issue measured HF on) and numpy; not part of CI.
"""
import argparse
import json
import math
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from peer_common import median_ms, report

PRESETS = {
    # vision (D, MLP, layers, heads, image, patch), Q-Former (hidden, layers, queries), OPT (D, FFN, layers, heads, vocab)
    "vitl-opt125m": dict(vision=(1024, 4096, 24, 16, 224, 14), qformer=(768, 12, 32), opt=(768, 3072, 12, 12, 50272)),
    "vitg-opt2.7b": dict(vision=(1408, 6144, 39, 16, 224, 14), qformer=(768, 12, 32), opt=(2560, 10240, 32, 32, 50272)),
    "tiny": dict(vision=(64, 128, 2, 4, 32, 8), qformer=(64, 2, 8), opt=(64, 128, 2, 4, 256)),
}


class Cfg:
    """The fields of an HF Blip2Config this graph reads (defaults are HF's)."""

    def __init__(self, vision, qformer, text, num_query_tokens):
        self.v, self.q, self.t, self.num_query_tokens = vision, qformer, text, num_query_tokens

    @staticmethod
    def from_preset(name):
        p = PRESETS[name]
        vd, vf, vl, vh, img, patch = p["vision"]
        qd, ql, nq = p["qformer"]
        td, tf, tl, th, vocab = p["opt"]
        vision = dict(hidden_size=vd, intermediate_size=vf, num_hidden_layers=vl, num_attention_heads=vh,
                      image_size=img, patch_size=patch, layer_norm_eps=1e-6)
        qformer = dict(hidden_size=qd, intermediate_size=4 * qd if name != "tiny" else 2 * qd, num_hidden_layers=ql,
                       num_attention_heads=12 if name != "tiny" else 4, cross_attention_frequency=2,
                       encoder_hidden_size=vd, layer_norm_eps=1e-12)
        text = dict(hidden_size=td, ffn_dim=tf, num_hidden_layers=tl, num_attention_heads=th, vocab_size=vocab,
                    word_embed_proj_dim=td, max_position_embeddings=2048 if name != "tiny" else 128,
                    bos_token_id=2, eos_token_id=2, pad_token_id=1)
        return Cfg(vision, qformer, text, nq)

    @staticmethod
    def from_hf_json(path):
        c = json.load(open(path))
        if c.get("image_token_index") is not None or c["text_config"].get("model_type", "opt") != "opt":
            raise SystemExit(f"{path}: this peer runs the legacy BLIP-2 + OPT graph (queries concatenated in front of "
                             "the prompt, no image_token_index); use a case like golden/opt")
        v = {"layer_norm_eps": 1e-6, **c["vision_config"]}
        q = {"cross_attention_frequency": 2, "layer_norm_eps": 1e-12, **c["qformer_config"]}
        t = {"bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, **c["text_config"]}
        t.setdefault("word_embed_proj_dim", t["hidden_size"])
        return Cfg(v, q, t, c.get("num_query_tokens", 32))


# ---- vision: Blip2VisionModel -------------------------------------------------------------------------------------
class VisionAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.qkv = nn.Linear(d, 3 * d)  # HF: bias = cat(q_bias, zeros, v_bias)
        self.projection = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        probs = (torch.matmul(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        return self.projection(torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(b, t, d))


class VisionLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.self_attn = VisionAttention(d, c["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.layer_norm2 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, c["intermediate_size"]), nn.Linear(c["intermediate_size"], d)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.layer_norm2(x))))


class VisionModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["hidden_size"], c["patch_size"]
        n = (c["image_size"] // p) ** 2
        self.embeddings = nn.Module()
        self.embeddings.class_embedding = nn.Parameter(torch.randn(1, 1, d))
        self.embeddings.patch_embedding = nn.Conv2d(3, d, p, p)
        self.embeddings.position_embedding = nn.Parameter(torch.randn(1, n + 1, d))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(VisionLayer(c) for _ in range(c["num_hidden_layers"]))
        self.post_layernorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])

    def forward(self, px):
        e = self.embeddings
        patches = e.patch_embedding(px.to(e.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([e.class_embedding.expand(px.shape[0], 1, -1).to(patches.dtype), patches], 1)
        x = x + e.position_embedding[:, : x.size(1)].to(x.dtype)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


# ---- Q-Former: Blip2QFormerModel, queries only (no text input), as generate() runs it -----------------------------
class BertAttention(nn.Module):
    def __init__(self, d, kv_dim, heads, eps):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.query, self.attention.key, self.attention.value = nn.Linear(d, d), nn.Linear(kv_dim, d), nn.Linear(kv_dim, d)
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)

    def forward(self, x, kv, mask):
        a, b, t, d = self.attention, x.shape[0], x.shape[1], x.shape[2]
        hd = d // self.heads

        def split(y):
            return y.view(b, -1, self.heads, hd).permute(0, 2, 1, 3)
        scores = torch.matmul(split(a.query(x)), split(a.key(kv)).transpose(-1, -2)) / math.sqrt(hd) + mask
        ctx = torch.matmul(scores.softmax(dim=-1), split(a.value(kv))).permute(0, 2, 1, 3).reshape(b, t, d)
        return self.output.LayerNorm(self.output.dense(ctx) + x)


class QFormerLayer(nn.Module):
    def __init__(self, c, idx):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.attention = BertAttention(d, d, c["num_attention_heads"], eps)
        self.has_cross = idx % c["cross_attention_frequency"] == 0
        if self.has_cross:
            self.crossattention = BertAttention(d, c["encoder_hidden_size"], c["num_attention_heads"], eps)
        self.intermediate_query = nn.Module()
        self.intermediate_query.dense = nn.Linear(d, c["intermediate_size"])
        self.output_query = nn.Module()
        self.output_query.dense, self.output_query.LayerNorm = nn.Linear(c["intermediate_size"], d), nn.LayerNorm(d, eps=eps)

    def forward(self, x, self_mask, image, image_mask):
        x = self.attention(x, x, self_mask)
        if self.has_cross:
            x = self.crossattention(x, image, image_mask)
        o = self.output_query
        return o.LayerNorm(o.dense(F.gelu(self.intermediate_query.dense(x))) + x)


class QFormer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(QFormerLayer(c, i) for i in range(c["num_hidden_layers"]))

    def forward(self, queries, image):
        x = self.layernorm(queries)
        big_neg = torch.finfo(x.dtype).min

        def extended(mask):  # HF: (1 - mask[:, None, None, :]) * finfo.min, built for every call
            return (1.0 - mask[:, None, None, :].to(x.dtype)) * big_neg
        self_mask = extended(torch.ones(x.shape[:2], dtype=torch.long))
        image_mask = extended(torch.ones(image.shape[:2], dtype=torch.long))
        for layer in self.encoder.layer:
            x = layer(x, self_mask, image, image_mask)
        return x


# ---- OPT: OPTForCausalLM, legacy tuple KV cache ------------------------------------------------------------------
class OPTAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.hd, self.scaling = heads, d // heads, (d // heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask, past):
        b, t, d = x.shape

        def shape(y):
            return y.view(b, -1, self.heads, self.hd).transpose(1, 2).contiguous()
        q = self.q_proj(x) * self.scaling
        k, v = shape(self.k_proj(x)), shape(self.v_proj(x))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v)
        s = k.size(2)
        q = shape(q).view(b * self.heads, t, self.hd)
        w = torch.bmm(q, k.view(b * self.heads, s, self.hd).transpose(1, 2)).view(b, self.heads, t, s) + mask
        w = torch.max(w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = w.view(b * self.heads, t, s).softmax(dim=-1)
        out = torch.bmm(w, v.view(b * self.heads, s, self.hd)).view(b, self.heads, t, self.hd).transpose(1, 2)
        return self.out_proj(out.reshape(b, t, d)), present


class OPTLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.self_attn = OPTAttention(d, c["num_attention_heads"])
        self.self_attn_layer_norm, self.final_layer_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, c["ffn_dim"]), nn.Linear(c["ffn_dim"], d)

    def forward(self, x, mask, past):
        h, present = self.self_attn(self.self_attn_layer_norm(x), mask, past)
        x = x + h
        shape = x.shape
        x = x.reshape(-1, x.size(-1))
        x = (x + self.fc2(F.relu(self.fc1(self.final_layer_norm(x))))).view(shape)
        return x, present


class OPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.model = nn.Module()
        dec = self.model.decoder = nn.Module()
        dec.embed_tokens = nn.Embedding(c["vocab_size"], c["word_embed_proj_dim"])
        dec.embed_positions = nn.Embedding(c["max_position_embeddings"] + 2, d)
        dec.layers = nn.ModuleList(OPTLayer(c) for _ in range(c["num_hidden_layers"]))
        dec.final_layer_norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(c["word_embed_proj_dim"], c["vocab_size"], bias=False)
        self.lm_head.weight = dec.embed_tokens.weight  # tied, as HF saves it

    def forward(self, attention_mask, input_ids=None, inputs_embeds=None, past=None):
        dec = self.model.decoder
        if inputs_embeds is None:
            inputs_embeds = dec.embed_tokens(input_ids)
        b, t = inputs_embeds.shape[:2]
        past_len = past[0][0].shape[2] if past is not None else 0
        # _prepare_4d_causal_attention_mask: causal [t, past+t] and the padding mask, finfo.min filled
        big_neg = torch.finfo(inputs_embeds.dtype).min
        causal = torch.full((t, t), big_neg, dtype=inputs_embeds.dtype).triu(1)
        causal = torch.cat([torch.zeros(t, past_len, dtype=inputs_embeds.dtype), causal], dim=-1)
        pad = (1.0 - attention_mask[:, None, None, :].to(inputs_embeds.dtype)) * big_neg
        mask = causal[None, None].expand(b, 1, t, past_len + t).masked_fill(pad.bool(), big_neg)
        pos = (torch.cumsum(attention_mask, dim=1) * attention_mask - 1).long()[:, past_len:]
        x = inputs_embeds + dec.embed_positions(pos + 2)
        presents = []
        for i, layer in enumerate(dec.layers):
            x, present = layer(x, mask, past[i] if past is not None else None)
            presents.append(present)
        return self.lm_head(dec.final_layer_norm(x)).contiguous(), tuple(presents)


class Blip2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.vision_model = VisionModel(cfg.v)
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_query_tokens, cfg.q["hidden_size"]))
        self.qformer = QFormer(cfg.q)
        self.language_projection = nn.Linear(cfg.q["hidden_size"], cfg.t["hidden_size"])
        self.language_model = OPT(cfg.t)

    def lm_inputs(self, px, input_ids=None, attention_mask=None):
        image = self.vision_model(px)
        queries = self.qformer(self.query_tokens.expand(image.shape[0], -1, -1), image)
        proj = self.language_projection(queries)
        if input_ids is None:
            input_ids = torch.full((px.shape[0], 1), self.cfg.t["bos_token_id"], dtype=torch.long)
            attention_mask = torch.ones_like(input_ids)
        embeds = torch.cat([proj, self.language_model.model.decoder.embed_tokens(input_ids)], 1)
        return embeds, torch.cat([torch.ones(proj.shape[:2], dtype=torch.long), attention_mask], 1)

    def generate(self, px, max_new_tokens, min_new_tokens=0, num_beams=1, input_ids=None, attention_mask=None):
        """HF 4.45 generate(): greedy (_sample) or beam search (_beam_search, length_penalty 1) from inputs_embeds;
        [BOS] + new tokens per row, finished rows padded. Beam search keeps the per-step work (log-softmax, top-2k
        over beams x vocab, cache reorder by index_select); EOS inside the beam is only handled by min_new_tokens."""
        t = self.cfg.t
        embeds, mask = self.lm_inputs(px, input_ids, attention_mask)
        b = embeds.shape[0]
        lm = self.language_model
        if num_beams > 1:
            embeds, mask = embeds.repeat_interleave(num_beams, 0), mask.repeat_interleave(num_beams, 0)
            beam_scores = torch.zeros(b, num_beams)
            beam_scores[:, 1:] = -1e9
            beam_scores = beam_scores.view(-1)
        out_ids = torch.zeros(embeds.shape[0], 0, dtype=torch.long)
        unfinished = torch.ones(embeds.shape[0], dtype=torch.long)
        logits, past = lm(mask, inputs_embeds=embeds)
        for step in range(max_new_tokens):
            scores = logits[:, -1, :].clone().float()
            if step < min_new_tokens:
                scores[:, t["eos_token_id"]] = -math.inf
            if num_beams == 1:
                tok = scores.argmax(-1)
                tok = tok * unfinished + t["pad_token_id"] * (1 - unfinished)
                out_ids = torch.cat([out_ids, tok[:, None]], 1)
                unfinished = unfinished & (tok != t["eos_token_id"]).long()
                if step + 1 == max_new_tokens or unfinished.max() == 0:
                    break
            else:
                v = scores.shape[-1]
                scores = scores.log_softmax(-1) + beam_scores[:, None]
                top, idx = scores.view(b, num_beams * v).topk(2 * num_beams, dim=1, largest=True, sorted=True)
                top, idx = top[:, :num_beams], idx[:, :num_beams]
                beam_idx = (idx // v + torch.arange(b)[:, None] * num_beams).view(-1)
                tok, beam_scores = (idx % v).view(-1), top.reshape(-1)
                out_ids = torch.cat([out_ids[beam_idx], tok[:, None]], 1)
                if step + 1 == max_new_tokens:
                    out_ids = out_ids.view(b, num_beams, -1)[:, 0]
                    break
                past = tuple(tuple(s.index_select(0, beam_idx) for s in layer) for layer in past)
            mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.long)], 1)
            logits, past = lm(mask, input_ids=tok[:, None], past=past)
        return torch.cat([torch.full((out_ids.shape[0], 1), t["bos_token_id"], dtype=torch.long), out_ids], 1)


# ---- checkpoints --------------------------------------------------------------------------------------------------
def read_safetensors(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, z = info["data_offsets"]
        arr = np.frombuffer(blob, dtype=kinds[info["dtype"]], count=(z - a) // np.dtype(kinds[info["dtype"]]).itemsize,
                            offset=8 + n + a)
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out


def check_golden(d):
    """Run HF's golden OPT case and compare: forward logits, greedy ids and their step logits."""
    model = Blip2(Cfg.from_hf_json(f"{d}/config.json")).eval()
    weights = read_safetensors(f"{d}/model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if m != "language_model.lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"checkpoint names do not match the graph: missing {missing[:5]}, unexpected {unexpected[:5]}")
    x, y = read_safetensors(f"{d}/inputs.safetensors"), read_safetensors(f"{d}/outputs.safetensors")
    worst = {}
    with torch.no_grad():
        embeds, mask = model.lm_inputs(x["pixel_values"], x["input_ids"], x["attention_mask"])
        logits, _ = model.language_model(mask, inputs_embeds=embeds)
        worst["logits"] = (logits - y["logits"]).abs().max().item()
        ids = model.generate(x["pixel_values"], max_new_tokens=y["generate.greedy_noprompt.ids"].shape[1] - 1)
        same = torch.equal(ids, y["generate.greedy_noprompt.ids"])
        ids_p = model.generate(x["pixel_values"], max_new_tokens=y["generate.greedy.ids"].shape[1] - 1,
                               input_ids=x["input_ids"], attention_mask=x["attention_mask"])
        same = same and torch.equal(ids_p, y["generate.greedy.ids"])
    ok = worst["logits"] < 1e-3 and same
    print(json.dumps({"golden": d, "max_abs_logit_error": worst["logits"], "greedy_ids_equal": same, "ok": ok}))
    return 0 if ok else 1


# ---- the benchmark ------------------------------------------------------------------------------------------------
def randomise(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name.lower() or "layernorm" in name.lower():
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.normal_(0.0, 0.02, generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="vitl-opt125m", choices=sorted(PRESETS))
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--check", metavar="GOLDEN_DIR", help="compare with HF's outputs in a golden OPT case, then exit")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.check:
        return check_golden(a.check)
    dtype = getattr(torch, a.dtype)
    t0 = time.perf_counter()
    model = Blip2(Cfg.from_preset(a.preset))
    randomise(model)
    model = model.to(dtype).eval()
    r = {"preset": a.preset, "dtype": "fp32" if a.dtype == "float32" else "bf16", "threads": torch.get_num_threads(),
         "peer": "eager-torch (HF 4.45 graph)", "torch": torch.__version__, "build_s": time.perf_counter() - t0}
    v = model.cfg.v
    px1 = torch.randn(1, 3, v["image_size"], v["image_size"], dtype=dtype)
    px8 = torch.randn(8, 3, v["image_size"], v["image_size"], dtype=dtype)
    with torch.no_grad():
        image = model.vision_model(px1)
        r["vision_ms_b1"] = median_ms(a.repeats, lambda: model.vision_model(px1))
        r["vision_ms_b8"] = median_ms(a.repeats, lambda: model.vision_model(px8)) / 8
        q = model.query_tokens.expand(1, -1, -1)
        r["qformer_ms"] = median_ms(a.repeats, lambda: model.qformer(q, image))
        embeds, mask = model.lm_inputs(px1)
        lm = model.language_model
        r["prefill_ms"] = median_ms(a.repeats, lambda: lm(mask, inputs_embeds=embeds))

        def decode():
            logits, past = lm(mask, inputs_embeds=embeds)
            m = mask
            for _ in range(a.new_tokens):
                m = torch.cat([m, torch.ones(1, 1, dtype=torch.long)], 1)
                logits, past = lm(m, input_ids=logits[:, -1].argmax(-1, keepdim=True), past=past)
        decode_ms = median_ms(a.repeats, decode)
        r["decode_tok_s"] = a.new_tokens / max(1e-9, (decode_ms - r["prefill_ms"]) / 1e3)
        n = a.new_tokens
        r["e2e_greedy20_ms"] = median_ms(a.repeats, lambda: model.generate(px1, n, n))
        r["e2e_beam5_ms"] = median_ms(a.repeats, lambda: model.generate(px1, n, n, num_beams=a.beams))
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    report(r, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
