#!/usr/bin/env python3
"""Tokenizer files for the tests of the non-BPE models and the SentencePiece pipelines,
written to tests/fixtures/tok/models/ (tools/tok_ref.py then makes their reference data).

- t5-small.json: the real t5-small tokenizer.json (Unigram, Precompiled normalizer, no
  model.type), copied byte for byte; its sha256 is checked.
- bert-base-uncased.json: bert-base-uncased's vocab.txt in the layout of the tokenizer.json
  its hub repository ships (BertNormalizer, BertPreTokenizer, WordPiece decoder, a model
  without "type").
- gemma-mini.json, albert-mini.json, xlnet-mini.json: SentencePiece models trained here on
  the corpus texts (a BPE with byte fallback; two Unigram models with a small custom
  normalization table, so their Precompiled charsmaps stay small), converted by
  transformers' GemmaConverter, AlbertConverter and XLNetConverter: the pipelines those
  families ship (Gemma: Replace normalizer, no pre-tokenizer, byte fallback; ALBERT: NFKD,
  StripAccents, Lowercase, Precompiled, Metaspace, [CLS]/[SEP]; XLNet: <sep><cls> at the end).

Usage: tools/tok_models.py --t5 T5_TOKENIZER_JSON --bert-vocab VOCAB_TXT [--shared ../shared]
"""
import argparse
import hashlib
import json
import os
import shutil
import tempfile
import types

import sentencepiece as spm
import transformers.convert_slow_tokenizer as csl
from transformers.convert_slow_tokenizer import AlbertConverter, GemmaConverter, XLNetConverter

# transformers 5's Gemma extractor reads self.sp, which its base class no longer sets.
if not hasattr(csl.GemmaSentencePieceExtractor, "sp"):
    csl.GemmaSentencePieceExtractor.sp = property(
        lambda self: spm.SentencePieceProcessor(model_proto=self.proto.SerializeToString()))

T5_SHA256 = "d2acde0d8d71dd30a711834b07781b9c89feaac33fd332f60507699282740066"
OUT = os.path.join(os.path.dirname(__file__), "../tests/fixtures/tok/models")

# A small normalization table (code points, tab, replacement code points): ligatures, full
# width, a two-char key (e + combining acute), an expansion, a deletion and a key longer
# than 5 bytes, so the grapheme and char paths of the Precompiled normalizer are both used.
RULES = """FB01\t66 69
FF21\t41
FF41\t61
65 301\tE9
2122\t54 4D
200B\t
1F1EB 1F1F7\t46 52
3000\t20
A0\t20
"""


def corpus_text(shared):
    tv = os.path.join(shared, "corpus/testvectors")
    out = []
    for f in ("gpt2_encoded_tokens.json", "llama_encoded.json", "llama_3.2_encoded.json", "gemma_encoded.json"):
        out.append(json.load(open(os.path.join(tv, "swift-transformers", f)))["text"])
    for cases in json.load(open(os.path.join(tv, "swift-transformers/tokenizer_tests.json"))).values():
        out += [c["input"] for c in cases]
    out += [e["text"] for e in json.load(open(os.path.join(tv, "swift-transformers-multilingual/inputs.json")))]
    return "\n".join(t.replace("\r", " ") for t in out if t.strip())


def train(tmp, text, kind, vocab, **kw):
    data = os.path.join(tmp, "text.txt")
    with open(data, "w") as f:
        f.write(text)
    prefix = os.path.join(tmp, kind)
    spm.SentencePieceTrainer.train(input=data, model_prefix=prefix, vocab_size=vocab, model_type=kind,
                                   character_coverage=1.0, hard_vocab_limit=False, **kw)
    return prefix + ".model"


def convert(conv, model, **attrs):
    orig = types.SimpleNamespace(vocab_file=model, **attrs)
    return json.loads(conv(orig).converted().to_str())


def bert(vocab_txt):
    toks = open(vocab_txt, encoding="utf-8").read().split("\n")
    if toks and toks[-1] == "":
        toks.pop()
    vocab = {t: i for i, t in enumerate(toks)}
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tpl = lambda *items: [{"SpecialToken": {"id": x, "type_id": 0}} if x[0] == "[" else
                          {"Sequence": {"id": x, "type_id": 0}} for x in items]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": vocab[s], "special": True, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False} for s in special],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing", "single": tpl("[CLS]", "A", "[SEP]"),
                           "pair": tpl("[CLS]", "A", "[SEP]", "B", "[SEP]"),
                           "special_tokens": {s: {"id": s, "ids": [vocab[s]], "tokens": [s]} for s in ("[CLS]", "[SEP]")}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        # The hub file predates model.type: the kind is inferred from these fields.
        "model": {"unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "vocab": vocab},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../shared"))
    ap.add_argument("--t5", required=True)
    ap.add_argument("--bert-vocab", required=True)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if hashlib.sha256(open(a.t5, "rb").read()).hexdigest() != T5_SHA256:
        raise SystemExit("t5-small tokenizer.json: unexpected sha256")
    shutil.copyfile(a.t5, os.path.join(OUT, "t5-small.json"))
    files = {"bert-base-uncased.json": bert(a.bert_vocab)}
    text = corpus_text(a.shared)
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "rules.tsv")
        with open(rules, "w") as f:
            f.write(RULES)
        g = train(tmp, text, "bpe", 1200, byte_fallback=True, split_digits=True, add_dummy_prefix=False,
                  allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
                  normalization_rule_name="identity", user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
                  pad_id=0, eos_id=1, bos_id=2, unk_id=3)
        files["gemma-mini.json"] = convert(GemmaConverter, g, add_prefix_space=False, legacy=False,
                                           bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
        u = train(tmp, text, "unigram", 1000, normalization_rule_tsv=rules, user_defined_symbols=["[CLS]", "[SEP]"])
        files["albert-mini.json"] = convert(AlbertConverter, u, keep_accents=False, do_lower_case=True,
                                            convert_tokens_to_ids=lambda t: {"[CLS]": 3, "[SEP]": 4}[t])
        x = train(tmp, text, "unigram", 900, normalization_rule_tsv=rules, user_defined_symbols=["<sep>", "<cls>"])
        files["xlnet-mini.json"] = convert(XLNetConverter, x, keep_accents=True, do_lower_case=False,
                                           convert_tokens_to_ids=lambda t: {"<sep>": 3, "<cls>": 4}[t])
    for name, j in files.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
