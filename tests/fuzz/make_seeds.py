#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/
from the repository's own files (bundled models, recipes, .pth fixtures) and
small hand-made inputs. Run from anywhere; the images' JPEG/WebP seeds come
from make_image_seeds.c (see scripts/fuzz)."""
import json, os, shutil, struct, sys, zlib

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", ".."))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
SEP = b"\n--8<--\n"


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(*p):
    with open(os.path.join(root, *p), "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


put("safetensors", "f32", safetensors({"w": ("F32", [2, 3], struct.pack("<6f", *range(6)))}))
put("safetensors", "mixed", safetensors({"a": ("BF16", [4], b"\x80\x3f" * 4), "b": ("I64", [1], struct.pack("<q", 7)),
                                         "c": ("F16", [0], b""), "d": ("U8", [3], b"abc")}, {"format": "pt"}))
for f in sorted(os.listdir(os.path.join(root, "tests", "fixtures", "pth"))):
    put("pth", f, read("tests", "fixtures", "pth", f))
for m in ("opt", "t5", "retrieval"):
    put("config", m + ".json", read("models", "shapes", m, "config.json"))
for dirpath, _, files in os.walk(os.path.join(root, "configs")):
    for f in files:
        if f.endswith(".yaml"):
            put("recipe", f, read(os.path.relpath(os.path.join(dirpath, f), root)))


def png(w, h, color_type, rows):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


put("image", "rgb.png", png(5, 4, 2, [bytes(v for x in range(5) for v in (x * 50, y * 60, 90)) for y in range(4)]))
put("image", "rgba.png", png(3, 3, 6, [bytes(v for x in range(3) for v in (x * 80, y * 80, 40, 200)) for y in range(3)]))
put("image", "gray.png", png(4, 2, 0, [bytes(range(y * 4, y * 4 + 4)) for y in range(2)]))

put("annotations", "captions", b"\x00" + json.dumps([
    {"image": "a.png", "caption": "a red square", "image_id": "coco_1"},
    {"image": "sub/b.png", "caption": ["first", "", "second"], "image_id": 42},
    {"image": "c.png", "caption": ["only"]},
    {"image": "d.png", "question": "what color?", "answer": ["red"]}]).encode())
put("annotations", "questions", b"\x01" + json.dumps([
    {"image": "a.png", "question": "what shape is it?", "answer": ["square", "square"], "question_id": 1,
     "question_type": "what shape"},
    {"image": "b.png", "question": "how many?", "answer": ["2"], "question_id": 2}]).encode())

put("tokenizer_load", "bpe", b"\x00" + read("models", "shapes", "opt", "vocab.json") + SEP +
    read("models", "shapes", "opt", "merges.txt") + SEP + read("models", "shapes", "opt", "tokenizer_config.json"))
put("tokenizer_load", "wordpiece", b"\x01" + read("models", "shapes", "retrieval", "vocab.txt") + SEP +
    read("models", "shapes", "retrieval", "tokenizer_config.json"))
put("tokenizer_load", "sentencepiece", b"\x03" + read("models", "shapes", "t5", "spiece.model") + SEP +
    read("models", "shapes", "t5", "tokenizer_config.json"))
vocab = json.loads(read("models", "shapes", "opt", "vocab.json"))
merges = [l for l in read("models", "shapes", "opt", "merges.txt").decode().splitlines()[1:] if l]
put("tokenizer_load", "fast", b"\x02" + json.dumps({
    "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    "added_tokens": [{"id": vocab.get("</s>", 2), "content": "</s>", "special": True}]}).encode())
for i, text in enumerate(["what color is the star?", "a red circle</s> and <pad>",
                          "  Mixed CASE, punctuation!? 123 \t\n", "\u00e9\u00e8 \u4e2d\u6587 \U0001F600",
                          "\xff\xfe broken utf-8"]):
    put("tokenizer_text", "t%d" % i, text.encode("utf-8", "surrogateescape") if i < 4 else b"\xff\xfe broken \xc3")
print("seeds written to", out)
