#!/usr/bin/env python3
"""Tokenizer fixtures for tests/engine/tokenizer_test.cpp.

Usage:  make_tokenizer_fixtures.py OUTDIR

Trains tiny tokenizers for the purpose (byte-fallback SentencePiece BPE like Llama's and Gemma's, a
unigram one, Llama-3-style and Qwen2-style byte-level BPE, a GPT-2-style one) on
tests/parity/corpus.txt, lays each out as a Hugging Face checkpoint directory would
(OUTDIR/NAME/{tokenizer.model, tokenizer.json, tokenizer_config.json, config.json,
generation_config.json}) in the variants transformers 5 treats differently (LlamaTokenizer legacy or
not, tokenizer.model only, tokenizer.json only, Mistral/Phi-3 model types that use tokenizer.json as
written, added tokens with lstrip/rstrip/single_word/normalized, split_special_tokens, ...), and
records what transformers' AutoTokenizer gives for tricky strings plus 300 seeded random ones in
OUTDIR/NAME/expected.json:

  {"name", "transformers_version", "tokenizer_class", "vocab_size" (= len(tokenizer)),
   "bos_id", "eos_ids", "add_bos",
   "cases": [{"text", "ids" (add_special_tokens default), "ids_plain" (add_special_tokens=False),
              "decoded" (decode(ids)), "decoded_skip" (decode(ids, skip_special_tokens=True))}],
   "decode_cases": [{"ids", "decoded", "decoded_skip"}]}   # hand-picked ids (broken UTF-8 ...)

Deterministic (single-threaded trainers, fixed inputs); takes ~10 s. Needs sentencepiece,
tokenizers and transformers (checked with transformers 5.x / tokenizers 0.23).
"""

import io
import json
import os
import shutil
import sys

import sentencepiece as spm
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

transformers.logging.set_verbosity_error()

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.join(HERE, "..", "parity")
CORPUS = os.path.join(PARITY, "corpus.txt")
MULTILINGUAL = os.path.join(PARITY, "multilingual.txt")

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TRICKY = [
    "", " ", "  ", "   ", "\n", "\n\n\n", "\t", " \t \n ", "hello", " hello", "  hello", "hello ",
    "Hello world", "hello  world", "hello   \n\n  world", "a\tb\t\tc", "abc   ", "line1\r\nline2\r\n",
    "I'LL go, you'RE sure, she'S, DON'T, we'Ve, they'D, I'M", "i'll i'd it's", "'s 's", "don't'll",
    "1234567", "3.14159", "12,345,678.90", "007 -42 2024-01-15", "x1y22z333w4444",
    "Héllo wörld café naïve señor ñandú Über façade", "Cafe\u0301 nin\u0303o A\u030a", "e\u0301\u0301",
    "\u1100\u1161\u11a8 \uac00\u11a8", "한국어 문장입니다", "中文测试：你好，世界！", "日本語のテキスト。",
    "😀 🚀 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🇯🇵 ❤️", "👨‍👩‍👧‍👦👨‍👩‍👧‍👦", "🤖🧠",
    "नमस्ते दुनिया", "مرحبا بالعالم", "สวัสดีครับ", "Ελληνικά Кириллица", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "a\u00a0b\u3000c\u2009d", "a\u0085b", "a\u200bb", "x\x00y\x7f\x1b[0m", "'\u017f 'K",
    "<|eot_id|>hi", "hi<|eot_id|>", "<|eot_id|><|eot_id|>", " <|eot_id|> x ", "<|eot_id", "<|begin_of_text|>Hi",
    "<s>x", "x</s>", "a<s>b</s>c", "<s> x", "x <s>", "<s", "<unk>", "<pad>", "<bos>Hi<eos>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<start_of_turn>user\nhi<end_of_turn>",
    "<|user|>\nhi <|end|>\n<|assistant|>", "a <tool>  b", "a<tool>b", "x<|café|>y",
    "▁", "▁▁x ▁", "<0x41>", "Ġhello", "ĊĠ", "a <nt> b<nt>", "zzz", "azzz zzz", "zzz_ (zzz) zzz. ézzz zzzé",
    "    def f(x): return x ** 2  # code", "{\"key\": [1, 2, 3]}", "if (a && b) { c++; }",
    "a" * 300, "9" * 50, "😀" * 20, "ab " * 40,
    "Punctuation: (a) [b] {c} <d> \"q\" «g» — … ?!; ¿Qué? ¡Sí!",
]


FUZZ_PIECES = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\u00a0", "\u3000", "\u2009", "\u200b", "\u0085",
    "'s", "'S", "'ll", "'LL", "n't", "'Re", "'ve", "'d", "'M", "'", "\"", "0", "7", "42", "123", "2024", "3.14",
    "1,000", ".", ",", "!", "?", "...", "-", "--", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "#", "@",
    "é", "e\u0301", "ñ", "n\u0303", "Å", "A\u030a", "ö", "o\u0308\u0301", "\u0323\u0307", "\u0301", "ß", "İ", "ſ",
    "中", "文", "日本", "語", "한", "국", "\u1100\u1161", "\u11a8", "ア", "ー", "ไทย", "नम", "\u094d", "مر", "Ω", "Ж",
    "😀", "👍🏽", "👩\u200d💻", "👨\u200d👩\u200d👧", "❤️", "\ufe0f", "🇯🇵", "🤖", "𝔘", "\U0010fffd",
    "Ġ", "Ċ", "▁", "▁▁", "<0x41>", "\x00", "\x1b", "\x7f",
]


def fuzz_strings(specials, words, n, seed):
    """Deterministic random strings mixing words, whitespace runs, scripts, marks, emoji and special tokens."""
    import random
    rng = random.Random(seed)
    pool = FUZZ_PIECES + list(specials) * 3
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if r < 0.45:
                w = rng.choice(words)
                w = w.upper() if rng.random() < 0.1 else (w.capitalize() if rng.random() < 0.2 else w)
                parts.append(w)
            else:
                parts.append(rng.choice(pool))
        out.append("".join(parts))
    return out


def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def corpus_lines():
    return [l for l in read_text(CORPUS).split("\n") if l.strip()]


def train_spm(style, extra_user=(), model_type="bpe"):
    common = dict(
        model_type=model_type, vocab_size=900 if model_type == "bpe" else 700, byte_fallback=True, character_coverage=0.9995, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        max_sentence_length=16384, num_threads=1, minloglevel=2,
    )
    if style == "llama":
        common.update(add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    else:
        common.update(add_dummy_prefix=False, pad_id=0, pad_piece="<pad>", eos_id=1, eos_piece="<eos>",
                      bos_id=2, bos_piece="<bos>", unk_id=3, unk_piece="<unk>", control_symbols=["<mask>"],
                      user_defined_symbols=list(extra_user))
    buf = io.BytesIO()
    lines = corpus_lines() + read_text(MULTILINGUAL).split("\n")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, **common)
    return buf.getvalue()


def train_bpe(pattern, nfc, vocab_size, byte_level_regex=False):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if byte_level_regex:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(corpus_lines() + read_text(MULTILINGUAL).split("\n"), trainer=trainer)
    return tok


def edit_json(path, fn):
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j = fn(j) or j
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


def spm_dir(out, name, style, model_type, cls_opts, added=(), keep_json=True, keep_model=True, json_edit=None,
            cfg_edit=None, gen_eos=None, extra_user=(), sp_type="bpe"):
    """A SentencePiece checkpoint: tokenizer.model (+ tokenizer.json written by transformers)."""
    proto = train_spm(style, extra_user, sp_type)
    d = os.path.join(out, name)
    src = d + ".src"
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "tokenizer.model"), "wb") as f:
        f.write(proto)
    if style == "llama":
        from transformers import LlamaTokenizer
        tok = LlamaTokenizer.from_pretrained(src, add_bos_token=True, add_eos_token=False, **cls_opts)
    else:
        from transformers import GemmaTokenizer
        kw = GemmaTokenizer.convert_to_native_format(vocab_file=os.path.join(src, "tokenizer.model"))
        kw.pop("vocab_file", None)
        tok = GemmaTokenizer(**kw, add_bos_token=True, add_eos_token=False, **cls_opts)
    if added:
        tok.add_tokens(list(added))
    tok.save_pretrained(d)
    shutil.rmtree(src)
    if keep_model:
        with open(os.path.join(d, "tokenizer.model"), "wb") as f:
            f.write(proto)
    # What real checkpoints carry besides what save_pretrained writes.
    edit_json(os.path.join(d, "tokenizer_config.json"),
              lambda j: j.update(add_bos_token=True, add_eos_token=False, **(cfg_edit or {})))
    if not keep_json:
        os.remove(os.path.join(d, "tokenizer.json"))
    elif json_edit:
        edit_json(os.path.join(d, "tokenizer.json"), json_edit)
    bos = tok.bos_token_id
    eos = tok.eos_token_id
    write_json(os.path.join(d, "config.json"), {"model_type": model_type, "bos_token_id": bos, "eos_token_id": eos,
                                                "vocab_size": len(tok)})
    write_json(os.path.join(d, "generation_config.json"),
               {"bos_token_id": bos, "eos_token_id": gen_eos(tok) if gen_eos else eos})
    return d


def bpe_dir(out, name, tok_obj, model_type, tokenizer_class, bos, eos, gen_eos, extra_kw=None, json_edit=None,
            cfg_edit=None, config_bos=None):
    d = os.path.join(out, name)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok_obj, bos_token=bos, eos_token=eos, **(extra_kw or {}))
    hf.save_pretrained(d)
    edit_json(os.path.join(d, "tokenizer_config.json"),
              lambda j: j.update(tokenizer_class=tokenizer_class, **(cfg_edit or {})))
    if json_edit:
        edit_json(os.path.join(d, "tokenizer.json"), json_edit)
    eos_id = tok_obj.token_to_id(eos)
    if model_type:
        write_json(os.path.join(d, "config.json"),
                   {"model_type": model_type, "bos_token_id": config_bos if config_bos is not None else
                    (tok_obj.token_to_id(bos) if bos else None), "eos_token_id": eos_id})
    write_json(os.path.join(d, "generation_config.json"),
               {"eos_token_id": [tok_obj.token_to_id(t) for t in gen_eos]})
    return d


def llama2_legacy_json(j):
    # tokenizer.json as older transformers converted Llama-2/Mistral/Phi-3: normalizer prepends "▁" to every
    # chunk between added tokens and replaces spaces, no pre-tokenizer.
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "▁"}]}
    j["pre_tokenizer"] = None


def merges_as_strings(j):
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]


def record(d, name):
    tok = AutoTokenizer.from_pretrained(d)
    texts = list(TRICKY)
    multi = read_text(MULTILINGUAL)
    texts += [multi] + [l for l in multi.split("\n") if l]
    corpus = read_text(CORPUS)
    texts += [corpus[:3000]]
    words = sorted(set(corpus.split()))
    specials = sorted({t.content for t in tok.added_tokens_decoder.values()})
    texts += fuzz_strings(specials, words, 300, seed=sum(map(ord, name)))
    cases = []
    for t in texts:
        ids = tok(t)["input_ids"]
        cases.append(dict(text=t, ids=ids, ids_plain=tok(t, add_special_tokens=False)["input_ids"],
                          decoded=tok.decode(ids), decoded_skip=tok.decode(ids, skip_special_tokens=True)))
    n = len(tok)
    # Hand-picked id lists: every id once, lone byte tokens (broken UTF-8), specials in the middle.
    picks = [list(range(n)), list(range(n - 1, -1, -1))]
    byte_ids = [i for i in range(n) if tok.convert_ids_to_tokens(i) in ("<0xE4>", "<0xBD>", "<0xA0>", "<0x41>")]
    picks += [byte_ids, byte_ids[::-1]]
    bl = [tok.convert_tokens_to_ids(c) for c in ("ä", "½", "ł", "Ġ", "Ċ") if tok.convert_tokens_to_ids(c) is not None]
    picks += [bl, bl[:1], bl[1:2]]
    special = sorted(set(tok.all_special_ids))
    if special:
        picks.append([special[-1]] + cases[10]["ids"] + special)
    decode_cases = [dict(ids=p, decoded=tok.decode(p), decoded_skip=tok.decode(p, skip_special_tokens=True))
                    for p in picks]
    gen = json.load(open(os.path.join(d, "generation_config.json")))
    eos = gen["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    one = tok("x")["input_ids"]
    add_bos = tok.bos_token_id is not None and len(one) > 0 and one[0] == tok.bos_token_id
    cfg_path = os.path.join(d, "config.json")
    cfg_bos = json.load(open(cfg_path)).get("bos_token_id") if os.path.exists(cfg_path) else None
    write_json(os.path.join(d, "expected.json"), dict(
        name=name, transformers_version=transformers.__version__, tokenizer_class=type(tok).__name__,
        vocab_size=n, bos_id=tok.bos_token_id if tok.bos_token_id is not None else cfg_bos, eos_ids=eos,
        add_bos=add_bos, cases=cases, decode_cases=decode_cases))
    return tok


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tokenizer_fixtures.py OUTDIR")
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)  # idempotent: every run starts clean
    os.makedirs(out, exist_ok=True)
    made = []

    # Llama-2: LlamaTokenizer (legacy=false), tokenizer.model + tokenizer.json.
    made.append(spm_dir(out, "sp_llama2", "llama", "llama", dict(legacy=False)))
    # Llama with legacy=true and added tokens past the sentencepiece vocabulary (special and not, with flags).
    made.append(spm_dir(out, "sp_llama_legacy_added", "llama", "llama", dict(legacy=True),
                        added=[AddedToken("<|im_start|>", special=True, normalized=False),
                               AddedToken("<|im_end|>", special=True, normalized=False, rstrip=True),
                               AddedToken("<tool>", special=False, normalized=False, lstrip=True),
                               AddedToken("<|café|>", special=False, normalized=False)],
                        cfg_edit=dict(legacy=True)))
    # Only tokenizer.model (no tokenizer.json): add_bos_token comes from tokenizer_config.json, extra tokens from
    # its added_tokens_decoder (as older checkpoints saved them).
    atd = {"900": dict(content="<|im_start|>", lstrip=False, normalized=False, rstrip=False, single_word=False,
                       special=True),
           "901": dict(content="<tool>", lstrip=True, normalized=False, rstrip=False, single_word=False,
                       special=False)}
    made.append(spm_dir(out, "sp_llama_model_only", "llama", "llama", dict(legacy=False), keep_json=False,
                        cfg_edit=dict(added_tokens_decoder=atd)))
    # Llama-2 as published: tokenizer.json with the older normalizer (Prepend + Replace), which
    # LlamaTokenizer replaces by its Metaspace pre-tokenizer.
    made.append(spm_dir(out, "sp_llama2_old_json", "llama", "llama", dict(legacy=False),
                        json_edit=llama2_legacy_json, cfg_edit=dict(legacy=False)))
    # Same tokenizer.json without tokenizer.model: the BPE path with byte fallback and Metaspace.
    made.append(spm_dir(out, "sp_llama2_json_only", "llama", "llama", dict(legacy=False), keep_model=False))
    # Mistral / Phi-3: AutoTokenizer uses tokenizer.json as written (older Llama-2-style normalizer).
    made.append(spm_dir(out, "sp_mistral", "llama", "mistral", dict(legacy=True), json_edit=llama2_legacy_json,
                        added=[AddedToken("<nt>", special=False, normalized=True)]))
    made.append(spm_dir(out, "sp_phi3", "llama", "phi3", dict(legacy=False), json_edit=llama2_legacy_json,
                        added=[AddedToken("<|endoftext|>", special=True, normalized=False),
                               AddedToken("<|assistant|>", special=True, normalized=False, rstrip=True),
                               AddedToken("<|end|>", special=True, normalized=False, rstrip=True),
                               AddedToken("<|user|>", special=True, normalized=False, rstrip=True)],
                        gen_eos=lambda t: [t.convert_tokens_to_ids("<|endoftext|>"), t.convert_tokens_to_ids("<|end|>")]))
    # A unigram sentencepiece model: transformers runs BPE over its vocabulary instead.
    made.append(spm_dir(out, "sp_llama_unigram", "llama", "llama", dict(legacy=False), sp_type="unigram"))
    made.append(spm_dir(out, "sp_llama_unigram_model_only", "llama", "llama", dict(legacy=False), sp_type="unigram",
                        keep_json=False))
    # Gemma: no dummy prefix, user-defined pieces.
    made.append(spm_dir(out, "sp_gemma", "gemma", "gemma", {}, extra_user=("<start_of_turn>", "<end_of_turn>")))

    # Llama-3: byte-level BPE, Split regex + ByteLevel, ignore_merges, BOS by TemplateProcessing.
    t = train_bpe(LLAMA3_PATTERN, nfc=False, vocab_size=900)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos_id = t.token_to_id("<|begin_of_text|>")
    t.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|>:0 $A:0",
                                      pair="<|begin_of_text|>:0 $A:0 <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos_id)])])
    made.append(bpe_dir(out, "bpe_llama3", t, "llama", "PreTrainedTokenizerFast", "<|begin_of_text|>",
                        "<|end_of_text|>", ["<|end_of_text|>", "<|eot_id|>"],
                        json_edit=lambda j: j["model"].update(ignore_merges=True)))

    # Qwen2: NFC, single digits, no BOS, specials and plain added tokens.
    t = train_bpe(QWEN2_PATTERN, nfc=True, vocab_size=900)
    t.add_special_tokens([AddedToken(s, special=True, normalized=False)
                          for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    t.add_tokens([AddedToken("<tool>", special=False, normalized=False),
                  AddedToken("<|café|>", special=False, normalized=True)])
    t.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    made.append(bpe_dir(out, "bpe_qwen2", t, "qwen2", "Qwen2Tokenizer", None, "<|endoftext|>",
                        ["<|im_end|>", "<|endoftext|>"],
                        extra_kw=dict(pad_token="<|endoftext|>", unk_token=None,
                                      additional_special_tokens=["<|im_start|>", "<|im_end|>"]),
                        config_bos=t.token_to_id("<|endoftext|>")))

    # split_special_tokens: special tokens written in the text are encoded as text.
    d = os.path.join(out, "bpe_qwen2_split_special")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(made[-1], d)
    edit_json(os.path.join(d, "tokenizer_config.json"), lambda j: j.update(split_special_tokens=True))
    made.append(d)

    # GPT-2 style: ByteLevel(use_regex=true) only, merges as "a b" strings, RoBERTa-style post-processor.
    t = train_bpe(None, nfc=False, vocab_size=700, byte_level_regex=True)
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ["<s>", "</s>"]])
    t.add_tokens([AddedToken("zzz", single_word=True, normalized=False)])
    t.post_processor = processors.RobertaProcessing(("</s>", t.token_to_id("</s>")), ("<s>", t.token_to_id("<s>")),
                                                    trim_offsets=False)
    made.append(bpe_dir(out, "bpe_gpt2", t, None, "PreTrainedTokenizerFast", "<s>", "</s>", ["</s>"],
                        json_edit=merges_as_strings))

    for d in made:
        tok = record(d, os.path.basename(d))
        print(f"{os.path.basename(d)}: {type(tok).__name__}, {len(tok)} ids")


if __name__ == "__main__":
    main()
