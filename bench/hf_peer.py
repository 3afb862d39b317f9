#!/usr/bin/env python3
"""The peer of `blip2 bench`: HuggingFace transformers timed on the same
shapes, random weights, stages and token counts, so that the ratio is
measured side by side on one machine. Not part of CI (needs torch and
transformers, which this project never installs).

    python3 bench/hf_peer.py --preset vitl-opt125m --threads 2 --json
    OPENBLAS_NUM_THREADS=1 python3 bench/hf_peer.py ...   # HF at its best thread setting

Prints the same keys as `blip2 bench --json` (those it can measure).
"""
import argparse
import resource
import time

import torch
from peer_common import median_ms, report
from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig,
                          OPTConfig)


def preset(name):
    if name == "vitl-opt125m":
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
        qformer = dict(encoder_hidden_size=1024)
        text = dict()  # OPT-125m: OPTConfig's defaults
    elif name == "vitg-opt2.7b":
        vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16)
        qformer = dict(encoder_hidden_size=1408)
        text = dict(hidden_size=2560, word_embed_proj_dim=2560, num_hidden_layers=32, ffn_dim=10240,
                    num_attention_heads=32)
    elif name == "tiny":
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8)
        qformer = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=64, encoder_hidden_size=64)
        text = dict(vocab_size=256, hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2, ffn_dim=128,
                    num_attention_heads=4, max_position_embeddings=128)
    else:
        raise SystemExit(f"unknown preset {name}")
    vision.setdefault("image_size", 224)
    vision.setdefault("patch_size", 14)
    nq = 8 if name == "tiny" else 32
    return Blip2Config(vision_config=Blip2VisionConfig(**vision).to_dict(),
                       qformer_config=Blip2QFormerConfig(**qformer).to_dict(),
                       text_config=OPTConfig(**text).to_dict(), num_query_tokens=nq)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="vitl-opt125m")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = Blip2ForConditionalGeneration(preset(a.preset)).to(dtype).eval()
    build_s = time.perf_counter() - t0
    v = model.config.vision_config
    px1 = torch.randn(1, 3, v.image_size, v.image_size, dtype=dtype)
    px8 = torch.randn(8, 3, v.image_size, v.image_size, dtype=dtype)
    r = {"preset": a.preset, "dtype": "fp32" if a.dtype == "float32" else "bf16", "threads": torch.get_num_threads(),
         "peer": "transformers", "build_s": build_s}
    with torch.no_grad():
        image = None

        def vis1():
            nonlocal image
            image = model.vision_model(pixel_values=px1).last_hidden_state
        r["vision_ms_b1"] = median_ms(a.repeats, vis1)
        r["vision_ms_b8"] = median_ms(a.repeats, lambda: model.vision_model(pixel_values=px8)) / 8
        q = model.query_tokens.expand(1, -1, -1)
        mask = torch.ones(image.shape[:-1], dtype=torch.long)
        queries = None

        def qf():
            nonlocal queries
            queries = model.qformer(query_embeds=q, encoder_hidden_states=image,
                                    encoder_attention_mask=mask).last_hidden_state
        r["qformer_ms"] = median_ms(a.repeats, qf)
        lm = model.language_model
        proj = model.language_projection(queries)
        bos = torch.full((1, 1), lm.config.bos_token_id, dtype=torch.long)
        embeds = torch.cat([proj, lm.get_input_embeddings()(bos)], 1)
        attn = torch.ones(embeds.shape[:-1], dtype=torch.long)
        r["prefill_ms"] = median_ms(a.repeats, lambda: lm(inputs_embeds=embeds, attention_mask=attn, use_cache=True))

        def decode():
            out = lm(inputs_embeds=embeds, attention_mask=attn, use_cache=True)
            past, m = out.past_key_values, attn
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(a.new_tokens):
                m = torch.cat([m, torch.ones(1, 1, dtype=torch.long)], 1)
                out = lm(input_ids=tok, attention_mask=m, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        decode_ms = median_ms(a.repeats, decode)
        r["decode_tok_s"] = a.new_tokens / max(1e-9, (decode_ms - r["prefill_ms"]) / 1e3)
        g = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens)
        r["e2e_greedy20_ms"] = median_ms(a.repeats, lambda: model.generate(pixel_values=px1, **g))
        r["e2e_beam5_ms"] = median_ms(a.repeats, lambda: model.generate(pixel_values=px1, num_beams=a.beams, **g))
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    report(r, a.json)


if __name__ == "__main__":
    main()
