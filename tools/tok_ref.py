#!/usr/bin/env python3
"""Reference data for the tokenizer tests, from the Hugging Face `tokenizers` package.

Writes tests/fixtures/tok/inputs.json (the inputs, shared by all tokenizers) and
tests/fixtures/tok/expect-NAME.json (ids and decoded text per input, per tokenizer).

Inputs: the texts of the corpus test vectors (swift-transformers samples, tokenizer_tests.json
edge cases, the 83 multilingual inputs) and a seeded generated corpus: random unicode, emoji,
CJK, RTL, combining marks, whitespace runs, digits, code, very long words, special-token text,
invalid UTF-8 (as bytes; expected = HF on bytes.decode('utf-8', 'replace')), ~100 KB inputs
and 1 MB runs of one character class. Long inputs are stored as generator specs that the C
test rebuilds, and their expectations as counts and FNV-1a hashes, to keep the fixtures small.

Usage: tools/tok_ref.py [--shared ../shared] [--out tests/fixtures/tok] [--only NAME,...]
"""
import argparse
import json
import os
import random
import sys
import unicodedata

from tokenizers import Tokenizer

TOKENIZERS = {
    "gpt2": "corpus/tokenizers/gpt2/tokenizer.json",
    "llama-2": "corpus/tokenizers/llama-2/tokenizer.json",
    "llama-3": "corpus/tokenizers/llama-3/tokenizer.json",
    "phi-2": "corpus/tokenizers/phi-2/tokenizer.json",
    "stories260K": "corpus/models/stories260K-hf/tokenizer.json",
    "tiny": "models/tiny/tokenizer.json",  # the embedded default model, in this repository
    # tests/fixtures/tok/models (tools/tok_models.py): Unigram, WordPiece, SentencePiece layouts
    "t5-small": "tests/fixtures/tok/models/t5-small.json",
    "bert-base-uncased": "tests/fixtures/tok/models/bert-base-uncased.json",
    "gemma-mini": "tests/fixtures/tok/models/gemma-mini.json",
    "albert-mini": "tests/fixtures/tok/models/albert-mini.json",
    "xlnet-mini": "tests/fixtures/tok/models/xlnet-mini.json",
}
LOCAL = ("models/", "tests/")  # paths in this repository (run from its root), not the corpus
LONG = 2048  # inputs longer than this (bytes) get hashed expectations


def fnv1a(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def ids_bytes(ids):
    return b"".join(i.to_bytes(4, "little") for i in ids)


def corpus_texts(shared):
    tv = os.path.join(shared, "corpus/testvectors")
    out = []
    for f in ("gpt2_encoded_tokens.json", "llama_encoded.json", "llama_3.2_encoded.json"):
        out.append(json.load(open(os.path.join(tv, "swift-transformers", f)))["text"])
    tests = json.load(open(os.path.join(tv, "swift-transformers/tokenizer_tests.json")))
    for cases in tests.values():
        for c in cases:
            out.append(c["input"])
    for e in json.load(open(os.path.join(tv, "swift-transformers-multilingual/inputs.json"))):
        out.append(e["text"])
    seen, uniq = set(), []
    for t in out:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def rand_chars(rng, ranges, n):
    s = []
    while len(s) < n:
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            continue
        s.append(chr(c))
    return "".join(s)


def generated(rng):
    out = []
    any_ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
                  (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F),
                  (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
                  (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF), (0x0, 0x1F), (0x80, 0x9F)]
    for _ in range(80):
        out.append(rand_chars(rng, any_ranges, rng.randint(1, 60)))
    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "❤️", "🤖", "🧑🏿‍💻", "✨", "🎉"]
    for _ in range(20):
        out.append("".join(rng.choice(emoji + [" ", "a", "!", "\n"]) for _ in range(rng.randint(1, 15))))
    cjk = [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x3000, 0x303F), (0xFF01, 0xFF5E)]
    for _ in range(20):
        out.append(rand_chars(rng, cjk + [(0x20, 0x20)], rng.randint(1, 40)))
    rtl = [(0x5D0, 0x5EA), (0x620, 0x64A), (0x64B, 0x652), (0x660, 0x669), (0x20, 0x20), (0x200F, 0x200F)]
    for _ in range(15):
        out.append(rand_chars(rng, rtl, rng.randint(1, 40)))
    for _ in range(15):
        base = rand_chars(rng, [(0x61, 0x7A), (0x391, 0x3A9)], rng.randint(1, 8))
        out.append("".join(c + rand_chars(rng, [(0x300, 0x36F), (0x1AB0, 0x1AFF), (0x20D0, 0x20FF)],
                                          rng.randint(0, 4)) for c in base))
    ws = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "\u0085", "\u2028", "\u200b", "\x0b", "\x0c"]
    for _ in range(30):
        parts = []
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(ws) * rng.randint(1, 6))
            if rng.random() < 0.6:
                parts.append(rng.choice(["a", "word", "Hello", "x1", ".", "'s", "日本"]))
        out.append("".join(parts))
    digits = "0123456789"
    for _ in range(20):
        s = "".join(rng.choice(digits) for _ in range(rng.randint(1, 40)))
        if rng.random() < 0.5:
            s = rng.choice(["$", "v", " ", "٣٤٥", "１２３", "x"]) + s + rng.choice(["", ".5", "%", " 7", "²"])
        out.append(s)
    out += [
        "int main(int argc, char **argv)\n{\n\tprintf(\"%d\\n\", argc);\n\treturn 0;\n}\n",
        "def f(x):\n    if x > 0:\n        return x ** 2  # square\n    return -x\n",
        "    \n\n    indented\n\t\tand tabs\t\n",
        "for (i = 0; i < n; i++) { a[i] = b[i] * 2; }",
        "<html><body class=\"x\">&amp;&lt;</body></html>",
        "SELECT * FROM t WHERE id='1' AND name LIKE '%x%';",
        "x = {'a': [1, 2, 3], \"b\": None}\nprint(x['a'][0])",
        "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))",
        "fn main() { let v: Vec<u32> = (0..10).collect(); }",
        "$ ls -la | grep '^d' && echo done",
    ]
    out += [
        "I'M don't WE'LL they'VE it'S 'S 'T ſ 'ſ o'clock rock'n'roll",
        "Don't you think it's 'quoted' and 'll?",
    ]
    for _ in range(10):
        out.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(500, 5000))))
    specials = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|eot_id|>",
                "<|start_header_id|>", "<|reserved_special_token_5|>", "<|endof", "<s", "s>", "<|"]
    fill = ["", " ", "  ", "Hello", "world ", "\n", "a", "日本", " x "]
    for _ in range(40):
        out.append("".join(rng.choice(fill) + rng.choice(specials) for _ in range(rng.randint(1, 5))) + rng.choice(fill))
    out += ["", " ", "  ", "\n", "a", " a", "a ", "<s>", " <s> ", "<|endoftext|><|endoftext|>",
            "\u2581", "\u2581\u2581hello", "<0x41>", "▁▁ ▁"]
    return out


def invalid_bytes(rng):
    cases = [b"a\xffb", b"\xc3", b"\xe2\x82", b"abc\xf0\x9f\x98", b"\xed\xa0\x80x", b"\xc0\xaf",
             b"\xf4\x90\x80\x80", b"\x80\x80\x80 hi", b"caf\xe9 cr\xe8me"]
    for _ in range(10):
        cases.append(bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 30))))
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../shared"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../tests/fixtures/tok"))
    ap.add_argument("--only", default="", help="comma-separated tokenizer names to (re)write")
    a = ap.parse_args()
    rng = random.Random(20240611)
    texts = corpus_texts(a.shared)
    ncorpus = len(texts)
    texts += generated(rng)
    inputs = [{"text": t} for t in texts]
    for b in invalid_bytes(rng):
        inputs.append({"hex": b.hex()})
    # ~100 KB inputs built from the cases above, and 1 MB runs of one character class.
    n = len(inputs)
    short = [i for i in range(n) if "text" in inputs[i] and len(inputs[i]["text"].encode()) < LONG]
    inputs.append({"join": "\n", "of": short, "times": 6})
    inputs.append({"join": "", "of": list(range(ncorpus)), "times": 8})
    for ch in ["a", " ", "1", "\n", "é", "😀", "ab ", "\t "]:
        inputs.append({"join": "", "of": [], "rep": ch, "times": (1 << 20) // len(ch.encode())})

    def text_of(inp):
        if "text" in inp:
            return inp["text"]
        if "hex" in inp:
            return bytes.fromhex(inp["hex"]).decode("utf-8", "replace")
        if "rep" in inp:
            return inp["rep"] * inp["times"]
        return inp["join"].join(text_of(inputs[i]) for i in inp["of"]) * inp["times"]

    os.makedirs(a.out, exist_ok=True)
    vtexts = [i["text"] for i in inputs if "text" in i and len(i["text"].encode()) < 160]
    vtexts += ["hello world HELLO hello_world xhello hello!", "say <s> now<s>  <s>x", "TESTING ING ing",
               "the world, worldly world", "\u65e5\u672c \u65e5\u672c\u8a9e  \u65e5\u672c ", "x x-x xx", "</s>  </s>x",
               "that hat is a cat", "thequickbrown fox 123 re-at", "  leading and trailing  "]
    write_variants(a.shared, a.out, vtexts)
    if os.environ.get("TOK_REF_VARIANTS_ONLY"):
        return
    with open(os.path.join(a.out, "inputs.json"), "w") as f:
        json.dump({"corpus_inputs": ncorpus, "inputs": inputs}, f, ensure_ascii=False, separators=(",", ":"))
    def unassigned_in_3_2(inp):
        return any(unicodedata.ucd_3_2_0.category(c) == "Cn" for c in set(text_of(inp)))
    uv = None
    for name, rel in TOKENIZERS.items():
        if a.only and name not in a.only.split(","):
            continue
        path = rel if rel.startswith(LOCAL) else os.path.join(a.shared, rel)
        tok = Tokenizer.from_file(path)
        # Character classes of BertNormalizer, StripAccents and the BERT pre-tokenizer come
        # from Rust crates with older Unicode tables than utf8proc and PCRE2: on inputs with
        # characters assigned since, a difference is reported, not failed (as in variants).
        pipe = json.load(open(path))
        pipe["model"] = pipe["added_tokens"] = None
        uv_ok = any(k in json.dumps(pipe) for k in ("Bert", "StripAccents"))
        if uv_ok and uv is None:
            uv = [i for i, inp in enumerate(inputs) if unassigned_in_3_2(inp)]
        exp = []
        for inp in inputs:
            t = text_of(inp)
            ids = tok.encode(t).ids
            d = tok.decode(ids, skip_special_tokens=False)
            ds = tok.decode(ids, skip_special_tokens=True)
            if len(t.encode()) >= LONG or "join" in inp:
                exp.append({"n": len(ids), "h": fnv1a(ids_bytes(ids)), "dh": fnv1a(d.encode()),
                            "dsh": fnv1a(ds.encode())})
            else:
                e = {"ids": ids}
                if d != t or "hex" in inp:
                    e["d"] = d
                if ds != d:
                    e["ds"] = ds
                exp.append(e)
        with open(os.path.join(a.out, "expect-%s.json" % name), "w") as f:
            out = {"tokenizer": rel, "expect": exp}
            if uv_ok:
                out["uv"] = uv
            json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        print("%s: %d inputs" % (name, len(exp)), file=sys.stderr)


def synthetic_model():
    """A small WordPiece-like BPE: continuing_subword_prefix "##", end_of_word_suffix
    "</w>" variants, [UNK], merges as pairs."""
    words = ["the", "cat", "hat", "that", "hello", "world", "token", "is", "a", "at", "re"]
    vocab, merges = {}, []

    def add(t):
        if t not in vocab:
            vocab[t] = len(vocab)
    add("[UNK]")
    for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'":
        add(c)
        add("##" + c)
    for w in words:
        cur = [w[0]] + ["##" + c for c in w[1:]]
        left = cur[0]
        for nxt in cur[1:]:
            new = left + nxt[2:]
            if [left, nxt] not in merges:
                merges.append([left, nxt])
            add(new)
            left = new
    return vocab, merges


def variants(shared):
    """Pipelines the corpus tokenizers do not exercise, as patches over them (the C test
    applies the same patches) or as whole synthetic tokenizers."""
    sp = "corpus/models/stories260K-hf/tokenizer.json"
    g2 = "corpus/tokenizers/gpt2/tokenizer.json"
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    ms = lambda scheme, split=True: {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}
    msd = lambda scheme: {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": True}
    split = lambda pat, beh, inv=False: {"type": "Split", "pattern": pat, "behavior": beh, "invert": inv}
    seq = lambda *p: {"type": "Sequence", "pretokenizers": list(p)}
    nseq = lambda *n: {"type": "Sequence", "normalizers": list(n)}
    sp_dec = {"type": "Sequence", "decoders": [msd("first"), {"type": "ByteFallback"}, {"type": "Fuse"}]}
    v = [
        ("metaspace-first-nfkc", sp, {"normalizer": {"type": "NFKC"}, "pre_tokenizer": ms("first"), "decoder": sp_dec}),
        ("metaspace-always-lower-strip", sp, {"normalizer": nseq({"type": "NFC"}, {"type": "Lowercase"},
            {"type": "Strip", "strip_left": True, "strip_right": True}), "pre_tokenizer": ms("always"),
            "decoder": {"type": "Sequence", "decoders": [msd("always"), {"type": "ByteFallback"}, {"type": "Fuse"}]}}),
        ("metaspace-never-nosplit", sp, {"normalizer": None, "pre_tokenizer": ms("never", False),
            "decoder": {"type": "Sequence", "decoders": [msd("never"), {"type": "ByteFallback"}, {"type": "Fuse"}]}}),
        ("nfd-replace-regex", sp, {"normalizer": nseq({"type": "NFD"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}),
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"Regex": "\u2581+"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}),
        ("nfkd-strip-left", sp, {"normalizer": nseq({"type": "NFKD"}, {"type": "Strip", "strip_left": True, "strip_right": False},
            {"type": "Prepend", "prepend": "\u2581"})}),
        ("digits-punct-prefix", g2, {"pre_tokenizer": seq({"type": "Digits", "individual_digits": True},
            {"type": "Punctuation", "behavior": "Isolated"}, {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True})}),
        ("digits-contig-punct-next", g2, {"pre_tokenizer": seq({"type": "Digits", "individual_digits": False},
            {"type": "Punctuation", "behavior": "MergedWithNext"}, bl)}),
        ("wssplit", g2, {"pre_tokenizer": seq({"type": "WhitespaceSplit"}, bl)}),
        ("whitespace", g2, {"pre_tokenizer": seq({"type": "Whitespace"}, bl)}),
        ("split-removed", g2, {"pre_tokenizer": seq(split({"String": " "}, "Removed"), bl)}),
        ("split-merged-prev", g2, {"pre_tokenizer": seq(split({"String": " "}, "MergedWithPrevious"), bl)}),
        ("split-merged-next", g2, {"pre_tokenizer": seq(split({"Regex": "\\s"}, "MergedWithNext"), bl)}),
        ("split-contiguous-invert", g2, {"pre_tokenizer": seq(split({"Regex": "\\p{L}+"}, "Contiguous", True), bl)}),
        ("split-isolated-invert", g2, {"pre_tokenizer": seq(split({"Regex": "[aeiou]"}, "Isolated", True), bl)}),
        ("split-empty-regex", g2, {"pre_tokenizer": seq(split({"Regex": "x*"}, "Isolated"), bl)}),
        ("lowercase-template", g2, {"normalizer": {"type": "Lowercase"}, "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
             {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
             "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [50256], "tokens": ["<|endoftext|>"]}}}]}}),
        ("roberta", g2, {"post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
            "trim_offsets": True, "add_prefix_space": False}}),
        ("added-flags", g2, {"normalizer": {"type": "Lowercase"}, "added_tokens": [
            {"id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
            {"id": 50257, "content": "hello", "single_word": True, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
            {"id": 50258, "content": "<s>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": True},
            {"id": 50259, "content": "ING", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
            {"id": 50260, "content": "world", "single_word": True, "lstrip": True, "rstrip": False, "normalized": True, "special": False},
            {"id": 50261, "content": "</s>", "single_word": False, "lstrip": False, "rstrip": True, "normalized": True, "special": True},
            {"id": 50262, "content": "\u65e5\u672c", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": False},
            {"id": 50263, "content": "x", "single_word": True, "lstrip": False, "rstrip": False, "normalized": True, "special": False}]}),
        ("added-strip-spaces", sp, {"added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
            {"id": 1, "content": "<s>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": True},
            {"id": 2, "content": "</s>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": True},
            {"id": 512, "content": "  ", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False}]}),
    ]
    t5 = "tests/fixtures/tok/models/t5-small.json"
    bert = "tests/fixtures/tok/models/bert-base-uncased.json"
    bnorm = lambda clean, cjk, acc, low: {"type": "BertNormalizer", "clean_text": clean, "handle_chinese_chars": cjk,
                                          "strip_accents": acc, "lowercase": low}
    v += [
        ("bert-cased-keep-accents", bert, {"normalizer": bnorm(True, True, None, False),
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False}}),
        ("bert-strip-accents-no-clean", bert, {"normalizer": bnorm(False, False, True, False),
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}}),
        ("bert-lower-keep-accents", bert, {"normalizer": bnorm(True, False, False, True)}),
        ("bert-nmt-nfd-strip-accents", bert, {"normalizer": nseq({"type": "Nmt"}, {"type": "NFD"}, {"type": "StripAccents"},
            {"type": "Lowercase"}), "pre_tokenizer": {"type": "Whitespace"},
            "decoder": {"type": "CTC", "pad_token": "[PAD]", "word_delimiter_token": "##", "cleanup": True}}),
        ("t5-fixed-length-ctc", t5, {"pre_tokenizer": seq({"type": "FixedLength", "length": 3}, ms("first", False)),
            "decoder": {"type": "Sequence", "decoders": [{"type": "CTC", "pad_token": "<pad>", "word_delimiter_token": "\u2581",
            "cleanup": True}]}}),
        ("t5-nfkc-strip-accents", t5, {"normalizer": nseq({"type": "NFKD"}, {"type": "StripAccents"}, {"type": "NFKC"}),
            "pre_tokenizer": ms("never", True), "post_processor": None, "decoder": {"type": "Metaspace", "replacement": "\u2581",
            "prepend_scheme": "never", "split": True}}),
        ("t5-unicode-scripts", t5, {"pre_tokenizer": seq({"type": "UnicodeScripts"}, {"type": "WhitespaceSplit"},
            ms("always"))}),
        ("wssplit-unicode-scripts", g2, {"pre_tokenizer": seq({"type": "UnicodeScripts"}, bl)}),
        ("bytelevel-normalizer", g2, {"normalizer": {"type": "ByteLevel"}, "pre_tokenizer": split({"String": "\u0120"}, "MergedWithNext")}),
    ]
    vocab, merges = synthetic_model()
    base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges}}
    v.append(("synthetic-prefix", None, base))
    b2 = json.loads(json.dumps(base))
    b2["model"]["fuse_unk"] = True
    b2["model"]["ignore_merges"] = True
    b2["model"]["merges"] = [" ".join(m) for m in merges]
    b2["pre_tokenizer"] = {"type": "Whitespace"}
    v.append(("synthetic-fuse-unk-legacy-merges", None, b2))
    b3 = json.loads(json.dumps(base))
    sfx = {}
    for t, i in vocab.items():
        sfx[t] = i
    for c in "abcdefghijklmnopqrstuvwxyz":
        sfx["##" + c + "</w>"] = len(sfx)
        sfx[c + "</w>"] = len(sfx)
    b3["model"]["vocab"] = sfx
    b3["model"]["end_of_word_suffix"] = "</w>"
    b3["model"]["unk_token"] = None
    v.append(("synthetic-suffix-no-unk", None, b3))
    b4 = json.loads(json.dumps(b3))
    b4["decoder"] = {"type": "BPEDecoder", "suffix": "</w>"}
    v.append(("synthetic-bpe-decoder", None, b4))
    # WordLevel: typed, and as an older file without "type"; WordPiece with other options.
    words = {"[UNK]": 0, "[PAD]": 1}
    for w in ["hello", "world", "the", "cat", "hat", "is", "a", ",", ".", "!", "x", "123", "\u65e5\u672c"]:
        words[w] = len(words)
    wl = {"version": "1.0", "added_tokens": [{"id": 1, "content": "[PAD]", "special": True, "normalized": False,
                                              "single_word": False, "lstrip": False, "rstrip": False}],
          "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
          "decoder": None, "model": {"type": "WordLevel", "vocab": words, "unk_token": "[UNK]"}}
    v.append(("wordlevel", None, wl))
    wl2 = json.loads(json.dumps(wl))
    del wl2["model"]["type"]
    wl2["pre_tokenizer"] = {"type": "BertPreTokenizer"}
    v.append(("wordlevel-legacy-bert-pre", None, wl2))
    wp = json.loads(json.dumps(base))
    wp["model"] = {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                   "max_input_chars_per_word": 8, "vocab": vocab}
    wp["decoder"] = {"type": "WordPiece", "prefix": "##", "cleanup": True}
    v.append(("wordpiece-max-chars-8", None, wp))
    wp2 = json.loads(json.dumps(wp))
    wp2["model"]["continuing_subword_prefix"] = ""
    wp2["model"]["max_input_chars_per_word"] = 100
    wp2["decoder"] = {"type": "WordPiece", "prefix": "", "cleanup": False}
    v.append(("wordpiece-empty-prefix", None, wp2))
    # Unigram with byte fallback and no unk fusing into unk: the XLNet-like model plus <0xHH>.
    xl = json.load(open("tests/fixtures/tok/models/xlnet-mini.json"))
    xl["model"]["vocab"] += [["<0x%02X>" % b, -30.0] for b in range(256)]
    xl["model"]["byte_fallback"] = True
    xl["decoder"] = {"type": "Sequence", "decoders": [ms("always"), {"type": "ByteFallback"}, {"type": "Fuse"}]}
    v.append(("unigram-byte-fallback", None, xl))
    xl2 = json.load(open("tests/fixtures/tok/models/xlnet-mini.json"))
    del xl2["model"]["type"]
    xl2["model"]["vocab"].append(["\u2581hello", 0.0])
    xl2["model"]["vocab"].append(["\u2581hello", -100.0])  # a repeated string: the later id wins
    v.append(("unigram-legacy-repeated-piece", None, xl2))
    return v


def apply_patch(shared, base, patch):
    if base is None:
        return json.loads(json.dumps(patch))
    j = json.load(open(base if base.startswith(LOCAL) else os.path.join(shared, base)))
    j.update(json.loads(json.dumps(patch)))
    return j


def write_variants(shared, out, texts):
    vs = []
    for name, base, patch in variants(shared):
        j = apply_patch(shared, base, patch)
        tok = Tokenizer.from_str(json.dumps(j))
        exp = []
        for t in texts:
            ids = tok.encode(t).ids
            e = {"ids": ids}
            d = tok.decode(ids, skip_special_tokens=False)
            ds = tok.decode(ids, skip_special_tokens=True)
            if d != t:
                e["d"] = d
            if ds != d:
                e["ds"] = ds
            exp.append(e)
        # HF's normalizers and its Punctuation/Digits/Whitespace character classes come from
        # Rust crates pinned to older Unicode versions than utf8proc and PCRE2 here.
        uv_ok = any(k in json.dumps(patch) for k in ('"NF', "Punctuation", "Digits", '"Whitespace"', "Lowercase",
                                                     "Bert", "StripAccents", "Precompiled", "Nmt",
                                                     "UnicodeScripts"))
        vs.append({"name": name, "base": base, "patch": patch, "uv_ok": uv_ok, "expect": exp})
        print("variant %s: %d inputs" % (name, len(exp)), file=sys.stderr)
    with open(os.path.join(out, "variants.json"), "w") as f:
        # Inputs holding a character unassigned in Unicode 3.2: where the Unicode versions of
        # the libraries disagree, a difference on these is reported, not failed (uv_ok).
        uv = [i for i, t in enumerate(texts) if any(unicodedata.ucd_3_2_0.category(c) == "Cn" for c in t)]
        json.dump({"inputs": texts, "uv": uv, "variants": vs}, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
