#!/usr/bin/env python3
"""Checkpoints with real chat templates, and the token ids transformers gives through them.

Usage:  make_chat_fixtures.py PARITY_DIR     (after make_fixtures.py PARITY_DIR)

For each pair (parity case, Hub chat template of that family) writes PARITY_DIR/chat/NAME/: the
case's checkpoint (files hard-linked or copied) plus chat_template.jinja, and expected.json:

  {"template": Hub name,
   "prompts": [{"instruction", "input", "ids", "kwargs"?}],  # apply_chat_template([user], add_generation_prompt=True, tokenize=True, **kwargs)
   "conversations": [{"messages", "error"} |          # the template raises on them
                     {"messages", "prefix_chain": true, "ids", "labels"} |
                     {"messages", "prefix_chain": false, "per_turn": [{"ids", "labels"}]} |
                     {"messages", "prefix_chain": false, "builtin": true}]}

A user message is the record's instruction, then a blank line and its input if any (sppft's
chat_content). For conversations, ids are the whole conversation rendered without the generation
prompt and tokenized as apply_chat_template does (add_special_tokens=False); labels are -100 but on
each assistant turn (what sppft trains on): from the end of the rendering of the turns before it with
the generation prompt open (a prefix of the whole) to where the rendering up to and including it stops
agreeing with the whole (so an end-of-conversation EOS, as Phi-3 appends, counts only on the last
turn); that stretch must hold the message's content, else prefix_chain is false and each assistant
turn is its own example (per_turn): the conversation up to it, labels from the end of its generation
prompt on (Qwen3, which drops earlier turns' think blocks). A template that does not even render a
last turn after its prompt leaves the conversation to sppft's built-in format (builtin).
Prompts and conversations carry "kwargs" when rendered with extra template variables (KWARGS).
Takes a few seconds. Needs transformers 5 (checked with 5.24).
"""

import json
import os
import shutil
import sys

import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "engine"))
import make_chat_template_fixtures as hub  # noqa: E402  (the Hub templates, with their sources)

transformers.logging.set_verbosity_error()

PAIRS = [
    ("llama2", "llama2", "meta-llama/Llama-2-7b-chat-hf", hub.LLAMA_2_7B_CHAT_HF),
    ("llama3", "llama3", "meta-llama/Llama-3.1-8B-Instruct", hub.LLAMA_3_1_8B_INSTRUCT),
    ("mistral", "mistral", "mistralai/Mistral-7B-Instruct-v0.2", hub.MISTRAL_7B_INSTRUCT_V0_2),
    ("qwen2", "qwen2", "Qwen/Qwen2.5-0.5B-Instruct", hub.QWEN2_5_INSTRUCT),
    ("qwen3", "qwen3", "Qwen/Qwen3-8B", hub.QWEN3_8B),
    ("gemma2", "gemma2", "google/gemma-2-2b-it", hub.GEMMA_2_2B_IT),
    ("gemma3", "gemma3", "google/gemma-3-4b-it", hub.GEMMA_3_IT),
    ("phi3", "phi3", "microsoft/Phi-3-mini-4k-instruct", hub.PHI_3_MINI_4K_INSTRUCT),
    ("phi4-mini", "phi3-longrope", "microsoft/Phi-4-mini-instruct", hub.PHI_4_MINI_INSTRUCT),
    # Vision-language checkpoints: content goes in as text parts, as their processors pass it.
    ("llava", "llava/hub", "llava-hf/llava-1.5-7b-hf", hub.LLAVA_1_5_7B_HF),
    ("gemma3-vl", "gemma3-multimodal/hub", "google/gemma-3-4b-it", hub.GEMMA_3_IT),
]

PROMPTS = [
    {"instruction": "Write a haiku about the sea.", "input": ""},
    {"instruction": "Summarize the text.", "input": "Line one.\nLine two, with  spaces. "},
    {"instruction": "Traduis « bonjour » en 日本語, s'il te plaît.", "input": ""},
]

CONVERSATIONS = [
    # Reasoning given apart from the content (Qwen3's template reads reasoning_content; others ignore it).
    [
        {"role": "user", "content": "What is 7 x 6?"},
        {"role": "assistant", "content": "42.", "reasoning_content": "Seven sixes are forty-two."},
    ],
    # Reasoning in the assistant turns (Qwen3 rebuilds the block, and drops it from earlier turns).
    [
        {"role": "user", "content": "How many legs has a spider?"},
        {"role": "assistant", "content": "<think>\nCount them in pairs.\n</think>\n\nEight."},
        {"role": "user", "content": "And an ant?"},
        {"role": "assistant", "content": "<think>Insects have three pairs.</think>Six."},
    ],
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "It is 4."}],
    [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Green, and nothing else."},
    ],
    [
        {"role": "user", "content": "First question."},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question."},
        {"role": "assistant", "content": "Second answer."},
    ],
]


# Extra template variables (apply_chat_template's kwargs, sppft's --chat-template-kwargs), each
# rendering the prompts and conversations once more.
KWARGS = {
    "qwen3": [{"enable_thinking": False}],
    "llama3": [{"date_string": "30 Nov 2026"}],
}


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


PARTS = False  # set per checkpoint: a vision-language one takes content as [{"type": "text", "text": ...}]


def as_sent(messages):
    if not PARTS:
        return messages
    return [dict(m, content=[{"type": "text", "text": m["content"]}]) for m in messages]


def render(tok, messages, generation_prompt, kwargs):
    return tok.apply_chat_template(as_sent(messages), add_generation_prompt=generation_prompt, tokenize=False, **kwargs)


def labelled(tok, text, spans):
    """ids of text and labels: -100 but on the tokens of each character span."""
    ids = ids_of(tok, text)
    labels = [-100] * len(ids)
    for b, e in spans:
        for t in range(len(ids_of(tok, text[:b])), min(len(ids_of(tok, text[:e])), len(ids))):
            labels[t] = ids[t]
    return ids, labels


def conversation_case(tok, messages, kwargs):
    case = conversation_rendering(tok, messages, kwargs)
    if kwargs:
        case["kwargs"] = kwargs
    return case


def conversation_rendering(tok, messages, kwargs):
    try:
        full = render(tok, messages, False, kwargs)
    except Exception as e:  # the template raises (e.g. no system role)
        return {"messages": messages, "error": str(e)}
    spans, per_turn, chained = [], [], True
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tok, messages[:i], True, kwargs)
        upto = render(tok, messages[: i + 1], False, kwargs)
        content = m["content"].split("</think>")[-1].strip()  # templates may reformat reasoning (Qwen3)
        if not upto.startswith(prompt) or content not in upto[len(prompt) :]:
            return {"messages": messages, "prefix_chain": False, "builtin": True}
        ids, labels = labelled(tok, upto, [(len(prompt), len(upto))])
        per_turn.append({"ids": ids, "labels": labels})
        end = len(os.path.commonprefix([upto, full]))
        if not full.startswith(prompt) or content not in full[len(prompt) : end]:
            chained = False
        spans.append((len(prompt), end))
    if not chained:  # one example per assistant turn: the conversation up to it
        return {"messages": messages, "prefix_chain": False, "per_turn": per_turn}
    ids, labels = labelled(tok, full, spans)
    return {"messages": messages, "prefix_chain": True, "ids": ids, "labels": labels}


def link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def main():
    global PARTS
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    parity = sys.argv[1]
    root = os.path.join(parity, "chat")
    shutil.rmtree(root, ignore_errors=True)
    for name, case, hub_name, template in PAIRS:
        src = os.path.join(parity, case)
        dst = os.path.join(root, name)
        os.makedirs(dst)
        for f in os.listdir(src):
            if os.path.isfile(os.path.join(src, f)) and f != "chat_template.jinja":
                link_or_copy(os.path.join(src, f), os.path.join(dst, f))
        with open(os.path.join(dst, "chat_template.jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(template)
        tok = AutoTokenizer.from_pretrained(dst)
        with open(os.path.join(dst, "config.json"), encoding="utf-8") as f:
            PARTS = "vision_config" in json.load(f)
        prompts, conversations = [], []
        for kwargs in [{}] + KWARGS.get(name, []):
            for p in PROMPTS:
                content = p["instruction"] if not p["input"] else p["instruction"] + "\n\n" + p["input"]
                ids = tok.apply_chat_template(as_sent([{"role": "user", "content": content}]), add_generation_prompt=True,
                                              tokenize=True, return_dict=False, **kwargs)
                assert ids == ids_of(tok, render(tok, [{"role": "user", "content": content}], True, kwargs))
                if kwargs:  # the variables change the rendering, so a test that ignored them would fail
                    assert list(ids) != prompts[PROMPTS.index(p)]["ids"], (name, kwargs)
                prompts.append(dict(p, ids=list(ids), **({"kwargs": kwargs} if kwargs else {})))
            conversations += [conversation_case(tok, c, kwargs) for c in CONVERSATIONS]
        doc = {"template": hub_name, "case": case, "prompts": prompts, "conversations": conversations}
        with open(os.path.join(dst, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
        kinds = [("error" if "error" in c else "chain" if c["prefix_chain"] else "per-turn" if "per_turn" in c else "built-in")
                 for c in doc["conversations"]]
        print(f"{name}: {hub_name} over parity case {case}; conversations: {', '.join(kinds)}")


if __name__ == "__main__":
    main()
