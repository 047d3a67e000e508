#!/usr/bin/env python3
"""Check that a checkpoint directory written by sppft loads in transformers and gives sppft's logits.

Usage:
  python tests/parity/check_saved.py DIR --ids-json IDS.json --logits-safetensors L.safetensors

DIR                 a checkpoint directory (config.json + model.safetensors or shards + index
                    [+ tokenizer files]), loaded with AutoModelForCausalLM in float32, eager attention.
IDS.json            {"input_ids": [[...], ...]}: one token-id list per prompt.
L.safetensors       logits.i [T_i, vocab] (any float dtype, compared in float32) for prompt i, as
                    computed by sppft's own forward on the same ids.  A vision-language checkpoint
                    (a config.json with vision_config: Gemma3/Llava/Mistral3/Qwen2_5_VLForConditionalGeneration)
                    is loaded with AutoModelForImageTextToText and run on text only;
                    `model_class` names the class.

Prints exactly one JSON line on stdout:
  {"max_rel_logit_err": x, "prompts": n, "transformers_version": "...", ...}
where max_rel_logit_err = max over prompts i of max|a_i - b_i| / max|b_i|, a_i = logits.i from
L.safetensors and b_i = transformers' logits for prompt i.  Extra keys: per_prompt_rel_err,
max_abs_logit_err, argmax_agree (fraction of positions, all prompts together), tie_word_embeddings
(config), tied_effective (lm_head is the embedding after loading), tokenizer_class (or null).

Exit status: 0 when the comparison ran (whatever the error; the caller applies the tolerance);
1 when transformers cannot load DIR, including a load that reports missing, unexpected or
mismatched weights (transformers would otherwise silently random-initialise missing ones);
2 for bad arguments or inputs (missing logits.i, wrong shape).  On 1 and 2 the JSON line is
{"error": "...", "transformers_version": "..."}.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(2)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def is_vision_language(d):
    with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
        return "vision_config" in json.load(f)


def emit(obj):
    print(json.dumps(obj, ensure_ascii=True), flush=True)


def fail(code, msg):
    emit({"error": " ".join(str(msg).split()), "transformers_version": transformers.__version__})
    return code


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--ids-json", required=True)
    ap.add_argument("--logits-safetensors", required=True)
    args = ap.parse_args(argv)

    try:
        with open(args.ids_json, encoding="utf-8") as f:
            ids_list = json.load(f)["input_ids"]
        assert isinstance(ids_list, list) and ids_list, "input_ids must be a non-empty list of lists"
        assert all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in ids_list), \
            "every input_ids entry must be a non-empty list of ints"
        expected = []
        with safe_open(args.logits_safetensors, framework="pt") as st:
            keys = set(st.keys())
            for i in range(len(ids_list)):
                k = f"logits.{i}"
                if k not in keys:
                    raise ValueError(f"{args.logits_safetensors} has no {k}")
                expected.append(st.get_tensor(k).float())
    except Exception as e:  # noqa: BLE001
        return fail(2, f"bad input: {type(e).__name__}: {e}")

    if not os.path.isfile(os.path.join(args.dir, "config.json")):
        return fail(1, f"cannot load {args.dir}: no config.json")
    try:
        # A vision-language checkpoint (llava, mistral3) is no causal LM to the Auto classes.
        kind = AutoModelForImageTextToText if is_vision_language(args.dir) else AutoModelForCausalLM
        model, info = kind.from_pretrained(
            args.dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True,
            ignore_mismatched_sizes=True)  # so that mismatched shapes are reported by name below
    except Exception as e:  # noqa: BLE001
        return fail(1, f"cannot load {args.dir}: {type(e).__name__}: {e}")
    bad = {k: sorted(map(str, v)) for k, v in info.items()
           if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        return fail(1, f"cannot load {args.dir} cleanly: {json.dumps(bad)}")
    model.eval()

    tok_class = None
    if any(os.path.isfile(os.path.join(args.dir, f)) for f in TOKENIZER_FILES):
        try:
            tok_class = type(AutoTokenizer.from_pretrained(args.dir)).__name__
        except Exception as e:  # noqa: BLE001
            tok_class = f"load failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"

    vocab = model.config.get_text_config().vocab_size  # a multimodal model's is its text model's
    per_prompt, max_abs, agree, total = [], 0.0, 0, 0
    for i, (ids, a) in enumerate(zip(ids_list, expected)):
        if tuple(a.shape) != (len(ids), vocab):
            return fail(2, f"logits.{i} has shape {list(a.shape)}, expected [{len(ids)}, {vocab}]")
        if any(t < 0 or t >= vocab for t in ids):
            return fail(2, f"input_ids[{i}] has an id outside [0, {vocab})")
        x = torch.tensor([ids])
        with torch.no_grad():
            b = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0].float()
        diff = float((a - b).abs().max())
        denom = float(b.abs().max())
        per_prompt.append(diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf")))
        max_abs = max(max_abs, diff)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(ids)

    emit({
        "max_rel_logit_err": max(per_prompt),
        "prompts": len(ids_list),
        "transformers_version": transformers.__version__,
        "per_prompt_rel_err": per_prompt,
        "max_abs_logit_err": max_abs,
        "argmax_agree": agree / total,
        "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
        "tied_effective": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        "tokenizer_class": tok_class,
        "model_class": type(model).__name__,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
