#!/usr/bin/env python3
"""Build tiny random-weight Hugging Face checkpoints plus transformers reference outputs.

Usage:  python tests/parity/make_fixtures.py OUTDIR [CASE ...]

For every case NAME this writes OUTDIR/NAME/ (a loadable HF checkpoint: config.json,
generation_config.json, model*.safetensors, tokenizer files) and OUTDIR/NAME/parity/
(reference.json + reference.safetensors + grads.safetensors, computed by transformers in float32
with eager attention; grads.safetensors is the autograd gradient of every parameter for the fixed
training batch in reference.json "train").  See tests/parity/README.md for the layout.

Everything is seeded; re-running overwrites OUTDIR/NAME atomically (build in a temp dir,
then rename).  Needs: torch, transformers (checked with 5.x), tokenizers, sentencepiece,
safetensors, numpy.  No network access is used.
"""

import io
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus.txt")
MULTILINGUAL = os.path.join(HERE, "multilingual.txt")

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

# (template, text-or-instruction)
PROMPTS = [
    ("none", "Hello"),
    ("none", "The capital of France is"),
    ("none", "Zoë's café in 東京 serves crème brûlée 🍮 and pizza 🍕! 👩‍💻"),
    ("alpaca", "Give three tips for staying healthy."),
    ("alpaca", "Translate the sentence into French: I can't believe it's already December!"),
]

MAX_NEW_TOKENS = 32

# Training reference: two sequences of different lengths, each the first N ids of tokenizer(text)
# (BOS included where the tokenizer adds one); labels = input_ids with the first TRAIN_MASKED
# positions set to -100 (a masked "prompt").
TRAIN_TEXTS = [
    ("The quick brown fox jumps over the lazy dog by the river.", 9),
    ("Question: what is two plus three? Answer: five, of course.", 14),
]
TRAIN_MASKED = 3
FROZEN_BLOCK = 1  # the frozen-variant check freezes self_attn.* and mlp.* of this block

# Edge strings whose tokenization is recorded too (cheap extra coverage for the C++ tokenizers).
EDGE_STRINGS = [
    "",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "a\n\nb\tc",
    "don't I'LL WE'RE",
    "1234567 3.14",
]

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PHI3_SPECIALS = ["<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"]


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


# ----------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------


def train_spm(style):
    """Train a byte-fallback SentencePiece BPE model in memory; returns the serialized proto."""
    common = dict(
        model_type="bpe",
        vocab_size=800,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        max_sentence_length=16384,
        num_threads=1,
        minloglevel=2,
    )
    if style == "llama":
        # Llama/Mistral/Phi-3 layout: <unk>=0 <s>=1 </s>=2, dummy prefix on.
        common.update(add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    elif style == "gemma":
        # Gemma layout: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4, no dummy prefix.
        common.update(
            add_dummy_prefix=False,
            pad_id=0, pad_piece="<pad>",
            eos_id=1, eos_piece="<eos>",
            bos_id=2, bos_piece="<bos>",
            unk_id=3, unk_piece="<unk>",
            control_symbols=["<mask>"],
        )
    else:
        raise ValueError(style)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(read_lines(CORPUS)), model_writer=buf, **common)
    return buf.getvalue()


def make_spm_tokenizer(style, workdir, extra_specials=(), eos_token=None):
    """Returns (hf_tokenizer, spm_model_bytes)."""
    proto = train_spm(style)
    srcdir = os.path.join(workdir, "spm_src_" + style)
    os.makedirs(srcdir, exist_ok=True)
    with open(os.path.join(srcdir, "tokenizer.model"), "wb") as f:
        f.write(proto)
    if style == "llama":
        from transformers import LlamaTokenizer

        kw = dict(add_bos_token=True, add_eos_token=False, legacy=False)
        if eos_token:
            kw["eos_token"] = eos_token
        tok = LlamaTokenizer.from_pretrained(srcdir, **kw)
    else:
        from transformers import GemmaTokenizer

        # GemmaTokenizer's vocab_files_names only lists tokenizer.json, so convert explicitly.
        kw = GemmaTokenizer.convert_to_native_format(vocab_file=os.path.join(srcdir, "tokenizer.model"))
        kw.pop("vocab_file", None)
        tok = GemmaTokenizer(**kw, add_bos_token=True, add_eos_token=False)
    if extra_specials:
        tok.add_special_tokens({"additional_special_tokens": list(extra_specials)})
        if eos_token:
            tok.eos_token = eos_token
    return tok, proto


def train_bpe(pattern, nfc, vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(read_lines(CORPUS), trainer=trainer)
    return tok


def make_llama3_tokenizer():
    tok = train_bpe(LLAMA3_PATTERN, nfc=False, vocab_size=600)
    # Llama-3's tokenizer.json has "ignore_merges": true (a pre-token that is itself in the vocab is
    # emitted as one token without running merges); the trainer does not set it, so patch it in.
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(j))
    # Specials go after the learned vocab, as in Llama-3 (128000+).
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS])
    bos = "<|begin_of_text|>"
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|end_of_text|>")


def make_qwen2_tokenizer():
    tok = train_bpe(QWEN2_PATTERN, nfc=True, vocab_size=600)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in QWEN2_SPECIALS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    return hf


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------

BASE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=256,
    initializer_range=0.15,
    use_cache=True,
)

CASES = ["llama2", "llama3", "mistral", "qwen2", "qwen2-sliding", "qwen3", "qwen3-yarn", "gemma", "gemma2", "gemma3", "phi3", "phi3-longrope",
         "llama2-bf16",
         "llama3-sharded"]


def random_init(model, seed, family, embed_std=0.5, final_norm_scale=1.0):
    """Re-draw every parameter from a seeded generator: matrices N(0, 0.15), embed_tokens N(0, embed_std),
    lm_head (when untied) N(0, 1.5), biases N(0, 0.1), norm weights 1 + N(0, 0.2) (Gemma: N(0, 0.2) since
    it multiplies by 1 + w); the final norm's effective multiplier is final_norm_scale * (1 + N(0, 0.2)).

    Tied models use a small embedding and a large final norm: with tied embeddings a large embedding
    makes the model repeat the last token forever (its own row dominates the logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = p.shape
            if p.ndim == 1 and name.endswith("model.norm.weight"):
                w = final_norm_scale * (1.0 + torch.randn(shape, generator=g) * 0.2)
                if family == "gemma":
                    w = w - 1.0
            elif p.ndim == 1 and "norm" in name:
                w = torch.randn(shape, generator=g) * 0.2
                if family != "gemma":
                    w = w + 1.0
            elif p.ndim == 1:  # biases
                w = torch.randn(shape, generator=g) * 0.1
            elif "lm_head" in name:
                w = torch.randn(shape, generator=g) * 1.5
            elif "embed_tokens" in name:
                w = torch.randn(shape, generator=g) * embed_std
            else:
                w = torch.randn(shape, generator=g) * 0.15
            p.copy_(w.to(p.dtype))


def case_spec(name):
    """Returns dict(family, model_type, config kwargs, tokenizer kind, save options)."""
    if name in ("llama2", "llama2-bf16"):
        return dict(
            family="llama", tok="spm-llama",
            config=dict(model_type="llama", num_key_value_heads=4, tie_word_embeddings=False, rms_norm_eps=1e-5,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            save_dtype=torch.bfloat16 if name == "llama2-bf16" else torch.float32,
            shard=None, seed=1001, legacy_config=name == "llama2-bf16",
        )
    if name in ("llama3", "llama3-sharded"):
        return dict(
            family="llama", tok="bpe-llama3",
            config=dict(model_type="llama", num_key_value_heads=2, tie_word_embeddings=False, rms_norm_eps=1e-5,
                        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 64}),
            save_dtype=torch.float32, shard="200KB" if name == "llama3-sharded" else None, seed=1002,
            legacy_config=name == "llama3-sharded", tokenizer_class="PreTrainedTokenizerFast",
        )
    if name == "mistral":
        return dict(
            family="mistral", tok="spm-llama",
            config=dict(model_type="mistral", num_key_value_heads=2, tie_word_embeddings=False, rms_norm_eps=1e-5,
                        sliding_window=16, head_dim=16,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            save_dtype=torch.float32, shard=None, seed=1003,
        )
    if name == "qwen2":
        return dict(
            family="qwen2", tok="bpe-qwen2",
            config=dict(model_type="qwen2", num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
                        use_sliding_window=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            save_dtype=torch.float32, shard=None, seed=1004, tokenizer_class="Qwen2Tokenizer", init=dict(embed_std=0.15, final_norm_scale=10.0),
        )
    if name == "qwen2-sliding":
        # use_sliding_window: a 6-token window on the layers from max_window_layers (2 of 4) on.
        return dict(
            family="qwen2", tok="bpe-qwen2",
            config=dict(model_type="qwen2", num_key_value_heads=2, tie_word_embeddings=False, rms_norm_eps=1e-6,
                        use_sliding_window=True, sliding_window=6, max_window_layers=2,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            save_dtype=torch.float32, shard=None, seed=1011, tokenizer_class="Qwen2Tokenizer",
        )
    if name == "qwen3":
        # Qwen3: an RMSNorm over each query and key head before RoPE, head_dim 24 (not hidden / heads).
        return dict(
            family="qwen3", tok="bpe-qwen2",
            config=dict(model_type="qwen3", num_key_value_heads=2, head_dim=24, tie_word_embeddings=False,
                        rms_norm_eps=1e-6, use_sliding_window=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            save_dtype=torch.float32, shard=None, seed=1009, tokenizer_class="Qwen2Tokenizer",
        )
    if name == "qwen3-yarn":
        # YaRN as Qwen3 documents it for long context (rope_scaling yarn, factor 4), with a pretraining
        # length of 32: of the 8 rotary frequencies, 0 and 1 sit on the ramp and the rest are interpolated;
        # attention_factor 0.1 ln 4 + 1 from the default.
        return dict(
            family="qwen3", tok="bpe-qwen2",
            config=dict(model_type="qwen3", num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
                        rms_norm_eps=1e-6, use_sliding_window=False,
                        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                         "original_max_position_embeddings": 32}),
            save_dtype=torch.float32, shard=None, seed=1010, tokenizer_class="Qwen2Tokenizer",
        )
    if name == "gemma":
        return dict(
            family="gemma", tok="spm-gemma",  # final norm is (1 + w); embeddings are scaled by sqrt(64)
            config=dict(model_type="gemma", num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
                        hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            save_dtype=torch.float32, shard=None, seed=1005, init=dict(embed_std=0.02, final_norm_scale=75.0),
        )
    if name == "gemma2":
        # Gemma-2: sandwich norms, a scale from query_pre_attn_scalar (not head_dim), attention
        # scores capped at 4 and final logits at 20 (both bend: scores and logits reach several
        # units), a window of 6 on the even layers only (the prompts are longer).
        return dict(
            family="gemma", tok="spm-gemma",
            config=dict(model_type="gemma2", num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, query_pre_attn_scalar=24,
                        attn_logit_softcapping=4.0, final_logit_softcapping=20.0, sliding_window=6,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            save_dtype=torch.float32, shard=None, seed=1008, init=dict(embed_std=0.02, final_norm_scale=35.0),
        )
    if name == "gemma3":
        # Gemma-3 (gemma3_text, as Gemma-3 1B ships): Gemma-2's sandwich norms and scale, a (1 + w)
        # RMSNorm on each query and key head, no soft-capping, a window of 6 on the blocks
        # sliding_window_pattern 2 leaves sliding (0 and 2), which take their own RoPE (theta 1e4)
        # while blocks 1 and 3 take theta 1e3 with linear scaling by 2. Saved in the Hub's layout
        # (rope_theta, rope_local_base_freq, rope_scaling, sliding_window_pattern), as Gemma-3 1B's is.
        return dict(
            family="gemma", tok="spm-gemma",
            config=dict(model_type="gemma3_text", num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, query_pre_attn_scalar=24,
                        sliding_window=6, sliding_window_pattern=2,
                        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                         "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}}),
            save_dtype=torch.float32, shard=None, seed=1011, legacy_config=True,
            init=dict(embed_std=0.02, final_norm_scale=35.0),
        )
    if name == "phi3":
        return dict(
            family="phi3", tok="spm-phi3",
            config=dict(model_type="phi3", num_key_value_heads=2, num_hidden_layers=5, tie_word_embeddings=False,
                        rms_norm_eps=1e-5, original_max_position_embeddings=256, sliding_window=None,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "partial_rotary_factor": 1.0}),
            save_dtype=torch.float32, shard=None, seed=1006,
        )
    if name == "phi3-longrope":
        # Phi-3-128k / Phi-3.5 / Phi-4-mini style LongRoPE with a pretraining length of 12: the short
        # prompts are prefilled with the short factors and cross into the long ones while generating
        # (where transformers' Phi-3 drops its cache and recomputes the sequence); the Alpaca prompts
        # use the long factors throughout; of the two training sequences (9 and 14 tokens) one takes
        # each table. attention_factor from the default formula (max 256 / original 12). As
        # Phi-4-mini: RoPE on 0.75 of each head (12 of 16 dimensions), embeddings tied.
        half = int(BASE["hidden_size"] // BASE["num_attention_heads"] * 0.75) // 2
        return dict(
            family="phi3", tok="spm-phi3",
            config=dict(model_type="phi3", num_key_value_heads=2, num_hidden_layers=3, tie_word_embeddings=True,
                        rms_norm_eps=1e-5, original_max_position_embeddings=12, sliding_window=None,
                        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                         "original_max_position_embeddings": 12,
                                         "short_factor": [1.0 + 0.25 * i for i in range(half)],
                                         "long_factor": [1.5 + 2.0 * i for i in range(half)]}),
            save_dtype=torch.float32, shard=None, seed=1007, legacy_config=True,
        )
    raise ValueError(name)


def build_tokenizer(kind, workdir):
    """Returns (tokenizer, spm_bytes_or_None, special ids dict)."""
    if kind == "spm-llama":
        tok, proto = make_spm_tokenizer("llama", workdir)
        ids = dict(bos=tok.bos_token_id, eos=tok.eos_token_id, pad=None, gen_eos=[tok.eos_token_id])
    elif kind == "spm-phi3":
        tok, proto = make_spm_tokenizer("llama", workdir, extra_specials=PHI3_SPECIALS, eos_token="<|endoftext|>")
        tok.pad_token = "<|endoftext|>"
        eot = tok.convert_tokens_to_ids("<|end|>")
        ids = dict(bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id, gen_eos=[tok.eos_token_id, eot])
    elif kind == "spm-gemma":
        tok, proto = make_spm_tokenizer("gemma", workdir)
        ids = dict(bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id, gen_eos=[tok.eos_token_id])
    elif kind == "bpe-llama3":
        tok, proto = make_llama3_tokenizer(), None
        eot = tok.convert_tokens_to_ids("<|eot_id|>")
        ids = dict(bos=tok.bos_token_id, eos=[tok.eos_token_id, eot], pad=None, gen_eos=[tok.eos_token_id, eot])
    elif kind == "bpe-qwen2":
        tok, proto = make_qwen2_tokenizer(), None
        eot = tok.convert_tokens_to_ids("<|endoftext|>")
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        # As Qwen2: config bos = eos = <|endoftext|> although the tokenizer never adds a BOS.
        ids = dict(bos=eot, eos=eot, pad=eot, gen_eos=[im_end, eot])
    else:
        raise ValueError(kind)
    return tok, proto, ids


def edit_json(path, fn):
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    fn(j)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def legacy_config(j):
    """Rewrite a transformers-5 config.json into the layout most Hub checkpoints still have:
    rope_theta + rope_scaling (null or dict with rope_type) instead of rope_parameters, torch_dtype
    instead of dtype, no head_dim when it is hidden_size / num_attention_heads.  transformers 5 reads it back to the same rope_parameters (asserted)."""
    rp = dict(j.pop("rope_parameters"))
    if "full_attention" in rp:  # gemma3: one RoPE per layer type, the Hub's layout as Gemma-3 1B's
        rp, local = dict(rp["full_attention"]), dict(rp["sliding_attention"])
        assert local.get("rope_type", "default") == "default", local
        j["rope_local_base_freq"] = local["rope_theta"]
        types = j.pop("layer_types")
        pattern = next(p for p in range(1, len(types) + 2)
                       if types == ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(len(types))])
        j["sliding_window_pattern"] = pattern
    j["rope_theta"] = rp.pop("rope_theta")
    partial = rp.pop("partial_rotary_factor", 1.0)
    if partial != 1.0:  # top level, as Phi-4-mini's config.json
        j["partial_rotary_factor"] = partial
    j["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
    if "dtype" in j:
        j["torch_dtype"] = j.pop("dtype")
    if j.get("head_dim") == j["hidden_size"] // j["num_attention_heads"]:
        del j["head_dim"]  # as in Llama-2/3 Hub configs: implied by hidden_size / num_attention_heads


def fix_permissions(root):
    """mkdtemp makes 0700 dirs; give the tree ordinary permissions (respecting the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for d, _dirs, files in os.walk(root):
        os.chmod(d, 0o777 & ~umask)
        for f in files:
            os.chmod(os.path.join(d, f), 0o666 & ~umask)


def inspect_safetensors_dtypes(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})


def spm_encode(proto, text, add_bos, bos_id):
    sp = spm.SentencePieceProcessor(model_proto=proto)
    ids = sp.encode(text)
    return ([bos_id] if add_bos else []) + ids


def checkpoint_tensor_names(ckpt_dir):
    names = set()
    for f in os.listdir(ckpt_dir):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(ckpt_dir, f), framework="pt") as st:
                names.update(st.keys())
    return names


def train_reference(model, tok, ckpt_dir):
    """Whole-model backward reference. Returns (train dict for reference.json, grads dict).

    loss = sum over both sequences (each run alone, batch 1, no padding) of the summed CE over the
    non-ignored shifted targets, divided by the total number of those targets: transformers'
    ForCausalLMLoss with num_items_in_batch = that total, summed over the two forwards.  Float32,
    eager attention, eval() (no dropout) with gradients enabled."""
    seqs, labels = [], []
    for text, n in TRAIN_TEXTS:
        ids = tok(text)["input_ids"]
        assert len(ids) >= n, (text, len(ids), n)
        ids = ids[:n]
        seqs.append(ids)
        labels.append([-100] * TRAIN_MASKED + ids[TRAIN_MASKED:])
    n_tokens = sum(sum(1 for t in lab[1:] if t != -100) for lab in labels)

    params = dict(model.named_parameters())  # deduplicated: a tied lm_head is not listed
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == ("lm_head.weight" not in params), (tied, sorted(params)[-3:])
    expected = checkpoint_tensor_names(ckpt_dir)
    assert set(params) == expected, (sorted(set(params) ^ expected))

    def run():
        model.zero_grad(set_to_none=True)
        total, per_seq = None, []
        for ids, lab in zip(seqs, labels):
            x = torch.tensor([ids])
            y = torch.tensor([lab])
            out = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y,
                        num_items_in_batch=n_tokens, use_cache=False)
            # cross-check against a hand-written shifted CE sum
            manual = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), y[0, 1:], ignore_index=-100,
                                                       reduction="sum")
            assert torch.allclose(out.loss * n_tokens, manual, rtol=1e-5, atol=1e-5), (out.loss * n_tokens, manual)
            per_seq.append(dict(loss_sum=float(manual.detach()), loss_tokens=sum(1 for t in lab[1:] if t != -100)))
            total = out.loss if total is None else total + out.loss
        total.backward()
        return total.detach(), per_seq

    model.eval()
    with torch.enable_grad():
        loss, per_seq = run()
        grads = {}
        for n, p in params.items():
            assert p.grad is not None, n
            grads[n] = p.grad.detach().float().clone().contiguous()
        grad_norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())))

        # Frozen variant: requires_grad=False on block FROZEN_BLOCK's attention and MLP parameters only.
        block = model.model.layers[FROZEN_BLOCK]
        frozen = {f"model.layers.{FROZEN_BLOCK}.{part}.{n}" for part in ("self_attn", "mlp")
                  for n, _ in getattr(block, part).named_parameters()}
        assert frozen and frozen <= set(params), frozen
        for n in frozen:
            params[n].requires_grad_(False)
        try:
            loss2, _ = run()
            assert torch.equal(loss2, loss), (loss2, loss)
            for n, p in params.items():
                if n in frozen:
                    assert p.grad is None, n
                else:
                    assert p.grad is not None and torch.equal(p.grad, grads[n]), \
                        (n, None if p.grad is None else float((p.grad - grads[n]).abs().max()))
        finally:
            for n in frozen:
                params[n].requires_grad_(True)
            model.zero_grad(set_to_none=True)

    train = {
        "input_ids": seqs,
        "labels": labels,
        "loss": float(loss),
        "loss_tokens": n_tokens,
        "per_sequence": per_seq,
        "grad_norm": grad_norm,
        "grad_count": len(grads),
        "tied_embeddings": tied,
        "frozen_block": FROZEN_BLOCK,
        "frozen_params": sorted(frozen),
        "frozen_block_check": True,
    }
    return train, grads


def make_case(name, outdir):
    t0 = time.time()
    spec = case_spec(name)
    os.makedirs(outdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=outdir)
    scratch = tempfile.mkdtemp(prefix=f".{name}.scratch-", dir=outdir)
    try:
        tok, proto, sid = build_tokenizer(spec["tok"], scratch)
        vocab_size = len(tok)

        cfg_kw = dict(BASE)
        cfg_kw.update(spec["config"])
        model_type = cfg_kw.pop("model_type")
        cfg_kw.update(vocab_size=vocab_size, bos_token_id=sid["bos"], eos_token_id=sid["eos"], pad_token_id=sid["pad"])
        config = AutoConfig.for_model(model_type, **cfg_kw)

        torch.manual_seed(spec["seed"])
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
        random_init(model, spec["seed"], spec["family"], **spec.get("init", {}))
        model.eval()
        gen = GenerationConfig(bos_token_id=sid["bos"], eos_token_id=sid["gen_eos"], pad_token_id=sid["pad"])
        model.generation_config = gen
        if spec["save_dtype"] != torch.float32:
            model = model.to(spec["save_dtype"])
        save_kw = dict(safe_serialization=True)
        if spec["shard"]:
            save_kw["max_shard_size"] = spec["shard"]
        model.save_pretrained(tmp, **save_kw)
        gen.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if proto is not None:
            with open(os.path.join(tmp, "tokenizer.model"), "wb") as f:
                f.write(proto)
        if spec.get("tokenizer_class"):
            # transformers 5 writes "TokenizersBackend", which 4.x cannot load; use the class the real
            # checkpoints name (it loads to the same tokenizer, checked below via the reference ids).
            edit_json(os.path.join(tmp, "tokenizer_config.json"), lambda j: j.update(tokenizer_class=spec["tokenizer_class"]))
        orig_rope = json.loads(json.dumps(model.config.rope_parameters))
        if spec.get("legacy_config"):
            edit_json(os.path.join(tmp, "config.json"), legacy_config)
        del model

        # ---- reload exactly as a user would, compute references in fp32 / eager ----
        tok = AutoTokenizer.from_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        assert model.config.vocab_size == len(tok), (model.config.vocab_size, len(tok))
        assert dict(model.config.rope_parameters) == orig_rope, (model.config.rope_parameters, orig_rope)
        gen_eos = model.generation_config.eos_token_id
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        layers = model.model.layers
        n_layers = len(layers)
        hidden = model.config.hidden_size

        captured = {}

        def hook(_mod, _inp, out):
            captured["raw"] = (out[0] if isinstance(out, (tuple, list)) else out).detach().clone()

        h = layers[-1].register_forward_hook(hook)

        tensors = {}
        prompts = []
        raw_max = 0.0  # largest |logit| before the final soft-capping (gemma2)
        last_is_normed = None
        for i, (template, text) in enumerate(PROMPTS):
            full = ALPACA.format(instruction=text) if template == "alpaca" else text
            ids = tok(full)["input_ids"]
            x = torch.tensor([ids])
            with torch.no_grad():
                out = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True, use_cache=False)
            logits = out.logits[0].float()
            hs = out.hidden_states
            assert len(hs) == n_layers + 1, (len(hs), n_layers)
            raw_last = captured["raw"][0]
            normed_last = model.model.norm(raw_last)
            stack = [t[0, -1] for t in hs[:-1]] + [raw_last[-1]]
            hid = torch.stack(stack).float()
            tuple_last = hs[-1][0, -1]
            is_raw = torch.allclose(tuple_last, raw_last[-1], atol=1e-6, rtol=0)
            is_normed = torch.allclose(tuple_last, normed_last[-1], atol=1e-5, rtol=1e-5)
            assert is_raw or is_normed
            last_is_normed = bool(is_normed and not is_raw)
            # sanity: the logits at the last position are lm_head(final_normed)
            lm = model.get_output_embeddings().weight
            recomputed = normed_last[-1] @ lm.T
            cap = getattr(model.config, "final_logit_softcapping", None)
            if cap:
                raw_max = max(raw_max, float(recomputed.abs().max()))
                recomputed = torch.tanh(recomputed / cap) * cap
            assert torch.allclose(recomputed, logits[-1], atol=1e-4, rtol=1e-4)

            tensors[f"logits.{i}"] = logits.contiguous()
            tensors[f"hidden.{i}"] = hid.contiguous()
            tensors[f"final_normed.{i}"] = normed_last[-1].float().contiguous()

            with torch.no_grad():
                g = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    do_sample=False,
                    max_new_tokens=MAX_NEW_TOKENS,
                    return_dict_in_generate=True,
                    output_logits=True,
                )
            new_ids = g.sequences[0, x.shape[1]:].tolist()
            margins = []
            for step, lg in enumerate(g.logits):
                top2 = torch.topk(lg[0].float(), 2)
                margins.append(float(top2.values[0] - top2.values[1]))
                assert int(top2.indices[0]) == new_ids[step], "generate picked a non-argmax token"
            assert len(margins) == len(new_ids)
            # first greedy token must agree with the full forward's last-position argmax
            assert int(torch.argmax(logits[-1])) == new_ids[0]
            prompts.append(
                dict(
                    text=full,
                    template=template,
                    instruction=text if template == "alpaca" else None,
                    input_ids=ids,
                    greedy_ids=new_ids,
                    greedy_margins=[round(m, 6) for m in margins],
                    stopped_at_eos=bool(new_ids and new_ids[-1] in gen_eos),
                )
            )
        h.remove()

        train, grads = train_reference(model, tok, tmp)

        multi = read_text(MULTILINGUAL)
        m_ids = tok(multi)["input_ids"]
        bos_id = tok.bos_token_id
        add_bos = bool(bos_id is not None and len(m_ids) > 0 and m_ids[0] == bos_id)

        ref = {
            "case": name,
            "model_type": model.config.model_type,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "tokenizers_version": __import__("tokenizers").__version__,
            "tokenizer_class": type(tok).__name__,
            "num_hidden_layers": n_layers,
            "hidden_size": hidden,
            "vocab_size": model.config.vocab_size,
            "max_new_tokens": MAX_NEW_TOKENS,
            "prompts": prompts,
            "multilingual_ids": m_ids,
            "multilingual_decoded": tok.decode(m_ids, skip_special_tokens=True),
            "multilingual_roundtrip_exact": tok.decode(m_ids, skip_special_tokens=True) == multi,
            "edge_tokenization": [{"text": s, "input_ids": tok(s)["input_ids"]} for s in EDGE_STRINGS],
            "eos_token_ids": gen_eos,
            "bos_token_id": model.config.bos_token_id,
            "tokenizer_bos_token_id": bos_id,
            "pad_token_id": model.config.pad_token_id,
            "add_bos": add_bos,
            "hf_hidden_states_last_is_normed": last_is_normed,
            "checkpoint_dtypes": [],
            "config_format": "legacy (rope_theta/rope_scaling/torch_dtype)" if spec.get("legacy_config")
            else "transformers-5 (rope_parameters/dtype)",
            "rope_parameters": orig_rope,
            "train": train,
        }

        if proto is not None:
            sp_multi = spm_encode(proto, multi, add_bos, bos_id)
            sp_prompts = [spm_encode(proto, p["text"], add_bos, bos_id) for p in prompts]
            ref["sentencepiece_reference"] = {
                "note": "ids from the sentencepiece library itself (BOS prepended when add_bos); "
                "compare with the transformers ids above",
                "multilingual_ids": sp_multi,
                "multilingual_matches_transformers": sp_multi == m_ids,
                "prompt_ids": sp_prompts,
                "prompts_match_transformers": [a == p["input_ids"] for a, p in zip(sp_prompts, prompts)],
                "edge_ids": [spm_encode(proto, s, add_bos, bos_id) for s in EDGE_STRINGS],
            }

        if getattr(model.config, "final_logit_softcapping", None):
            ref["final_logit_softcapping"] = model.config.final_logit_softcapping
            ref["max_abs_logit_before_cap"] = raw_max
            assert raw_max > 0.5 * model.config.final_logit_softcapping, "the final cap does not bend the logits"

        if name in ("gemma2", "gemma3", "qwen2-sliding"):
            # Each feature must change the logits, or the fixture checks none of them: the attention cap
            # and the window (gemma2); the window and the sliding blocks' own RoPE (gemma3); the window (qwen2).
            longest = max(range(len(prompts)), key=lambda k: len(prompts[k]["input_ids"]))
            x = torch.tensor([prompts[longest]["input_ids"]])
            effects = {}
            assert list(model.config.layer_types) == list(config.layer_types), model.config.layer_types
            changes = ((("attn_logit_softcapping", None), ("sliding_window", 100000)) if name == "gemma2" else
                       (("sliding_window", 100000),) if name == "qwen2-sliding" else
                       (("sliding_window", 100000), ("local_rope_theta", 1000.0)))
            for key, value in changes:
                changed = AutoConfig.from_pretrained(tmp)
                if key == "local_rope_theta":
                    changed.rope_parameters["sliding_attention"]["rope_theta"] = value
                else:
                    setattr(changed, key, value)
                other = AutoModelForCausalLM.from_pretrained(tmp, config=changed, dtype=torch.float32,
                                                             attn_implementation="eager")
                other.eval()
                with torch.no_grad():
                    lo = other(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0]
                effects[key] = float((lo - tensors[f"logits.{longest}"]).abs().max())
                assert effects[key] > 1e-2, (key, effects[key])
                del other
            ref[f"{name}_max_abs_logit_diff_without"] = effects

        if name == "mistral":
            # Does sliding_window actually change anything? Re-run with an effectively infinite window.
            big = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager",
                                                       sliding_window=100000)
            big.eval()
            longest = max(range(len(prompts)), key=lambda k: len(prompts[k]["input_ids"]))
            x = torch.tensor([prompts[longest]["input_ids"]])
            with torch.no_grad():
                lb = big(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0]
            diff = float((lb - tensors[f"logits.{longest}"]).abs().max())
            w = model.config.sliding_window
            first_diff_pos = None
            per_pos = (lb - tensors[f"logits.{longest}"]).abs().amax(-1)
            nz = torch.nonzero(per_pos > 1e-5)
            if len(nz):
                first_diff_pos = int(nz[0])
            ref["sliding_window"] = w
            ref["sliding_window_effective"] = diff > 1e-4
            ref["sliding_window_check"] = {
                "prompt_index": longest,
                "prompt_len": x.shape[1],
                "max_abs_logit_diff_vs_window_100000": diff,
                "first_position_that_differs": first_diff_pos,
                "semantics": "query i attends keys j with i - window < j <= i (window keys incl. itself)",
            }
            del big

        files = sorted(os.listdir(tmp))
        st_files = [f for f in files if f.endswith(".safetensors")]
        ref["checkpoint_files"] = files
        ref["checkpoint_dtypes"] = sorted({d for f in st_files for d in inspect_safetensors_dtypes(os.path.join(tmp, f))})

        pdir = os.path.join(tmp, "parity")
        os.makedirs(pdir)
        save_file(tensors, os.path.join(pdir, "reference.safetensors"), metadata={"case": name})
        save_file(grads, os.path.join(pdir, "grads.safetensors"), metadata={"case": name})
        with open(os.path.join(pdir, "reference.json"), "w", encoding="utf-8") as f:
            json.dump(ref, f, ensure_ascii=False, indent=1)
            f.write("\n")

        fix_permissions(tmp)
        final = os.path.join(outdir, name)
        if os.path.lexists(final):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=outdir)
            os.rename(final, os.path.join(old, "x"))
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        tmp = None
        n_tok = [len(p["input_ids"]) for p in prompts]
        n_gen = [len(p["greedy_ids"]) for p in prompts]
        min_margin = min(m for p in prompts for m in p["greedy_margins"])
        extra = ""
        if name == "mistral":
            extra = f" sliding_window_effective={ref['sliding_window_effective']}"
        print(
            f"{name}: {model.config.model_type} vocab={model.config.vocab_size} layers={n_layers} "
            f"shards={len(st_files)} dtypes={ref['checkpoint_dtypes']} prompt_tokens={n_tok} new_tokens={n_gen} "
            f"min_margin={min_margin:.3f} add_bos={add_bos}{extra} train_loss={train['loss']:.4f} "
            f"grads={len(grads)} ({time.time() - t0:.1f}s)",
            flush=True,
        )
    finally:
        if tmp is not None and os.path.isdir(tmp):
            shutil.rmtree(tmp)
        shutil.rmtree(scratch, ignore_errors=True)


# transformers 5 writes a vision-language model in the Hub's tensor names (language_model.model.*,
# vision_tower.*; Qwen2-VL: model.*, visual.*); its modules are named model.language_model.* etc.,
# which it reads as well.
MODULE_NAMES = (("language_model.model.", "model.language_model."), ("vision_tower.", "model.vision_tower."),
                ("multi_modal_projector.", "model.multi_modal_projector."), ("language_model.lm_head.", "lm_head."))
QWEN_VL_MODULE_NAMES = (("model.", "model.language_model."), ("visual.", "model.visual."), ("lm_head.", "lm_head."))


def gemma3_config(text_config):
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    return transformers.Gemma3Config(text_config=text_config.to_dict(), vision_config=vision.to_dict(),
                                     mm_tokens_per_image=4, eos_token_id=text_config.eos_token_id,
                                     bos_token_id=text_config.bos_token_id, pad_token_id=text_config.pad_token_id)


def llava_config(text_config):
    vision = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16)
    return transformers.LlavaConfig(text_config=text_config.to_dict(), vision_config=vision.to_dict(),
                                    image_token_index=text_config.vocab_size - 1,
                                    tie_word_embeddings=text_config.tie_word_embeddings)


def mistral3_config(text_config):
    vision = transformers.PixtralVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                              num_attention_heads=2, head_dim=8, image_size=28, patch_size=14)
    return transformers.Mistral3Config(text_config=text_config.to_dict(), vision_config=vision.to_dict(),
                                       image_token_index=text_config.vocab_size - 1, spatial_merge_size=2,
                                       tie_word_embeddings=text_config.tie_word_embeddings)


def qwen_vl_config(config_cls, vision):
    def build(text_config):
        text = dict(text_config.to_dict(), model_type=config_cls.model_type + "_text")
        half = text["hidden_size"] // text["num_attention_heads"] // 2  # mrope splits head_dim / 2 as 16:24:24
        sections = [half // 4, half * 3 // 8, half - half // 4 - half * 3 // 8]
        text["rope_parameters"] = dict(text["rope_parameters"], mrope_section=sections)
        v = text["vocab_size"]
        return config_cls(text_config=text, vision_config=vision, tie_word_embeddings=text_config.tie_word_embeddings,
                          image_token_id=v - 1, video_token_id=v - 2, vision_start_token_id=v - 3,
                          vision_end_token_id=v - 4)
    return build


def qwen_vl_flat(j):
    """Qwen2-VL's Hub config.json: the text model's fields at the top level beside vision_config,
    its RoPE as rope_theta + rope_scaling {type: mrope, mrope_section}."""
    text = j.pop("text_config")
    sections = text["rope_parameters"].pop("mrope_section")
    legacy_config(text)
    assert text["rope_scaling"] is None, text["rope_scaling"]
    text["rope_scaling"] = {"type": "mrope", "mrope_section": sections}
    for k in ("model_type", "architectures", "_name_or_path"):
        text.pop(k, None)
    j.update(text)
    j["torch_dtype"] = j.pop("dtype", j.get("torch_dtype"))


def nested_hub_config(j):
    """The Hub's config.json of gemma3 / llava / mistral3: text_config in the legacy layout."""
    legacy_config(j["text_config"])


# name: (text case, config builder, class, seed, Hub config rewrite, Hub-to-module renames). Each wraps
# the text case's model with a small vision tower, as Gemma-3 4B+ (SigLIP), LLaVA-1.5 (CLIP),
# Mistral Small 3.1 (Pixtral) and Qwen2-VL / Qwen2.5-VL ship.
MULTIMODAL = {
    "gemma3-multimodal": ("gemma3", gemma3_config, "Gemma3ForConditionalGeneration", 1012, nested_hub_config, MODULE_NAMES),
    "llava": ("llama2", llava_config, "LlavaForConditionalGeneration", 1013, nested_hub_config, MODULE_NAMES),
    "mistral3": ("mistral", mistral3_config, "Mistral3ForConditionalGeneration", 1014, nested_hub_config, MODULE_NAMES),
    "qwen2-vl": ("qwen2", qwen_vl_config(transformers.Qwen2VLConfig,
                                         dict(depth=1, embed_dim=16, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14)),
                 "Qwen2VLForConditionalGeneration", 1015, qwen_vl_flat, QWEN_VL_MODULE_NAMES),
    "qwen2.5-vl": ("qwen2", qwen_vl_config(transformers.Qwen2_5_VLConfig,
                                           dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=64,
                                                patch_size=14, window_size=28, fullatt_block_indexes=[1])),
                   "Qwen2_5_VLForConditionalGeneration", 1016, qwen_vl_flat, QWEN_VL_MODULE_NAMES),
}


def make_multimodal(outdir, name):
    """The text case's model inside a vision-language model, saved as the Hub's files are (hub:
    language_model.model.*, vision_tower.*, text_config in the Hub's layout) and with transformers 5's
    module names (module-names: model.language_model.*, text_config in transformers 5's layout).
    transformers' logits on the case's prompts must equal the text model's reference (text-only input
    never reaches the tower); sppft's C++ tests then load both and compare with the text case."""
    t0 = time.time()
    text_case, make_config, cls, seed, hub_config, module_names = MULTIMODAL[name]
    text_dir = os.path.join(outdir, text_case)
    ref = json.load(open(os.path.join(text_dir, "parity", "reference.json"), encoding="utf-8"))
    text = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32, attn_implementation="eager")
    cfg = make_config(text.config)
    torch.manual_seed(seed)
    mm = getattr(transformers, cls)(cfg).to(torch.float32)
    missing, unexpected = mm.model.language_model.load_state_dict(text.model.state_dict(), strict=True)
    assert not missing and not unexpected
    if not text.config.tie_word_embeddings:
        mm.lm_head.weight.data.copy_(text.lm_head.weight.data)
    mm.eval()
    work = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=outdir)
    try:
        logits = {}
        for variant in ("module-names", "hub"):
            d = os.path.join(work, variant)
            mm.save_pretrained(d, safe_serialization=True)
            for f in os.listdir(text_dir):
                if f.startswith("tokenizer") or f in ("special_tokens_map.json", "generation_config.json"):
                    shutil.copy(os.path.join(text_dir, f), d)
            st = os.path.join(d, "model.safetensors")
            with safe_open(st, "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            hub_prefixes = tuple(a for a, _b in module_names)
            assert all(k.startswith(hub_prefixes) for k in tensors), sorted(tensors)[:3]
            assert any(k.startswith(hub_prefixes[1]) for k in tensors), sorted(tensors)[:3]  # the tower
            if variant == "module-names":
                renamed = {}
                for k, v in tensors.items():
                    for a, b in module_names:
                        if k.startswith(a):
                            k = b + k[len(a):]
                            break
                    renamed[k] = v
                save_file(renamed, st, metadata={"format": "pt"})
            else:
                edit_json(os.path.join(d, "config.json"), hub_config)
            back = transformers.AutoModelForImageTextToText.from_pretrained(d, dtype=torch.float32,
                                                                           attn_implementation="eager")
            back.eval()
            assert type(back).__name__ == cls, type(back)
            worst = 0.0
            ref_logits = safe_open(os.path.join(text_dir, "parity", "reference.safetensors"), "pt")
            for i, p in enumerate(ref["prompts"]):
                x = torch.tensor([p["input_ids"]])
                with torch.no_grad():
                    lo = back(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0].float()
                worst = max(worst, float((lo - ref_logits.get_tensor(f"logits.{i}")).abs().max()))
            assert worst < 1e-4, (name, variant, worst)
            logits[variant] = worst
            del back
        with open(os.path.join(work, "multimodal.json"), "w", encoding="utf-8") as f:
            vision = sum(p.numel() for n, p in mm.named_parameters()
                         if not n.startswith(("model.language_model.", "lm_head.")))
            json.dump({"text_case": text_case, "class": cls, "model_type": cfg.model_type, "max_abs_logit_diff_vs_text_reference": logits,
                       "vision_parameters": vision,
                       "transformers_version": transformers.__version__}, f, indent=1)
            f.write("\n")
        fix_permissions(work)
        final = os.path.join(outdir, name)
        if os.path.lexists(final):
            shutil.rmtree(final)
        os.rename(work, final)
        work = None
        print(f"{name}: module-names, hub; logits vs the text model {logits} ({time.time() - t0:.1f}s)", flush=True)
    finally:
        if work is not None and os.path.isdir(work):
            shutil.rmtree(work)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    outdir = os.path.abspath(argv[1])
    names = argv[2:] or CASES
    for n in names:
        if n not in CASES:
            print(f"unknown case {n}; known: {', '.join(CASES)}", file=sys.stderr)
            return 2
    t0 = time.time()
    for n in names:
        make_case(n, outdir)
        for name, (text_case, *_rest) in MULTIMODAL.items():
            if n == text_case:
                make_multimodal(outdir, name)
    print(f"done: {len(names)} cases in {time.time() - t0:.1f}s -> {outdir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
