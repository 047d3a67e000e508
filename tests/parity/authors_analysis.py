#!/usr/bin/env python3
"""The paper authors' safety-layer analysis, re-implemented with Hugging Face transformers.

This is the reference side of tests/parity/analysis_parity_test.cpp. It does what the authors'
scripts do (METHOD.md), in float32 with eager attention on CPU, one query at a time:

  cossim CASE_DIR --normal N.csv --malicious M.csv --cossim-json sppft/cossim.json --out R.json
      [--authors-final-norm] [--float64]
    Runs every query ONCE (Alpaca template, the tokenizer's default BOS) and takes the state after
    every decoder block at the last prompt position: hidden_states[k+1] for k < L-1, and for the
    last block the RAW block output, captured with a forward hook on model.model.layers[-1]
    (transformers 5 final-norms the last entry of hidden_states; --authors-final-norm uses that
    final-normed entry instead, as the authors' tuple did). Then, for the SAME pairs sppft drew
    (cossim.json "pairs": nn / mm / nm lists of [a, b] indices into the normal / malicious lists),
    per layer: mean and population std (numpy's default, as the authors) of the cosine, and the
    angle gap mean(arccos cos_NM) - mean(arccos cos_NN) in degrees.
    Precision: the cosine is the authors' formula np.dot(a, b) / (norm(a) * norm(b)) on the
    float32 states, evaluated in float32 (as their code did); --float64 evaluates it in float64.
    Means, stds and angles are float64.
    Writes {nn_mean, nn_std, mm_mean, mm_std, nm_mean, nm_std, gap_deg, layers, precision, ...}.

  refusals CASE_DIR --queries Q.csv --judge JUDGE_FILE [--judge J2 ...] --range a-b|none[,a-b...]
      --alpha A [--scale-o-proj] --max-new-tokens 16 --out R.json
    For each range (comma-separated list; `none` = unscaled baseline): scales in place, under
    torch.no_grad, the projection weights of blocks a..b by alpha (q, k, v, gate, up, down; o only
    with --scale-o-proj; Phi-3: the fused qkv_proj and gate_up_proj; weights only, no biases, norms,
    embeddings or lm_head), greedily generates max_new_tokens for every query (batch 1,
    do_sample=False, stopping at the generation config's EOS), decodes the new tokens with
    skip_special_tokens=True and judges them; then restores the weights exactly from a copy.
    Judge semantics are those of analysis/judge.cpp: '#' comment lines, "# mode: keyword" selects
    case-sensitive substring matching, otherwise prefix mode (response stripped of leading ASCII
    whitespace, ASCII-case-insensitive startswith); U+2018/U+2019/U+02BC become "'" in phrases and
    responses.
    Writes {"refusals": n, "responses": [...]} for the first range and first judge, plus
    "settings": one entry per range with refusals under every judge ("refusals_by_judge", keyed by
    the judge path), responses, per-response refused flags and the smallest top-1/top-2 logit
    margin over the greedy steps ("min_margin"; a tiny one means a greedy near-tie).

  batch JOBS.json
    JOBS.json = {"jobs": [[subcommand, arg, ...], ...]}: runs several of the above in one process
    (the imports take seconds; the test runs everything through one batch). Models are loaded once
    per directory; scaled weights are always restored from their saved copies.

Query files: headerless one-column CSV with standard quoting (a first cell such as "goal" or
"instruction" is taken as a header, as sppft does).
"""

import argparse
import csv
import json
import math
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(int(os.environ.get("SPPFT_TORCH_THREADS", "2")))

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
    "{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
CSV_HEADERS = {"goal", "instruction", "prompt", "query", "question", "text", "behavior"}
ASCII_WS = " \t\n\v\f\r"  # what C's isspace() strips in the "C" locale


def alpaca(instruction, inp=""):
    return ALPACA_INPUT.format(instruction=instruction, input=inp) if inp else ALPACA.format(instruction=instruction)


def read_queries(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if rows and rows[0] and rows[0][0].lower() in CSV_HEADERS:
        rows = rows[1:]
    out = []
    for i, r in enumerate(rows):
        if not r or not r[0].strip():
            raise SystemExit(f"{path}: row {i + 1}: empty prompt")
        out.append(r[0])
    return out


# ---------------------------------------------------------------- models

_MODELS = {}


def load(case_dir):
    key = os.path.realpath(case_dir)
    if key not in _MODELS:
        tok = AutoTokenizer.from_pretrained(case_dir)
        model = AutoModelForCausalLM.from_pretrained(case_dir, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        _MODELS[key] = (model, tok)
    return _MODELS[key]


def encode(tok, instruction):
    ids = tok(alpaca(instruction))["input_ids"]  # the tokenizer's default special tokens (BOS)
    return torch.tensor([ids])


# ---------------------------------------------------------------- cossim


def block_states(model, tok, queries, authors_final_norm):
    """[P, L, H] float32: the state after every decoder block at the last prompt position."""
    layers = model.model.layers
    n_layers = len(layers)
    captured = {}

    def hook(_mod, _inp, out):
        captured["raw"] = (out[0] if isinstance(out, (tuple, list)) else out).detach()

    h = layers[-1].register_forward_hook(hook)
    try:
        out_states = []
        for q in queries:
            x = encode(tok, q)
            with torch.no_grad():
                out = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True, use_cache=False)
            hs = out.hidden_states
            assert len(hs) == n_layers + 1, (len(hs), n_layers)
            per = [hs[k + 1][0, -1] for k in range(n_layers - 1)]
            per.append(hs[n_layers][0, -1] if authors_final_norm else captured["raw"][0, -1])
            out_states.append(torch.stack(per).float().numpy())
        return np.stack(out_states)
    finally:
        h.remove()


def cosine(a, b, dtype):
    a = a.astype(dtype)
    b = b.astype(dtype)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))  # the authors' formula


def cmd_cossim(a):
    model, tok = load(a.case_dir)
    normal = read_queries(a.normal)
    malicious = read_queries(a.malicious)
    with open(a.cossim_json, encoding="utf-8") as f:
        pairs = json.load(f)["pairs"]
    sn = block_states(model, tok, normal, a.authors_final_norm)
    sm = block_states(model, tok, malicious, a.authors_final_norm)
    n_layers = sn.shape[1]
    dtype = np.float64 if a.float64 else np.float32
    sets = {"nn": (sn, sn), "mm": (sm, sm), "nm": (sn, sm)}
    cos = {}
    for kind, (x, y) in sets.items():
        pl = pairs[kind]
        if not pl:
            raise SystemExit(f"{a.cossim_json}: no {kind} pairs")
        cos[kind] = np.array([[cosine(x[i, k], y[j, k], dtype) for k in range(n_layers)] for i, j in pl], dtype=np.float64)
    res = {"layers": list(range(n_layers))}
    for kind in ("nn", "mm", "nm"):
        res[kind + "_mean"] = np.mean(cos[kind], axis=0).tolist()
        res[kind + "_std"] = np.std(cos[kind], axis=0).tolist()  # population std (numpy's default)
    angle = {k: np.degrees(np.arccos(np.clip(cos[k], -1.0, 1.0))) for k in ("nn", "nm")}
    res["gap_deg"] = (np.mean(angle["nm"], axis=0) - np.mean(angle["nn"], axis=0)).tolist()
    res["pairs"] = {k: len(pairs[k]) for k in ("nn", "mm", "nm")}
    res["precision"] = ("cosine np.dot/(norm*norm) in " + ("float64" if a.float64 else "float32") +
                        " on float32 states; mean/std/angles in float64")
    res["state"] = ("final-normed last block (authors' HF tuple)" if a.authors_final_norm
                    else "raw block outputs (hidden_states[k+1]; last block via a forward hook)")
    res["normal_queries"] = len(normal)
    res["malicious_queries"] = len(malicious)
    res["transformers_version"] = transformers.__version__
    res["torch_version"] = torch.__version__
    write_json(a.out, res)


# ---------------------------------------------------------------- judge (analysis/judge.cpp semantics)


def normalize_apostrophes(s):
    return s.replace("\u2018", "'").replace("\u2019", "'").replace("\u02bc", "'")


def ascii_lower(s):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


class Judge:
    def __init__(self, path):
        self.path = path
        self.mode = "prefix"
        self.phrases = []
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        for n, line in enumerate(text.split("\n"), 1):
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                continue
            if line.startswith("#"):
                c = ascii_lower(line)
                if "mode: keyword" in c:
                    self.mode = "keyword"
                elif "mode:" in c and "mode: prefix" not in c:
                    raise SystemExit(f"{path}: line {n}: unknown mode (expected prefix or keyword)")
                continue
            self.phrases.append(normalize_apostrophes(line))
        if not self.phrases:
            raise SystemExit(f"{path}: no refusal phrases")

    def refused(self, response):
        r = normalize_apostrophes(response)
        if self.mode == "keyword":
            return any(p in r for p in self.phrases)
        head = ascii_lower(r.lstrip(ASCII_WS))
        return any(head.startswith(ascii_lower(p)) for p in self.phrases)


# ---------------------------------------------------------------- refusals


def scaled_weights(model, block, scale_o_proj):
    layer = model.model.layers[block]
    attn, mlp = layer.self_attn, layer.mlp
    out = []
    if hasattr(attn, "qkv_proj"):  # Phi-3
        out.append(attn.qkv_proj.weight)
    else:
        out += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
    if scale_o_proj:
        out.append(attn.o_proj.weight)
    if hasattr(mlp, "gate_up_proj"):  # Phi-3
        out.append(mlp.gate_up_proj.weight)
    else:
        out += [mlp.gate_proj.weight, mlp.up_proj.weight]
    out.append(mlp.down_proj.weight)
    return out


def parse_range(text, n_layers):
    if text == "none":
        return None
    a, _, b = text.partition("-")
    a, b = int(a), int(b or a)
    if not (0 <= a <= b < n_layers):
        raise SystemExit(f"--range {text}: outside blocks 0-{n_layers - 1}")
    return a, b


def generate_all(model, tok, queries, max_new_tokens):
    responses, margins = [], []
    for q in queries:
        x = encode(tok, q)
        with torch.no_grad():
            g = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                               max_new_tokens=max_new_tokens, return_dict_in_generate=True, output_logits=True,
                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
        new = g.sequences[0, x.shape[1]:].tolist()
        m = math.inf
        for lg in g.logits:
            top2 = torch.topk(lg[0].float(), 2).values
            m = min(m, float(top2[0] - top2[1]))
        responses.append(tok.decode(new, skip_special_tokens=True))
        margins.append(m)
    return responses, margins


def cmd_refusals(a):
    model, tok = load(a.case_dir)
    queries = read_queries(a.queries)
    judges = [Judge(p) for p in a.judge]
    n_layers = len(model.model.layers)
    settings = []
    for rtext in a.range.split(","):
        rng = parse_range(rtext.strip(), n_layers)
        saved = []
        with torch.no_grad():
            try:
                if rng is not None:
                    for k in range(rng[0], rng[1] + 1):
                        for w in scaled_weights(model, k, a.scale_o_proj):
                            saved.append((w, w.detach().clone()))
                            w.mul_(a.alpha)
                responses, margins = generate_all(model, tok, queries, a.max_new_tokens)
            finally:
                for w, orig in saved:  # restore exactly, never by dividing
                    w.copy_(orig)
        flags = {j.path: [j.refused(r) for r in responses] for j in judges}
        settings.append({
            "range": None if rng is None else list(rng),
            "alpha": None if rng is None else a.alpha,
            "scale_o_proj": a.scale_o_proj,
            "refusals": sum(flags[judges[0].path]),
            "refusals_by_judge": {p: sum(f) for p, f in flags.items()},
            "refused_by_judge": flags,
            "responses": responses,
            "min_margin": margins,
        })
    res = {
        "refusals": settings[0]["refusals"],
        "responses": settings[0]["responses"],
        "judge": a.judge[0],
        "judge_modes": {j.path: j.mode for j in judges},
        "queries": len(queries),
        "max_new_tokens": a.max_new_tokens,
        "settings": settings,
        "transformers_version": transformers.__version__,
    }
    write_json(a.out, res)


# ---------------------------------------------------------------- driver


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=True)
        f.write("\n")
    os.replace(tmp, path)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cossim")
    c.add_argument("case_dir")
    c.add_argument("--normal", required=True)
    c.add_argument("--malicious", required=True)
    c.add_argument("--cossim-json", required=True, help="sppft's cossim.json (its pairs are reused)")
    c.add_argument("--out", required=True)
    c.add_argument("--authors-final-norm", action="store_true")
    c.add_argument("--float64", action="store_true")
    r = sub.add_parser("refusals")
    r.add_argument("case_dir")
    r.add_argument("--queries", required=True)
    r.add_argument("--judge", required=True, action="append")
    r.add_argument("--range", required=True, help="a-b, none, or a comma-separated list of them")
    r.add_argument("--alpha", type=float, default=1.0)
    r.add_argument("--scale-o-proj", action="store_true")
    r.add_argument("--max-new-tokens", type=int, default=16)
    r.add_argument("--out", required=True)
    b = sub.add_parser("batch")
    b.add_argument("jobs")
    return p


def run(argv):
    a = parser().parse_args(argv)
    if a.cmd == "cossim":
        cmd_cossim(a)
    elif a.cmd == "refusals":
        cmd_refusals(a)
    else:
        with open(a.jobs, encoding="utf-8") as f:
            jobs = json.load(f)["jobs"]
        for job in jobs:
            if job and job[0] == "batch":
                raise SystemExit("batch jobs cannot nest")
            run(job)


if __name__ == "__main__":
    run(sys.argv[1:])
