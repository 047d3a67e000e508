#!/usr/bin/env python3
"""More Hub chat templates for make_chat_template_fixtures.py: 46 real templates (Mistral v0.3 /
Nemo / Small 3.1 and 3.2, Mixtral, QwQ, Qwen2-VL, DeepSeek-R1 distills and V3.1, Phi-3.5 / 3-small /
3-medium, Hermes-3, Command-R+, Granite 3.3, gpt-oss, GLM-4.6, Kimi-K2, Llama-4, Seed-OSS, ... and
sixteen smaller ones) copied verbatim from public copies, each with its source, in
tests/engine/chat_templates/*.json; rendered here through the same helpers over standard, tool-use,
thinking and image conversations. build() returns the cases."""
import ast
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_chat_template_fixtures as M  # noqa: E402
from make_chat_template_fixtures import (  # noqa: E402
    STANDARD_CONVERSATIONS, U1, SU, UAUA, SUA, UAU, TRICKY, WEATHER_TOOL, SEARCH_TOOL, WEATHER_CALL, SEARCH_CALL,
    special_tokens, render, make_case, parts,
)

T = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_templates") + os.sep


def load(fn):
    d = json.load(open(T + fn))
    return d["name"], d["source"], d["text"]


TEMPLATES = {}  # name -> (source, text)
for fn in sorted(os.listdir(T)):
    d = json.load(open(T + fn))
    if "text" in d:
        TEMPLATES[d["name"]] = (d["source"], d["text"])
OV_TOK = {}


def load_table(fn):
    """A table of small templates: name -> [(variable,) bos, eos, pad, unk, Python literal of the text]."""
    table = json.load(open(T + fn))
    for k, v in table.items():
        if k.startswith("_"):
            continue
        *var, bos, eos, pad, unk, lit = v
        TEMPLATES[k] = (table["_source"] + (f" ({var[0]})" if var else f' ("{k}")'), ast.literal_eval(lit))
        OV_TOK[k] = special_tokens(bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad)


load_table("openvino_small.json")
load_table("guidance_small.json")
PL = json.load(open(T + "pyliterals.json"))
for k, v in PL.items():
    if k.startswith("_"):
        continue
    TEMPLATES[k] = (v[0], ast.literal_eval(v[1]))

# ---------------------------------------------------------------------------------------------
LLAMA3 = special_tokens(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
LLAMA31 = special_tokens(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
LLAMA4 = special_tokens(bos_token="<|begin_of_text|>", eos_token="<|eot|>", pad_token="<|finetune_right_pad|>")
MISTRAL = special_tokens(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
QWEN = special_tokens(eos_token="<|im_end|>", pad_token="<|endoftext|>")
DSR1 = special_tokens(bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>", pad_token="<｜end▁of▁sentence｜>")
HERMES = special_tokens(bos_token="<|begin_of_text|>", eos_token="<|im_end|>", pad_token="<|end_of_text|>")
COHERE = special_tokens(bos_token="<BOS_TOKEN>", eos_token="<|END_OF_TURN_TOKEN|>", unk_token="<UNK>", pad_token="<PAD>", cls_token="<CLS>", sep_token="<SEP>", mask_token="<MASK_TOKEN>")
GRANITE = special_tokens(bos_token="<|end_of_text|>", eos_token="<|end_of_text|>", unk_token="<|end_of_text|>", pad_token="<|end_of_text|>")
PHI35 = special_tokens(bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>")
GPTOSS = special_tokens(bos_token="<|startoftext|>", eos_token="<|return|>", pad_token="<|endoftext|>")
SMOL3 = special_tokens(eos_token="<|im_end|>", pad_token="<|im_end|>")
FALCON3 = special_tokens(eos_token="<|endoftext|>", pad_token="<|pad|>")

RICH_TOOL = {
    "type": "function",
    "function": {
        "name": "book_flight",
        "description": "Book a flight",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": {"type": "string", "description": "IATA code of the origin airport", "examples": ["CDG", "JFK"]},
                "passengers": {"type": "integer", "description": "How many people.", "default": 1, "minimum": 1, "maximum": 9},
                "cabin": {"type": "string", "enum": ["economy", "business"], "default": "economy"},
                "date": {"type": "string", "format": "date"},
                "flexible": {"type": "boolean", "nullable": True},
                "price": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "legs": {"type": "array", "description": "flight legs", "items": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}, "required": ["from"]}},
                "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                "extra": {"type": "object", "properties": {"meal": {"type": "string", "enum": ["veg", "std"]}, "seat": {"type": ["string", "null"]}}},
                "when": {"oneOf": [{"type": "string", "format": "date"}, {"type": "integer", "format": "unix"}]},
                "any": {},
            },
            "required": ["origin", "passengers"],
        },
    },
}
NOPARAM_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Get the time", "parameters": {"type": "object", "properties": {}}}}

# Tool calls with string arguments (DeepSeek / functionary / firefunction style) and ids
WEATHER_CALL_ID = {"id": "call12345", "type": "function", "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}
SEARCH_CALL_ID = {"id": "call67890", "type": "function", "function": {"name": "web_search", "arguments": {"query": "Eiffel Tower height", "max_results": 3}}}
WEATHER_CALL_STR = {"id": "call12345", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris, France\", \"unit\": \"celsius\"}"}}
SEARCH_CALL_STR = {"id": "call67890", "type": "function", "function": {"name": "web_search", "arguments": "{\"query\": \"Eiffel Tower height\", \"max_results\": 3}"}}

TOOL_RT_ID = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "What's the weather in Paris and how tall is the Eiffel Tower?"},
    {"role": "assistant", "tool_calls": [WEATHER_CALL_ID, SEARCH_CALL_ID]},
    {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
    {"role": "tool", "tool_call_id": "call67890", "name": "web_search", "content": "330 m"},
    {"role": "assistant", "content": "It is 22 °C and the tower is 330 m tall."},
    {"role": "user", "content": "Thanks!"},
]
TOOL_RT_NOSYS = TOOL_RT_ID[1:]
TOOL_RT_STR = [dict(m) for m in TOOL_RT_ID]
TOOL_RT_STR[2] = {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL_STR, SEARCH_CALL_STR]}
TOOL_RT_STR_EMPTY = [dict(m) for m in TOOL_RT_STR]
TOOL_RT_STR_EMPTY[2] = dict(TOOL_RT_STR_EMPTY[2], content="")
TOOL_RT_STR_EMPTY.insert(3, {"role": "assistant", "content": "Thinking...", "tool_calls": [WEATHER_CALL_STR]})
DESC_TOOLS = [{"type": "function", "function": {"name": "get_current_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "City"}, "unit": {"type": "string", "enum": ["c", "f"], "description": "Unit"}, "days": {"type": ["integer", "null"], "description": "Days"}, "hours": {"type": "array", "items": {"type": "integer"}, "description": "Hours"}, "opts": {"type": "object", "additionalProperties": {"type": "boolean"}, "description": "Options"}}, "required": ["location"]}}}]
TOOL_SINGLE = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [WEATHER_CALL_ID]},
    {"role": "tool", "tool_call_id": "call12345", "content": "{\"temperature\": 22}"},
]
THINK_CONV = [
    {"role": "system", "content": "Think step by step."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\nIt is 4."},
    {"role": "user", "content": "3+3?"},
    {"role": "assistant", "content": "<think>Again add.</think>6"},
]
THINK_CONV_GEN = THINK_CONV[:4]
IMG_CONV = [
    {"role": "system", "content": "You describe images."},
    {"role": "user", "content": parts("<image>", "What is in this image?")},
    {"role": "assistant", "content": "A cat on a sofa."},
    {"role": "user", "content": parts("Compare with", "<image>", "this one.")},
]
STD = [(c, m, g, {}) for c, m, g in STANDARD_CONVERSATIONS]
STD_NOSYS = [(c, m, g, {}) for c, m, g in STANDARD_CONVERSATIONS if m[0]["role"] != "system"]


def case(name, msgs, agp=True, **extra):
    return (name, msgs, agp, extra)


PLAN = []


def add(name, tokens, cases, standard=True):
    src, tpl = TEMPLATES[name]
    PLAN.append((name, src, tpl, tokens, (STD if standard else []) + cases))


tools2 = [WEATHER_TOOL, SEARCH_TOOL]

RET_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Get time", "parameters": {"type": "object", "properties": {"tz": {"type": "string", "description": "Time zone"}}, "required": []}, "return": {"type": "string", "description": "The time"}}}
DUP_USERS = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}]
add("mistralai/Mistral-7B-Instruct-v0.3", MISTRAL, [
    case("tool_return_key", U1, tools=[RET_TOOL, WEATHER_TOOL]),
    case("tool_return_key_last", U1, tools=[WEATHER_TOOL, RET_TOOL]),
    case("dup_users_tools", DUP_USERS, tools=[WEATHER_TOOL]),
    case("tools", U1, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("error_bad_call_id", [U1[0], {"role": "assistant", "tool_calls": [WEATHER_CALL]}]),
    case("error_two_users", [U1[0], U1[0]]),
])
add("mistralai/Mistral-Nemo-Instruct-2407", MISTRAL, [
    case("tool_return_key", SU, tools=[WEATHER_TOOL, RET_TOOL]),
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("tool_content_mapping", [U1[0], {"role": "assistant", "tool_calls": [WEATHER_CALL_ID]},
                                  {"role": "tool", "tool_call_id": "call12345", "content": {"content": "22 C"}}], False),
])
add("mistralai/Mistral-Small-3.1-24B-Instruct-2503", MISTRAL, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("images", IMG_CONV),
    case("system_parts", [{"role": "system", "content": parts("Sys in parts")}, U1[0],
                          {"role": "assistant", "content": parts("Answer in parts")}], False),
    case("error_short_id", [U1[0], {"role": "assistant", "tool_calls": [{"id": "abc", "type": "function", "function": {"name": "f", "arguments": {}}}]}]),
])
add("mistralai/Mistral-Small-3.2-24B-Instruct-2506", MISTRAL, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("images", IMG_CONV),
    case("error_id_not_string", [U1[0], {"role": "assistant", "tool_calls": [{"id": 123456789, "type": "function", "function": {"name": "f", "arguments": {}}}]}]),
])
add("TheBloke/Mixtral-8x7B-Instruct-v0.1-GPTQ", OV_TOK["TheBloke/Mixtral-8x7B-Instruct-v0.1-GPTQ"], [])
add("Qwen/QwQ-32B", QWEN, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("think_history", THINK_CONV, False),
    case("think_history_gen", THINK_CONV_GEN),
    case("tool_roundtrip_content", [dict(m, content="") if m.get("tool_calls") else m for m in TOOL_RT_ID], tools=tools2),
])
add("Qwen/Qwen2-VL-7B-Instruct", QWEN, [
    case("images", IMG_CONV),
    case("vision_ids", [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Both?"}, {"type": "image_url", "image_url": {"url": "x"}}]}], True, add_vision_id=True),
])
add("Qwen/Qwen2-7B-Instruct", QWEN, [])
add("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", DSR1, [
    case("tool_roundtrip", TOOL_RT_STR),
    case("tool_roundtrip_empty", TOOL_RT_STR_EMPTY),
    case("think_history", THINK_CONV, False),
    case("think_history_gen", THINK_CONV_GEN),
])
add("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", DSR1, [
    case("tool_roundtrip", TOOL_RT_STR),
    case("tool_roundtrip_empty", TOOL_RT_STR_EMPTY),
    case("think_history", THINK_CONV, False),
])
add("deepseek-ai/DeepSeek-V3.1", DSR1, [
    case("tool_roundtrip", TOOL_RT_STR),
    case("tool_roundtrip_empty", TOOL_RT_STR_EMPTY),
    case("think_history", THINK_CONV, False),
    case("thinking_true", SU, True, thinking=True),
    case("prefix", [U1[0], {"role": "assistant", "content": "Sure", "prefix": True}], False, thinking=True),
])
add("microsoft/Phi-3.5-mini-instruct", PHI35, [
    case("empty_system", [{"role": "system", "content": ""}, U1[0]]),
])
add("microsoft/Phi-3-small-8k-instruct", OV_TOK["microsoft/Phi-3-small-8k-instruct"], [])
add("microsoft/Phi-3-medium-4k-instruct", OV_TOK["microsoft/Phi-3-medium-4k-instruct"], [])
add("NousResearch/Hermes-3-Llama-3.1-8B (tool_use)", HERMES, [
    case("tools", SU, tools=[WEATHER_TOOL, SEARCH_TOOL, RICH_TOOL, DESC_TOOLS[0]]),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("tool_str_args", TOOL_RT_STR, tools=tools2),
    case("tool_return", SU, tools=[RET_TOOL]),
    case("tool_only_msgs", [U1[0], {"role": "assistant", "tool_calls": [WEATHER_CALL]}, {"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}], False, tools=[WEATHER_TOOL]),
], standard=False)
add("CohereForAI/c4ai-command-r-plus (tool_use)", COHERE, [
    case("tools", SU, tools=[WEATHER_TOOL, SEARCH_TOOL, NOPARAM_TOOL]),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("tools_desc", SU, tools=DESC_TOOLS),
    case("tool_roundtrip_desc", TOOL_RT_ID + [{"role": "assistant", "content": "Calling", "tool_calls": [{"type": "function", "function": {"name": "get_time", "arguments": {}}}]}], tools=DESC_TOOLS),
    case("old_tools", U1, tools=[{"name": "internet_search", "description": "Search the web", "parameter_definitions": {"query": {"type": "str", "description": "Query", "required": True}, "n": {"type": "int", "description": "Count", "required": False}}}]),
], standard=False)
add("CohereForAI/c4ai-command-r7b-12-2024 (tool_use)", COHERE, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", [dict(m, **({"tool_plan": "I will call two tools."} if m.get("tool_calls") else {})) for m in TOOL_RT_ID], tools=tools2),
    case("documents", SU, documents=[{"title": "Tower", "text": "The tower is 330 m."}, {"title": "Weather", "text": "Sunny."}]),
    case("citations", SU, tools=tools2, enable_citations=True),
    case("documents_tools", UAU, tools=tools2, documents=[{"title": "Tower", "text": "The tower is 330 m."}, {"title": "Weather", "text": "Sunny."}]),
])
add("fireworks-ai/llama-3-firefunction-v2", LLAMA3, [
    case("functions", SU, functions=json.dumps([WEATHER_TOOL["function"]]), datetime="2024-07-01"),
    case("tool_roundtrip", TOOL_RT_STR, functions="[]", datetime="2024-07-01"),
    case("error_bad_role", [{"role": "robot", "content": "x"}], functions="[]", datetime="now"),
], standard=False)
add("meetkai/functionary-medium-v3.2", LLAMA3, [
    case("tools", SU, tools=[WEATHER_TOOL, SEARCH_TOOL, RICH_TOOL, NOPARAM_TOOL, {"type": "code_interpreter"}]),
    case("tool_roundtrip", TOOL_RT_STR, tools=tools2),
])
add("meetkai/functionary-small-v2.5", OV_TOK["meetkai/functionary-small-v2.5"], [
    case("tool_roundtrip", TOOL_RT_STR),
])
add("ibm-granite/granite-3.3-2b-instruct", GRANITE, [
    case("tools", SU, tools=tools2),
    case("tools_docs", U1, tools=tools2, documents=[{"doc_id": 1, "text": "Doc one"}, {"doc_id": "b", "text": "Doc two"}], controls={"citations": True, "hallucinations": True}),
    case("thinking", U1, thinking=True),
    case("controls", SU, controls={"length": "short", "originality": "abstractive"}),
])
add("HuggingFaceTB/SmolLM3-3B (Unsloth-edited)", SMOL3, [
    case("no_think", SU, True, enable_thinking=False),
    case("sys_no_think", [{"role": "system", "content": "Be brief. /no_think"}, U1[0], {"role": "assistant", "content": "\n\nFine."}], False),
    case("tool_role", [U1[0], {"role": "tool", "content": "42"}]),
    case("list_content", [{"role": "user", "content": parts("abc")}]),
])
add("openai/gpt-oss-120b", GPTOSS, [
    case("tools", SU, tools=[WEATHER_TOOL, SEARCH_TOOL, RICH_TOOL, NOPARAM_TOOL]),
    case("builtin_tools", SU, builtin_tools=["browser", "python"], reasoning_effort="high", model_identity="You are a test."),
    case("tool_roundtrip", [U1[0], {"role": "assistant", "thinking": "Need weather.", "tool_calls": [WEATHER_CALL_ID]},
                            {"role": "tool", "content": "{\"temperature\": 22}"},
                            {"role": "assistant", "content": "22 C.", "thinking": "Done."}], False, tools=[WEATHER_TOOL]),
    case("thinking_last", [U1[0], {"role": "assistant", "content": "Fine.", "reasoning_content": "Be nice."}], False),
    case("error_channel", [U1[0], {"role": "assistant", "content": "<|channel|>final<|message|>x"}], False),
])
add("meta-llama/Llama-4-Scout-17B-16E-Instruct", LLAMA4, [
    case("tools", SU, tools=tools2, date_string="01 Jan 2025"),
    case("tools_in_system", SU, tools=tools2, tools_in_user_message=False, date_string="01 Jan 2025"),
    case("images", IMG_CONV),
    case("tool_roundtrip", [SU[0], U1[0], {"role": "assistant", "tool_calls": [WEATHER_CALL]},
                            {"role": "tool", "content": {"temperature": 22}}]),
])
add("tiiuae/Falcon3-7B-Instruct", FALCON3, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
])
GLM = special_tokens(eos_token="<|endoftext|>", pad_token="<|endoftext|>")
KIMI = special_tokens(bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", pad_token="[PAD]")
MINIMAX = special_tokens(bos_token="]~!b[", eos_token="[e~[", unk_token="]!d~[")
MIXED_TOOL_CONTENT = [U1[0], {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL, SEARCH_CALL]},
                      {"role": "tool", "content": [{"output": "22 C"}, {"type": "text", "text": "330 m"}, "plain"]}]
add("zai-org/GLM-4.6", GLM, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", [dict(m, content="") if m.get("tool_calls") else m for m in TOOL_RT_ID], tools=tools2),
    case("tool_args_types", [U1[0], {"role": "assistant", "content": "<think>hmm</think>ok", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"s": "é", "n": 1.5, "b": True, "l": [1, "ü"], "d": {"k": None}}}}]}], True),
    case("mixed_tool_content", MIXED_TOOL_CONTENT, True),
    case("no_think", SU, True, enable_thinking=False),
    case("think_history", THINK_CONV, False),
    case("parts", [{"role": "user", "content": [{"type": "text", "text": "a"}, "b", {"type": "image"}]}], True),
])
add("moonshotai/Kimi-K2-Instruct", KIMI, [
    case("tools", SU, tools=tools2),
    case("images", IMG_CONV),
])
add("MiniMaxAI/MiniMax-M2 (Unsloth-fixed)", MINIMAX, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", [dict(m, content="") if m.get("tool_calls") else m for m in TOOL_RT_ID], tools=tools2),
    case("tool_args_types", [U1[0], {"role": "assistant", "content": "<think>\nhmm\n</think>\nok", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"s": "é", "n": 1.5, "b": True, "l": [1, "ü"], "d": {"k": None}}}}]}, {"role": "tool", "content": "done"}], True),
    case("mixed_tool_content", MIXED_TOOL_CONTENT, True),
    case("think_history", THINK_CONV, False),
    case("sys_date", [{"role": "system", "content": "Sys", "current_date": "2025-01-01", "current_location": "Paris"}, U1[0]], True),
])
NEMO2 = special_tokens(bos_token="<SPECIAL_10>", eos_token="<SPECIAL_12>", unk_token="<unk>", pad_token="<SPECIAL_14>")
SEED = special_tokens(bos_token="<seed:bos>", eos_token="<seed:eos>", pad_token="<seed:pad>")
add("nvidia/NVIDIA-Nemotron-Nano-9B-v2", NEMO2, [
    case("tools", SU, tools=tools2),
    case("tool_roundtrip", TOOL_RT_ID, tools=tools2),
    case("no_think", [{"role": "system", "content": "Be brief /no_think"}, U1[0]]),
    case("last_assistant_tool_calls", [U1[0], {"role": "assistant", "content": "<think>x</think>Checking", "tool_calls": [WEATHER_CALL_STR]}], False),
    case("prefill_continue", [U1[0], {"role": "assistant", "content": "Partial"}], False, continue_final_message=True),
])
add("ByteDance-Seed/Seed-OSS-36B-Instruct", SEED, [
    case("tools", SU, tools=tools2 + [RET_TOOL, {"type": "function", "function": {"name": "r", "description": " d ", "parameters": {"type": "object", "properties": {"a": {"type": "array"}, "b": {"type": "boolean"}, "n": {"type": "number"}}, "required": ["a"]}, "returns": {"type": "object", "properties": {"ok": {"type": "boolean", "description": "ok?"}}}}}]),
    case("tools_json", U1, tools=tools2, use_json_tooldef=True),
    case("tool_roundtrip", [dict(m, reasoning_content=" think ") if m.get("tool_calls") else m for m in TOOL_RT_ID], tools=tools2),
    case("args_types", [U1[0], {"role": "assistant", "content": "c", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"s": "x", "n": 1.5, "b": True, "l": [1, "ü", None], "d": {"k": None, "q": "it's"}}}}]}], False),
    case("budget_0", U1, thinking_budget=0),
    case("budget_700", SU, thinking_budget=700),
    case("budget_big", SU, thinking_budget=99999),
    case("reasoning", [U1[0], {"role": "assistant", "content": "Fine", "reasoning_content": "  hmm  "}], False),
])
for k in ["google/gemma-7b-it", "openchat/openchat-3.5-0106", "openchat/openchat-3.6-8b-20240522", "01-ai/Yi-1.5-34B-Chat",
          "internlm/internlm2-chat-7b", "allenai/OLMo-7B-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "databricks/dbrx-instruct",
          "nvidia/Llama3-ChatQA-1.5-8B", "maywell/Synatra-Mixtral-8x7B", "TheBloke/CodeLlama-70B-Instruct-AWQ",
          "AI-Sweden-Models/gpt-sw3-356m-instruct", "aisingapore/sea-lion-7b-instruct", "jondurbin/bagel-34b-v0.2",
          "ise-uiuc/Magicoder-S-DS-6.7B", "UnicomLLM/Unichat-llama3-Chinese-8B-28K"]:
    add(k, OV_TOK[k], [])


def build():
    cases = []
    for name, src, tpl, tokens, convs in PLAN:
        for cname, msgs, agp, extra in convs:
            extra = dict(extra)
            tools = extra.pop("tools", None)
            documents = extra.pop("documents", None)
            context, result = render(tpl, msgs, agp, tokens, tools=tools, documents=documents, **extra)
            c = make_case(name, cname, src, tpl, context, result)
            if "strftime_now" in tpl and "error" not in result:
                c["clock_dependent"] = True
            cases.append(c)
    return cases


