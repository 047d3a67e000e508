#!/usr/bin/env python3
"""Chat-template fixtures for the C++ Jinja interpreter (engine/chat_template*.cpp).

Usage:  make_chat_template_fixtures.py OUTDIR

Writes OUTDIR/chat_templates.json:

  {"transformers_version", "jinja2_version",
   "cases": [{"template_name", "case", "source", "template",
              "context": {"messages": [...], "tools": null, "documents": null,
                          "add_generation_prompt": bool, "bos_token": ..., ... every other variable},
              "expected": "<rendered text>"            # or, when rendering raises:
              "error": "<str(exception)>", "error_type": "<exception class name>",
              "clock_dependent": true                  # only where strftime_now() reaches the output
             }]}

Every rendering is produced by transformers' own machinery, exactly as
tokenizer.apply_chat_template(conversation, tokenize=False, ...) / processor.apply_chat_template do
(transformers 5.x): the conversation is normalized (keys whose value is None are dropped),
render_jinja_template() is called with tools=None, documents=None (unless given),
add_generation_prompt, and **{**tokenizer.special_tokens_map, **kwargs}; it compiles the template in
transformers' ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[the
{% generation %} AssistantTracker, loopcontrols]) with its tojson override (ensure_ascii=False, indent,
separators, sort_keys), raise_exception, strftime_now, dict and namespace globals.  "context" is
exactly the set of variables the template saw, in the order they were passed (insertion order of
every mapping is significant: tojson and items() follow it); it includes transformers' own
preprocessing of the messages (reasoning fields are aliased: a message carrying reasoning_content /
thinking / reasoning gets all of "thinking" (first key) and "reasoning_content").  Each case is
replayed from the JSON-round-tripped context through the same compiled template and must give the
same text / error, so the C++ side can rely on "context" being complete.

special_tokens_map only holds the named tokens that are set (bos, eos, unk, sep, pad, cls, mask, in
that order); the values used per real template are those of the checkpoint's tokenizer_config.json.

Clock: strftime_now() calls the real clock.  The Llama-3.2 template reads date_string and only falls
back to strftime_now("%d %b %Y") when it is not defined; the cases that leave it undefined are marked
"clock_dependent" (the C++ side calls the real clock too, so a case rendered here on one day and
checked there on another -- e.g. across midnight -- differs in the date only).  Every other case
passes date_string explicitly or does not reach the clock.

Deterministic (no randomness, no network); takes ~2 s.  Needs transformers >= 5 and
jinja2 >= 3.1.6 (checked with transformers 5.24 / jinja2 3.1.6).  Run with build/pyenv/bin/python.
"""

import json
import os
import sys

import jinja2
import transformers
from transformers.utils import chat_template_utils as ctu
from transformers.utils.chat_template_utils import render_jinja_template

transformers.logging.set_verbosity_error()


def _helper(name, default):
    return getattr(ctu, name, default)


_identity = lambda x: x  # noqa: E731
# Private helpers apply_chat_template uses in transformers 5.x; identity where an older version lacks them.
_normalize_chat_messages = _helper(
    "_normalize_chat_messages", lambda msgs: [{k: v for k, v in m.items() if v is not None} for m in msgs]
)
_plain_template_data = _helper("_plain_template_data", _identity)
_alias_reasoning_fields = _helper("_alias_reasoning_fields", _identity)
_compile_jinja_template = ctu._compile_jinja_template

SPECIAL_TOKEN_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def special_tokens(**tokens):
    """tokenizer.special_tokens_map: the named special tokens that are set, in attribute order."""
    unknown = set(tokens) - set(SPECIAL_TOKEN_ATTRIBUTES)
    assert not unknown, unknown
    return {k: tokens[k] for k in SPECIAL_TOKEN_ATTRIBUTES if tokens.get(k) is not None}


# ------------------------------------------------------------------------------------------------
# Part 1: real chat templates, verbatim.  The Hugging Face Hub itself was not reachable, so each one
# was copied from a public source that carries the checkpoint's template; the source is noted next
# to each, and where a second independent copy was found the two were compared and are identical.
# ------------------------------------------------------------------------------------------------

# Source: guidance-ai/guidance guidance/chat.py, `llama2_template`, which records it as copied from
# https://huggingface.co/meta-llama/Llama-2-7b-chat-hf/blob/main/tokenizer_config.json#L12 .
# Identical copy: openvinotoolkit/openvino.genai tests/python_tests/tokenizer_configs.py
# ("meta-llama/Llama-2-7b-chat-hf").
LLAMA_2_7B_CHAT_HF = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

# Source: guidance-ai/guidance guidance/chat.py, `llama3_template`, copied there from
# https://huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct/blob/main/tokenizer_config.json#L2053 .
# Identical copy: openvinotoolkit/openvino.genai tests/python_tests/tokenizer_configs.py
# ("meta-llama/Meta-Llama-3-8B-Instruct").
META_LLAMA_3_8B_INSTRUCT = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n"
    "\n"
    "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "' }}{% endif %}"
)

# Source: openvinotoolkit/openvino.genai tests/python_tests/tokenizer_configs.py, entry
# "meta-llama/Meta-Llama-3.1-8B-Instruct" (the tokenizer_config.json
# chat_template; date_string defaults to the fixed "26 Jul 2024", no strftime_now).
# Identical to a second, independent copy found in another repository (a training-utils file).
LLAMA_3_1_8B_INSTRUCT = (
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message + builtin tools #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}"
    "}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSO"
    "N for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name"
    " and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no first us"
    "er message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name"
    " and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) "
    "%}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'"
    "] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n"
    "            {%- for arg_name, arg_val in tool_call.arguments | items %}\n"
    "                {{- arg_name + '=\"' + arg_val + '\"' }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- endif %}\n"
    "                {%- endfor %}\n"
    "            {{- \")\" }}\n"
    "        {%- else  %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "            {{- '\"parameters\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- \"}\" }}\n"
    "        {%- endif %}\n"
    "        {%- if builtin_tools is defined %}\n"
    "            {#- This means we're in ipython mode #}\n"
    "            {{- \"<|eom_id|>\" }}\n"
    "        {%- else %}\n"
    "            {{- \"<|eot_id|>\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

# Source: llama.cpp models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja (llama.cpp stores the Hub
# template verbatim; read from the ye-NX/llama.cpp copy of that directory).  Not in the requested list;
# added because it is the Llama template that calls strftime_now.
# Identical copy: guidance-ai/guidance guidance/chat.py (`llama3dot2_template`).
LLAMA_3_2_3B_INSTRUCT = (
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSO"
    "N for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name"
    " and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no first us"
    "er message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name"
    " and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) "
    "%}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'"
    "] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "        {{- '\"parameters\": ' }}\n"
    "        {{- tool_call.arguments | tojson }}\n"
    "        {{- \"}\" }}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

# Source: guidance-ai/guidance guidance/chat.py, `mistral_7b_instruct_template`, copied there from
# https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2/blob/main/tokenizer_config.json#L42 .
# Identical to openvinotoolkit/openvino.genai tests/python_tests/tokenizer_configs.py
# "mistralai/Mistral-7B-Instruct-v0.1" (same current template).
# The template ends in a newline, which Jinja drops (keep_trailing_newline=False).
MISTRAL_7B_INSTRUCT_V0_2 = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternat"
    "e user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of "
    "an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# Source: llama.cpp models/templates/google-gemma-2-2b-it.jinja (verbatim Hub template; ye-NX/llama.cpp copy).
# Identical copy: guidance-ai/guidance guidance/chat.py `gemma2_9b_it_template`, from
# https://huggingface.co/google/gemma-2-9b-it/blob/main/tokenizer_config.json#L1747 .
GEMMA_2_2B_IT = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n"
    "' + message['content'] | trim + '<end_of_turn>\n"
    "' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n"
    "'}}{% endif %}"
)

# Source: ShishirPatil/gorilla berkeley-function-call-leaderboard/bfcl/model_handler/local_inference/gemma.py,
# whose docstring pastes the Gemma-3 tokenizer_config.json "bos_token"/"chat_template" (that handler serves
# google/gemma-3-{1b,4b,12b,27b}-it; the paste does not name the size, so this is the Gemma-3 -it family
# template rather than a copy tied to the 4b checkpoint).  Identical copy: GEMMA3_CHAT_TEMPLATE in
# onnxruntime-extensions' chat-template C++ source.
GEMMA_3_IT = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n"
    "\n"
    "' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n"
    "\n"
    "' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\""
    ") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n"
    "' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n"
    "' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n"
    "'}}\n"
    "{%- endif -%}\n"
)

# Source: guidance-ai/guidance guidance/chat.py, `qwen2dot5_it_template`, copied there from
# https://huggingface.co/Qwen/
# Qwen2.5-0.5B-Instruct/blob/7ae557604adf67be50417f59c2c2f167def9a775/tokenizer_config.json#L198 .
# Identical copy: ShishirPatil/gorilla .../bfcl/model_handler/local_inference/qwen.py (docstring).
# No copy tied to Qwen2.5-7B-Instruct was found; the Qwen2.5 -Instruct sizes are believed to share this.
QWEN2_5_INSTRUCT = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou"
    " are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and argum"
    "ents within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"argume"
    "nts\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assis"
    "tant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message"
    ".role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Source: guidance-ai/guidance guidance/chat.py, `qwen3_it_template`, copied there from
# https://huggingface.co/Qwen/Qwen3-8B/blob/main/tokenizer_config.json#L230 .  (Differs from the older
# llama.cpp models/templates/Qwen-Qwen3-0.6B.jinja only by the later upstream `content is string` changes.)
QWEN3_8B = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are"
    " provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and argum"
    "ents within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"argume"
    "nts\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n"
    "{%- for message in messages[::-1] %}\n"
    "    {%- set index = (messages|length - 1) - loop.index0 %}\n"
    "    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(m"
    "essage.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %"
    "}\n"
    "        {%- set ns.multi_step_tool = false %}\n"
    "        {%- set ns.last_query_index = index %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.content is string %}\n"
    "        {%- set content = message.content %}\n"
    "    {%- else %}\n"
    "        {%- set content = '' %}\n"
    "    {%- endif %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {%- set reasoning_content = '' %}\n"
    "        {%- if message.reasoning_content is string %}\n"
    "            {%- set reasoning_content = message.reasoning_content %}\n"
    "        {%- else %}\n"
    "            {%- if '</think>' in content %}\n"
    "                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<th"
    "ink>')[-1].lstrip('\\n') %}\n"
    "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "            {%- endif %}\n"
    "        {%- endif %}\n"
    "        {%- if loop.index0 > ns.last_query_index %}\n"
    "            {%- if loop.last or (not loop.last and reasoning_content) %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n'"
    ") + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "            {%- else %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "            {%- endif %}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}"
)

# Source: guidance-ai/guidance guidance/chat.py, `phi3_mini_template`, copied there from
# https://huggingface.co/microsoft/Phi-3-mini-4k-instruct/blob/main/tokenizer_config.json#L119 .
# Identical copy: openvinotoolkit/openvino.genai tests/python_tests/tokenizer_configs.py
# ("microsoft/Phi-3-mini-4k-instruct").
PHI_3_MINI_4K_INSTRUCT = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% elif message['role'] == 'user' %}{{'<|user|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n"
    "' }}{% else %}{{ eos_token }}{% endif %}"
)

# Source: guidance-ai/guidance guidance/chat.py, `phi_4_mini_template`, copied there on 2025-06-16 from
# https://huggingface.co/microsoft/Phi-4-mini-instruct/blob/main/tokenizer_config.json#L104 .
PHI_4_MINI_INSTRUCT = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool"
    "|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}"
    "{{ eos_token }}{% endif %}"
)

# Source: openvinotoolkit/openvino.genai src/cpp/src/tokenizer/chat_template_fallback_map.hpp, entry
# "// llava-hf/llava-1.5-7b-hf" (the processor's chat_template.json template).  Identical to a second
# openvino.genai copy labelled "llava-1.5, llava-v1.6-vicuna (chat_template.json)".
LLAVA_1_5_7B_HF = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n"
    "' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

REAL_SOURCES = {
    "meta-llama/Llama-2-7b-chat-hf": "guidance-ai/guidance guidance/chat.py (llama2_template)",
    "meta-llama/Meta-Llama-3-8B-Instruct": "guidance-ai/guidance guidance/chat.py (llama3_template)",
    "meta-llama/Llama-3.1-8B-Instruct": "openvinotoolkit/openvino.genai tests/python_tests/tokenizer_configs.py (\"meta-llama/Meta-Llama-3.1-8B-Instruct\")",
    "meta-llama/Llama-3.2-3B-Instruct": "llama.cpp models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja (ye-NX/llama.cpp)",
    "mistralai/Mistral-7B-Instruct-v0.2": "guidance-ai/guidance guidance/chat.py (mistral_7b_instruct_template)",
    "google/gemma-2-2b-it": "llama.cpp models/templates/google-gemma-2-2b-it.jinja (ye-NX/llama.cpp)",
    "google/gemma-3-4b-it": "ShishirPatil/gorilla berkeley-function-call-leaderboard/bfcl/model_handler/local_inference/gemma.py",
    "Qwen/Qwen2.5-0.5B-Instruct": "guidance-ai/guidance guidance/chat.py (qwen2dot5_it_template)",
    "Qwen/Qwen3-8B": "guidance-ai/guidance guidance/chat.py (qwen3_it_template)",
    "microsoft/Phi-3-mini-4k-instruct": "guidance-ai/guidance guidance/chat.py (phi3_mini_template)",
    "microsoft/Phi-4-mini-instruct": "guidance-ai/guidance guidance/chat.py (phi_4_mini_template)",
    "llava-hf/llava-1.5-7b-hf": "openvinotoolkit/openvino.genai src/cpp/src/tokenizer/chat_template_fallback_map.hpp",
}

# ------------------------------------------------------------------------------------------------
# Conversations used with the real templates
# ------------------------------------------------------------------------------------------------

U1 = [{"role": "user", "content": "Hello, how are you?"}]
SU = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
UAUA = [
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "Tell me a joke."},
    {"role": "assistant", "content": "Why did the chicken cross the road? To get to the other side."},
]
SUA = [
    {"role": "system", "content": "You are a pirate. Answer like one."},
    {"role": "user", "content": "Where is the treasure?"},
    {"role": "assistant", "content": "Arr, buried on the island, matey!"},
]
UAU = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And times 3?"},
]
TRICKY = [
    {
        "role": "user",
        "content": "  Leading and trailing spaces  \n\nSecond paragraph: ünïcödé ß, 中文测试, 日本語, Ελληνικά, "
        "emoji 🚀👍🏽👨\u200d👩\u200d👧, combining e\u0301, RTL עברית.\n\tTabbed line\r\nCRLF line\n  ",
    },
    {"role": "assistant", "content": "\n\nSure! Here is code:\n```python\nprint(\"hi\")  # it's fine\n```\n   "},
    {
        "role": "user",
        "content": "Literal special tokens: <s> </s> <unk> [INST] [/INST] <<SYS>> <|im_start|>user\n<|im_end|> "
        "<|eot_id|> <|start_header_id|>system<|end_header_id|> <start_of_turn>model <end_of_turn> "
        "<|endoftext|> <|user|> <|end|> <image> <think></think> and jinja-looking text {{ messages }} "
        "{% if true %}x{% endif %} {# c #} plus back\\slash, \"double\" and 'single' quotes.",
    },
]

STANDARD_CONVERSATIONS = [
    ("user", U1, True),
    ("system_user", SU, True),
    ("multi_turn", UAUA, False),
    ("system_user_assistant", SUA, False),
    ("multi_turn_generation", UAU, True),
    ("tricky_content", TRICKY, True),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web (résumé: «quotes» allowed)",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "max_results": {"type": "integer", "default": 5}},
            "required": ["query"],
        },
    },
}
WEATHER_CALL = {"type": "function", "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}
SEARCH_CALL = {"type": "function", "function": {"name": "web_search", "arguments": {"query": "Eiffel Tower height", "max_results": 3}}}

LLAMA3_TOKENS = special_tokens(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
QWEN_TOKENS = special_tokens(eos_token="<|im_end|>", pad_token="<|endoftext|>")
GEMMA_TOKENS = special_tokens(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
MISTRAL_TOKENS = special_tokens(bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def parts(*items):
    out = []
    for it in items:
        out.append({"type": "image"} if it == "<image>" else {"type": "text", "text": it})
    return out


def real_cases():
    """(template_name, source, template, tokens, [(case, messages, add_generation_prompt, extra)])"""
    R = []

    def add(name, template, tokens, extra_cases=(), standard=True):
        cases = [(c, m, g, {}) for c, m, g in STANDARD_CONVERSATIONS] if standard else []
        cases += list(extra_cases)
        R.append((name, REAL_SOURCES[name], template, tokens, cases))

    add("meta-llama/Llama-2-7b-chat-hf", LLAMA_2_7B_CHAT_HF, MISTRAL_TOKENS, [
        ("error_roles_not_alternating", [SU[0], {"role": "assistant", "content": "Hi"}, U1[0]], True, {}),
        ("error_two_user_turns", [U1[0], U1[0]], True, {}),
        ("system_only", SU[:1], True, {}),
    ])
    add("meta-llama/Meta-Llama-3-8B-Instruct", META_LLAMA_3_8B_INSTRUCT, LLAMA3_TOKENS, [
        ("empty_content", [{"role": "user", "content": ""}], True, {}),
    ])
    tool_roundtrip = [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "name": "get_current_weather", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
    ]
    add("meta-llama/Llama-3.1-8B-Instruct", LLAMA_3_1_8B_INSTRUCT, LLAMA3_TOKENS, [
        ("custom_date_string", SU, True, {"date_string": "01 Jan 2025"}),
        ("tools_in_user_message", SU, True, {"tools": [WEATHER_TOOL]}),
        ("tools_in_system_message", SU, True, {"tools": [WEATHER_TOOL, SEARCH_TOOL], "tools_in_user_message": False}),
        ("tool_call_roundtrip", tool_roundtrip, True, {"tools": [WEATHER_TOOL]}),
        ("tool_content_mapping", [U1[0], {"role": "assistant", "tool_calls": [WEATHER_CALL]},
                                  {"role": "ipython", "content": {"temperature": 22, "sky": "clear"}}], True, {}),
        ("builtin_tools", [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Search for the weather in Paris."},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "brave_search", "arguments": {"query": "weather in Paris"}}}]},
            {"role": "ipython", "content": "Sunny, 22 C"},
        ], True, {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}),
        ("error_two_tool_calls", [U1[0], {"role": "assistant", "tool_calls": [WEATHER_CALL, SEARCH_CALL]}], True, {}),
        ("error_tools_without_user_message", SU[:1], True, {"tools": [WEATHER_TOOL]}),
    ])
    add("meta-llama/Llama-3.2-3B-Instruct", LLAMA_3_2_3B_INSTRUCT, LLAMA3_TOKENS, [
        ("custom_date_string", SU, True, {"date_string": "29 Feb 2024"}),
        ("tools_custom_date", SU, True, {"tools": [WEATHER_TOOL], "date_string": "26 Jul 2024"}),
        ("tool_call_roundtrip", tool_roundtrip, True, {"tools": [WEATHER_TOOL], "date_string": "26 Jul 2024"}),
        # No date_string: the template calls strftime_now("%d %b %Y") -- the real clock.
        ("clock_date", SU, True, {}),
    ], standard=False)
    add("mistralai/Mistral-7B-Instruct-v0.2", MISTRAL_7B_INSTRUCT_V0_2, MISTRAL_TOKENS, [
        ("error_two_user_turns", [U1[0], U1[0]], True, {}),
        ("error_tool_role", [U1[0], {"role": "tool", "content": "42"}], True, {}),
    ])
    add("google/gemma-2-2b-it", GEMMA_2_2B_IT, GEMMA_TOKENS, [
        ("error_assistant_first", [{"role": "assistant", "content": "Hi"}], True, {}),
    ])
    add("google/gemma-3-4b-it", GEMMA_3_IT, GEMMA_TOKENS, [
        ("image_and_text_parts", [SU[0], {"role": "user", "content": parts("<image>", "  Describe this image.  ")}], True, {}),
        ("system_as_parts", [{"role": "system", "content": parts("System prompt in parts.")},
                             {"role": "user", "content": parts("First", "<image>", "second")},
                             {"role": "assistant", "content": parts("A cat.")},
                             {"role": "user", "content": "Thanks"}], True, {}),
        # content None is dropped by apply_chat_template's normalization -> undefined in the template
        ("assistant_content_none", [U1[0], {"role": "assistant", "content": None}, {"role": "user", "content": "Still there?"}], True, {}),
        ("error_invalid_content_type", [{"role": "user", "content": 12345}], True, {}),
    ])
    add("Qwen/Qwen2.5-0.5B-Instruct", QWEN2_5_INSTRUCT, QWEN_TOKENS, [
        ("tools", U1, True, {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
        ("tools_with_system", SU, True, {"tools": [WEATHER_TOOL]}),
        ("tool_calls_roundtrip", [
            {"role": "user", "content": "Weather in Paris and height of the Eiffel Tower?"},
            {"role": "assistant", "content": "Let me check both.", "tool_calls": [WEATHER_CALL, SEARCH_CALL]},
            {"role": "tool", "name": "get_current_weather", "content": "{\"temperature\": 22}"},
            {"role": "tool", "name": "web_search", "content": "330 m"},
            {"role": "assistant", "content": "It is 22 °C and the tower is 330 m tall."},
            {"role": "user", "content": "Thanks!"},
        ], True, {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ])
    add("Qwen/Qwen3-8B", QWEN3_8B, QWEN_TOKENS, [
        ("enable_thinking_false", U1, True, {"enable_thinking": False}),
        ("enable_thinking_true", U1, True, {"enable_thinking": True}),
        ("reasoning_content_last_turn", [U1[0], {"role": "assistant", "reasoning_content": "\nThe user greets me.\n", "content": "\nI'm fine, thanks!"}], False, {}),
        # transformers aliases the older field names: "reasoning" -> thinking + reasoning_content
        ("reasoning_field_alias", [U1[0], {"role": "assistant", "content": "Fine.", "reasoning": "Be polite."}], False, {}),
        ("think_tags_in_content", [
            {"role": "system", "content": "Think step by step."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\nIt is 4."},
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "<think>Again add.</think>6"},
        ], False, {}),
        ("tools_multi_step", [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "<think>\nNeed the tool.\n</think>\n\n", "tool_calls": [
                {"type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
            {"role": "tool", "content": "{\"temperature\": 22}"},
            {"role": "user", "content": "<tool_response>\n{\"humidity\": 40}\n</tool_response>"},
            {"role": "assistant", "content": "<think>\nDone.\n</think>\n\nIt is 22 degrees.", "tool_calls": [WEATHER_CALL]},
        ], True, {"tools": [WEATHER_TOOL]}),
        ("list_content", [{"role": "user", "content": parts("text in a part")}], True, {}),
    ])
    add("microsoft/Phi-3-mini-4k-instruct", PHI_3_MINI_4K_INSTRUCT,
        special_tokens(bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>"))
    add("microsoft/Phi-4-mini-instruct", PHI_4_MINI_INSTRUCT,
        special_tokens(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>"), [
        ("system_with_tools", [{"role": "system", "content": "You are a helpful assistant with some tools.",
                                "tools": json.dumps([WEATHER_TOOL["function"]], ensure_ascii=False)}, U1[0]], True, {}),
        ("system_tools_none_dropped", [{"role": "system", "content": "No tools.", "tools": None}, U1[0]], True, {}),
    ])
    add("llava-hf/llava-1.5-7b-hf", LLAVA_1_5_7B_HF,
        special_tokens(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"), [
        ("image_and_text", [{"role": "user", "content": parts("What is shown in this image?", "<image>")}], True, {}),
        ("multi_turn_parts", [
            {"role": "user", "content": parts("<image>", "Describe it.")},
            {"role": "assistant", "content": parts("A dog on a beach.")},
            {"role": "user", "content": parts("<image>", "<image>", "Compare these two.", "Be short.")},
        ], True, {}),
        ("system_parts", [{"role": "system", "content": parts("Ignored role prefix.")},
                          {"role": "user", "content": parts("Hi")}], False, {}),
    ])
    return R


# ------------------------------------------------------------------------------------------------
# Part 2: synthetic templates (written for these fixtures), each exercising Jinja features that
# chat templates use.  (template_name, template, [(case, context overrides)])
# ------------------------------------------------------------------------------------------------


def _t(s):
    """Template text from a triple-quoted literal: drop the newline right after the opening quotes."""
    return s[1:] if s.startswith("\n") else s


SYN_TOKENS = special_tokens(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
M_UA = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
M_SUAU = [
    {"role": "system", "content": "Be nice."},
    {"role": "user", "content": "Question one?"},
    {"role": "assistant", "content": "Answer one.", "name": "bot"},
    {"role": "user", "content": "Question two, which is longer?", "name": "alice"},
]
M_TOOL = M_SUAU[:2] + [
    {"role": "assistant", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": "sunny"},
    {"role": "model", "content": "It is sunny."},
]
M_PARTS = [
    {"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image"}, {"type": "text", "text": "please"}]},
    {"role": "assistant", "content": "A red square."},
    {"role": "user", "content": [{"type": "image", "url": "http://example.com/y.png"}, {"type": "video"}]},
]

SYNTHETIC = [
    ("ws_dash_control", _t(r'''
{%- for m in messages -%}
    [{{- m.role -}}]
    {{ m.content }}
{%- endfor %}
END   {{- '!' }}   {{ 'x' -}}
   tail
  {{- ' joined' }}
'''), [("ua", {"messages": M_UA})]),

    ("trim_lstrip_blocks", _t(r'''
<start>
    {% for m in messages %}
    {{ m.role }}: {{ m.content }}
    {% endfor %}
    {%+ if true %}kept-indent{% endif %}
{% if add_generation_prompt %}
  gen
{% endif %}
  {{ 'expression lines keep their indent' }}
	{% if true %}tab-indented block tag{% endif %}
text {% if true %}inline{% endif %} text
<end>
'''), [("gen", {"messages": M_UA, "add_generation_prompt": True}), ("nogen", {"messages": M_UA})]),

    ("comments", _t(r'''
A{# a comment #}B
{# a comment on its own line #}
C {#- trims left #} D {#- and right -#}
   E
    {# indented comment line #}
{#
  multi-line comment with {{ braces }} and {% tags %}
#}
F{{ messages|length }}
'''), [("ua", {"messages": M_UA})]),

    ("set_namespace_scoping", _t(r'''
{%- set x = 'outer' -%}
{%- set ns = namespace(count=0, last='', found=false) -%}
{%- for m in messages -%}
  {%- set x = 'inner' -%}
  {%- set ns.count = ns.count + 1 -%}
  {%- if m.role == 'user' %}{% set ns.found = true %}{% set ns.last = m.content %}{% endif -%}
{%- endfor -%}
x={{ x }} count={{ ns.count }} found={{ ns.found }} last={{ ns.last }}
{% if true %}{% set y = 'set-in-if' %}{% endif %}y={{ y }}
{% set a, b = 1, 'two' %}a={{ a }} b={{ b }}
{% set block %}captured {{ messages|length }} {{ x }}{% endset %}block=[{{ block }}]
{% set ns2 = namespace() %}{% set ns2.v = 'late' %}ns2={{ ns2.v }}
{% set ns3 = namespace(items=[1, 2]) %}{% set ns3.items = ns3.items + [3] %}ns3={{ ns3.items }}
{% set messages = messages[1:] %}rebound={{ messages|length }}
'''), [("suau", {"messages": M_SUAU})]),

    ("loop_variables", _t(r'''
{% for m in messages %}
{{ loop.index0 }}/{{ loop.index }}/{{ loop.revindex0 }}/{{ loop.revindex }} of {{ loop.length }} first={{ loop.first }} last={{ loop.last }} prev={{ loop.previtem.role if loop.previtem is defined else '-' }} next={{ loop.nextitem.role if loop.nextitem is defined else '-' }} {{ loop.cycle('odd', 'even') }}
{% endfor %}
'''), [("suau", {"messages": M_SUAU}), ("single", {"messages": M_UA[:1]})]),

    ("for_filter_else", _t(r'''
{% for m in messages if m.role == 'user' %}
{{ loop.index }}. {{ m.content }} ({{ loop.length }}{{ ', last' if loop.last }})
{% else %}
no user messages
{% endfor %}
{% for x in [] %}never{% else %}empty-else{% endfor %}
{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %}
{% for a, b in [[1, 2], [3, 4]] %}({{ a }},{{ b }}){% endfor %}
{% for c in 'abc' %}{{ c }}.{% endfor %} {% for k in {'p': 1, 'q': 2} %}{{ k }}{% endfor %}
'''), [("suau", {"messages": M_SUAU}),
       ("no_users", {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})]),

    ("break_continue", _t(r'''
{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }} {% endfor %}|
{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.role }}{% if loop.index >= 3 %}{% break %}{% endif %};{% endfor %}|
{% for m in messages %}{% for c in m.content %}{% if c == ' ' %}{% break %}{% endif %}{{ c }}{% endfor %}/{% endfor %}
'''), [("suau", {"messages": M_SUAU})]),

    ("nested_loops", _t(r'''
{% for m in messages %}
{% set outer_index = loop.index0 %}
{% if m.content is string %}
[{{ outer_index }}:string={{ m.content }}]
{% else %}
{% for part in m.content %}
[{{ outer_index }}.{{ loop.index0 }}/{{ loop.length }}:{{ part.type }}{% if part.type == 'text' %}={{ part.text }}{% endif %}]
{% endfor %}
{% endif %}
{% endfor %}
{% for i in range(2) %}{% for j in range(3) %}{{ i }}{{ j }}{{ ' ' if not loop.last }}{% endfor %}{{ '|' if not loop.last }}{% endfor %}
'''), [("parts", {"messages": M_PARTS})]),

    ("if_elif_else", _t(r'''
{% for m in messages %}
{% if m.role == 'system' %}S:{{ m.content }}
{% elif m.role == 'user' and m.content|length > 15 %}U-long:{{ m.content }}
{% elif m.role == 'user' %}U:{{ m.content }}
{% elif m.role in ['assistant', 'model'] and m.content is defined %}A:{{ m.content }}
{% elif m.tool_calls %}calls:{{ m.tool_calls|length }}
{% else %}?:{{ m.role }}
{% endif %}
{% endfor %}
{% if not messages %}none{% elif messages|length == 1 %}one{% else %}many{% endif %}
'''), [("tool", {"messages": M_TOOL}), ("one", {"messages": M_UA[:1]})]),

    ("slicing_indexing", _t(r'''
first={{ messages[0].role }} last={{ messages[-1].role }} second_last={{ messages[-2].content }}
tail={{ messages[1:]|map(attribute='role')|join(',') }}
head={{ messages[:-1]|map(attribute='role')|join(',') }}
rev={{ messages[::-1]|map(attribute='role')|join(',') }}
mid={{ messages[1:3]|map(attribute='role')|join(',') }}
step={{ messages[::2]|map(attribute='role')|join(',') }}
s={{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[-2:] }} {{ 'abcdef'[::2] }} {{ 'abcdef'[4:1:-1] }} {{ 'abcdef'[0] }} {{ 'abcdef'[-1] }} {{ 'abcdef'[:100] }}
l={{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][-3:-1] }} {{ [1, 2, 3][5:] }}
out_of_range=[{{ messages[10] }}] empty_slice={{ messages[10:]|length }} nested={{ messages[0]['content'][0] }}
'''), [("suau", {"messages": M_SUAU})]),

    ("tests", _t(r'''
{% set d = {'a': 1} %}{% set l = [1, 2] %}{% set n = none %}
defined: {{ messages is defined }} {{ nothere is defined }} {{ nothere is not defined }} {{ d.a is defined }} {{ d.zz is defined }} {{ d.zz is undefined }}
none: {{ n is none }} {{ n is not none }} {{ 0 is none }} {{ tools is none }} {{ documents is none }} {{ tools is defined }}
string: {{ 'x' is string }} {{ 1 is string }} {{ l is string }} {{ messages[0].content is string }}
mapping: {{ d is mapping }} {{ l is mapping }} {{ messages[0] is mapping }} {{ 'x' is mapping }}
iterable: {{ l is iterable }} {{ 'abc' is iterable }} {{ d is iterable }} {{ 3 is iterable }} {{ none is iterable }}
sequence: {{ l is sequence }} {{ 'abc' is sequence }} {{ d is sequence }} {{ 3 is sequence }}
number: {{ 1 is number }} {{ 1.5 is number }} {{ '1' is number }} {{ none is number }}
integer/float: {{ 1 is integer }} {{ 1.0 is integer }} {{ 1.0 is float }} {{ 1 is float }}
boolean: {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ true is boolean }} {{ 1 is boolean }} {{ none is boolean }} {{ true is not false }}
misc: {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby(3) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 1 is in([1, 2]) }} {{ 'a' is eq('a') }} {{ 2 is gt(1) }} {{ n is sameas(none) }}
'''), [("suau", {"messages": M_SUAU})]),

    ("arithmetic", _t(r'''
{{ 1 + 2 }} {{ 7 - 10 }} {{ 3 * 4 }} {{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }}
{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 10 / 4 }} {{ 2.0 * 3 }} {{ 7.5 // 2 }} {{ 7.5 % 2 }} {{ 1e3 }} {{ 1_000 }} {{ 2.5e-3 }} {{ 3 * 1.0 }}
{{ -3 }} {{ - (2 + 3) }} {{ +5 }} {{ (1 + 2) * 3 }} {{ 1 + 2 * 3 }} {{ 10 - 2 - 3 }} {{ 2 * 3 % 4 }} {{ -3|abs }} {{ -(3|abs) }} {{ not true|string }}
{{ messages|length * 2 + 1 }} {{ (messages|length - 1) - 0 }} {{ messages|length is even }}
{{ 'ab' * 3 }} [{{ '-' * 0 }}] {{ [1, 2] + [3] }} {{ 'a' + 'b' }}
'''), [("ua", {"messages": M_UA})]),

    ("float_repr", _t(r'''
{{ 10 / 5 }} {{ 1 / 7 }} {{ 1e20 }} {{ 1e16 }} {{ 1e15 }} {{ 123456789.0 }} {{ 0.0001 }} {{ 0.00001 }} {{ 100.0 }} {{ -0.5 }} {{ 2.50 }} {{ 1.0e-7 }} {{ 3.0|int }} {{ 7|float }}
'''), [("plain", {"messages": M_UA})]),

    ("compare_logic_concat", _t(r'''
{{ 1 < 2 }} {{ 2 <= 2 }} {{ 3 > 4 }} {{ 3 >= 4 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ none == none }} {{ 'x' == none }}
{{ 'ell' in 'hello' }} {{ 'x' not in 'hello' }} {{ 2 in [1, 2] }} {{ 'role' in messages[0] }} {{ 'nope' not in messages[0] }} {{ not 'a' in 'abc' }}
{{ true and false }} {{ true or false }} {{ not true }} {{ not (1 > 2) }} {{ '' or 'fallback' }} {{ 'first' or 'second' }} {{ 0 and 1 }} {{ 1 and 'yes' }} {{ none or [] }} {{ not '' }} {{ not [] }} {{ not {} }} {{ not 0.0 }}
{{ 'n=' ~ 3 }} {{ 1 ~ 2 }} {{ 'x' ~ none ~ true ~ 1.5 }} {{ messages[0].role ~ ':' ~ messages[0].content }} {{ [1] ~ {'a': 1} }}
{{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ messages[0] == messages[0] }} {{ messages[0] == messages[1] }} {{ messages[-1] == messages|last }}
'''), [("ua", {"messages": M_UA})]),

    ("inline_if", _t(r'''
{{ 'yes' if messages else 'no' }} [{{ 'shown' if false }}] [{{ 'shown' if true }}] {{ ('a' if true else 'b') ~ 'c' }} {{ 1 if messages|length > 1 else 2 if messages else 3 }}
{% set label = 'system' if messages[0].role == 'system' else 'no-system' %}{{ label }}
{{ (messages|selectattr('role', 'equalto', 'system')|list|last).content|trim if (messages|selectattr('role', 'equalto', 'system')|list) else '' }}
{{ messages[0].content if messages[0].content is string else messages[0].content[0].text }}
'''), [("suau", {"messages": M_SUAU}), ("parts", {"messages": M_PARTS})]),

    ("literals", _t(r'''
{{ 'single' }} {{ "double" }} {{ 'it\'s' }} {{ "say \"hi\"" }} {{ "it's" }} {{ 'a "b"' }}
[{{ 'tab\there' }}] [{{ 'line1\nline2' }}] [{{ 'back\\slash' }}] [{{ '\u00e9\x41' }}] [{{ 'é€😀' }}] [{{ '' }}]
{{ 42 }} {{ -0 }} {{ 3.14 }} {{ 1.0 }} {{ 0.5 }} {{ 100000000000 }}
{{ [1, 'two', 3.0, none, true, false] }} {{ [] }} {{ {} }} {{ {'k': 'v', 'n': 1, 'l': [1], 'd': {'x': none}} }} {{ ["it's", 'say "x"'] }}
{{ (1, 2) }} {{ (1,) }} {{ () }} {{ [('a', 1)] }}
{{ true }} {{ false }} {{ none }} {{ True }} {{ False }} {{ None }}
{{ "it's"|length }} {{ 'abc'[1] }}
{% raw %}{{ not rendered }} {% also not %}{% endraw %}
'''), [("plain", {"messages": M_UA})]),

    ("filters_strings", _t(r'''
[{{ '  pad  '|trim }}] [{{ 'xxhixx'|trim('x') }}] {{ 'Hello'|length }} {{ 'Hello'|count }} {{ 'mIxEd'|upper }} {{ 'mIxEd'|lower }} {{ 'hello WORLD'|capitalize }} {{ 'hello big-world of_code'|title }}
{{ 'a-b-a'|replace('a', 'x') }} {{ 'a-b-a'|replace('a', 'x', 1) }} {{ 'abc'|reverse }} {{ 'abc'|list }} {{ 'abc'|first }} {{ 'abc'|last }}
{{ 42|string }} {{ none|string }} {{ true|string }} {{ [1, 'a']|string }} {{ {'k': none}|string }} {{ 1.50|string }}
{{ '42'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.99|int }} {{ -3.99|int }} {{ true|int }} {{ '2.5'|float * 2 }} {{ 3|float }} {{ 'x'|float }}
{{ 2.567|round }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.567|round(1, 'floor') }} {{ 2.561|round(2, 'ceil') }} {{ 7|round }}
{{ -3|abs }} {{ (-2.5)|abs }} {{ 7|abs }}
{{ '<b>&amp;'|safe }} {{ '<b>' }} {{ messages[0].content|upper|replace('HI', 'Hey') }}
'''), [("ua", {"messages": M_UA})]),

    ("filters_collections", _t(r'''
{% set words = ['banana', 'apple', 'cherry'] %}
{{ words|length }} {{ words|count }} {{ words|first }} {{ words|last }} {{ words|join }} {{ words|join(', ') }} {{ words|reverse|join(' ') }} {{ words|reverse|list }} {{ words|list }}
{{ messages|map(attribute='role')|join('/') }} {{ messages|map(attribute='name', default='anon')|join('/') }} {{ words|map('upper')|join(' ') }} {{ messages|map(attribute='role')|list }}
{{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='role')|list }} {{ messages|selectattr('role', '==', 'system')|list|length }}
{{ messages|selectattr('name')|list|length }} {{ messages|rejectattr('name')|list|length }} {{ messages|selectattr('name', 'defined')|map(attribute='name')|join(',') }} {{ messages|selectattr('name', 'undefined')|list|length }}
{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [none, 1, '', 'a', 0]|select|list }} {{ [1, 2, 3]|select('gt', 1)|list }} {{ ['a', 'b']|select('in', ['b', 'c'])|list }}
{{ {'b': 2, 'a': 1}|items|list }} {% for k, v in {'z': 1, 'y': 2}|items %}{{ k }}{{ v }}{% endfor %}
{{ messages|join(', ', attribute='role') }} {{ [1, 2, 3]|join('+') }} {{ 'abc'|join('.') }} {{ (messages|last).content }} {{ messages|first|attr('role') }}
'''), [("suau", {"messages": M_SUAU})]),

    ("filters_unique_sort_minmax", _t(r'''
{{ [3, 1, 2, 3, 1]|unique|list }} {{ ['b', 'a', 'b']|unique|list }} {{ ['B', 'b', 'a']|unique|list }} {{ ['B', 'b']|unique(case_sensitive=true)|list }}
{{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'C', 'a']|sort }} {{ ['b', 'C', 'a']|sort(case_sensitive=true) }} {{ messages|sort(attribute='role')|map(attribute='role')|join(',') }}
{{ [3, 1, 2]|max }} {{ [3, 1, 2]|min }} {{ [3, 1, 2]|sum }} {{ messages|map(attribute='content')|map('length')|sum }} {{ {'b': 2, 'a': 1}|dictsort }}
'''), [("suau", {"messages": M_SUAU})]),

    ("tojson", _t(r'''
{{ messages|tojson }}
{{ {'name': 'café', 'emoji': '🚀', 'quote': "a\"b", 'html': '<&>\'', 'nl': 'x\ny\tz', 'num': 1.5, 'int': 2, 'neg': -0.25, 'b': true, 'n': none, 'l': [1, [2]], 'big': 12345678901234}|tojson }}
{{ tool_spec|tojson(indent=2) }}
{{ tool_spec|tojson(indent=4) }}
{{ 'plain "string"'|tojson }} {{ 42|tojson }} {{ none|tojson }} {{ true|tojson }} {{ [1, 'a']|tojson }} {{ {}|tojson }} {{ []|tojson(indent=2) }} {{ {'a': []}|tojson(indent=2) }}
{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ {'a': [1, 2], 'b': 'c'}|tojson(separators=(',', ':')) }} {{ '\u2028 é \x7f'|tojson }}
'''), [("tool", {"messages": M_UA, "tool_spec": WEATHER_TOOL})]),

    ("indent_filter", _t(r'''
{% set text = 'line one\nline two\n\nline four' %}
[{{ text|indent }}]
[{{ text|indent(2) }}]
[{{ text|indent(2, true) }}]
[{{ text|indent(3, first=true, blank=true) }}]
[{{ 'single'|indent(4, first=true) }}]
[{{ 'x\n'|indent(2) }}]
[{{ text|indent('> ') }}]
'''), [("plain", {"messages": M_UA})]),

    ("string_methods", _t(r'''
[{{ '  both  '.strip() }}] [{{ '  left'.lstrip() }}] [{{ 'right  '.rstrip() }}] [{{ 'xxmidxx'.strip('x') }}] [{{ '\n\nnl\n'.strip('\n') }}] [{{ 'abcba'.lstrip('ab') }}] [{{ 'abcba'.rstrip('ab') }}] [{{ ' \t\n '.strip() }}]
{{ ' a  b\tc\n'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'k=v=w'.split('=')[-1] }} {{ 'abc'.split('x') }} {{ ''.split() }} {{ 'a<sep>b'.split('<sep>') }}
{{ 'hello'.startswith('he') }} {{ 'hello'.startswith('lo') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.endswith('') }}
{{ 'MiXeD'.upper() }} {{ 'MiXeD'.lower() }} {{ 'hello world'.title() }} {{ 'hello World'.capitalize() }} {{ 'a-b-c'.replace('-', '+') }} {{ 'aaa'.replace('a', 'b', 2) }}
{{ messages[0].content.split(' ')[0] }} {{ messages[0]['content'].strip().lower() }} {{ messages[1].content.split('</think>')[-1].lstrip('\n') }} {{ messages[1].content.split('</think>')[0].split('<think>')[-1].strip() }}
'''), [("think", {"messages": [{"role": "user", "content": "  Hello World  "},
                                {"role": "assistant", "content": "<think>\n reasoning \n</think>\n\nanswer"}]})]),

    ("dict_methods_attr_access", _t(r'''
{% set d = {'b': 2, 'a': 1, 'c': none} %}
{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} keys={{ d.keys()|list }} values={{ d.values()|list }}
get={{ d.get('a') }} get_missing={{ d.get('zz') }} get_default={{ d.get('zz', 'dflt') }} get_none={{ d.get('c', 'unused') }} in={{ 'a' in d }} len={{ d|length }}
attr={{ d.a }} sub={{ d['a'] }} missing_attr=[{{ d.zz }}] missing_sub=[{{ d['zz'] }}] missing_defined={{ d.zz is defined }}
{% for m in messages %}{{ m.role }}|{{ m['role'] }}|{{ m.get('name', '-') }}|[{{ m.name }}]|{{ m.name is defined }}|{{ m.content|default('no-content') }}
{% endfor %}
{{ dict(x=1, y='two') }} {{ dict(x=1).x }} {{ messages[0].items()|list|length }} {{ messages[0].keys()|list }}
'''), [("suau", {"messages": M_SUAU})]),

    ("default_filter", _t(r'''
[{{ missing|default('dflt') }}] [{{ ''|default('dflt') }}] [{{ ''|default('dflt', true) }}] [{{ none|default('dflt') }}] [{{ none|default('dflt', boolean=true) }}] [{{ 0|default(5, true) }}] [{{ 'set'|default('dflt') }}] [{{ missing|d('short') }}] [{{ messages[0].nope|default(messages[0].role) }}] [{{ missing|default }}]
'''), [("ua", {"messages": M_UA})]),

    ("undefined_behaviour", _t(r'''
[{{ nothere }}] [{{ messages[0].nothere }}] [{{ nothere|length }}] [{% if nothere %}T{% else %}F{% endif %}] [{{ not nothere }}] [{% for x in nothere %}x{% endfor %}] [{{ nothere is none }}] [{{ messages[0].nothere is none }}] [{{ nothere ~ 'z' }}] [{{ messages[5] is defined }}]
'''), [("ua", {"messages": M_UA})]),

    ("range_function", _t(r'''
{{ range(3)|list }} {{ range(1, 4)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }}
{% for i in range(messages|length) %}{{ i }}:{{ messages[i].role }} {% endfor %}
{% for i in range(messages|length - 1, -1, -1) %}{{ messages[i].role[0] }}{% endfor %}
{{ range(5)|length }} {{ range(3)|join('-') }} {{ range(2, 10, 3)|list|last }}
'''), [("suau", {"messages": M_SUAU})]),

    ("content_parts", _t(r'''
{%- for message in messages %}
{{- message.role }}:
{%- if message.content is string %} {{ message.content }}
{%- else %}
{%- for part in message.content %}
{%- if part.type == 'text' %} {{ part.text }}
{%- elif part.type == 'image' %} <image>
{%- else %} <{{ part.type }}>
{%- endif %}
{%- endfor %}
{%- endif %}
{{ '\n' }}
{%- endfor %}
{{- messages[0].content|selectattr('type', 'equalto', 'text')|map(attribute='text')|join(' ') }}
'''), [("parts", {"messages": M_PARTS})]),

    ("macros", _t(r'''
{%- macro render_turn(role, content, prefix='<', suffix='>', upper=false) -%}
{{ prefix }}{{ role|upper if upper else role }}{{ suffix }}{{ content }}
{%- endmacro -%}
{%- macro empty() %}{% endmacro -%}
{%- for m in messages -%}
{{ render_turn(m.role, m.content) }}|{{ render_turn(m.role, m.content, '[', ']') }}|{{ render_turn(m.role, m.content, suffix=': ', upper=true) }}
{% endfor -%}
[{{ empty() }}] {{ render_turn('x', 'y')|length }} {{ render_turn('a', 'b') ~ '!' }}
{% macro count_users(msgs) %}{{ msgs|selectattr('role', 'equalto', 'user')|list|length }}{% endmacro %}users={{ count_users(messages) }}
'''), [("suau", {"messages": M_SUAU})]),

    ("filter_block_and_generation", _t(r'''
{% filter upper %}shout {{ messages[0].content }}{% endfilter %}
{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}
{% endfor %}
{%- generation -%}  gen-block  {%- endgeneration %}
'''), [("suau", {"messages": M_SUAU})]),

    ("special_token_vars", _t(r'''
{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ pad_token }}|{{ bos_token is defined }}|{{ sep_token is defined }}|{{ mask_token|default('no-mask') }}|agp={{ add_generation_prompt }}
{% for m in messages %}{{ bos_token + m.role + '\n' + m.content + eos_token }}
{% endfor %}{% if add_generation_prompt %}{{ bos_token ~ 'assistant\n' }}{% endif %}
'''), [("gen", {"messages": M_UA, "add_generation_prompt": True}), ("nogen", {"messages": M_UA})]),

    ("chatml_reference", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
     [("gen", {"messages": M_SUAU, "add_generation_prompt": True}), ("nogen", {"messages": M_UA})]),

    ("newline_normalization",
     "A\r\n\t  {% if true %}\r\nB\r\n\t{% endif %}\r\nC {{ 'd' }}\rE\n{# trailing: one newline is dropped #}\n\n",
     [("plain", {"messages": M_UA})]),

    ("tools_and_documents_vars", _t(r'''
{% if tools %}tools: {{ tools|map(attribute='function')|map(attribute='name')|join(', ') }}
{% endif %}
{% if documents %}{% for doc in documents %}[{{ loop.index }}] {{ doc.title }}: {{ doc.text }}
{% endfor %}{% else %}no documents
{% endif %}
{{ messages[-1].content }}
'''), [("documents", {"messages": M_UA[:1], "documents": [{"title": "Doc A", "text": "Alpha."}, {"title": "Doc B", "text": "Béta."}]}),
       ("tools", {"messages": M_UA[:1], "tools": [WEATHER_TOOL, SEARCH_TOOL]}),
       ("neither", {"messages": M_UA[:1]})]),

    ("strftime_presence", "{{ strftime_now('%Y-%m-%d')|length }} {{ strftime_now('%H') is string }} {{ strftime_now is defined }}",
     [("plain", {"messages": M_UA})]),

    ("raise_in_branch", _t(r'''
{%- for m in messages -%}
{%- if m.role not in ['user', 'assistant'] -%}
{{- raise_exception('Only user and assistant roles are supported, got: ' ~ m.role) -}}
{%- endif -%}
{{ m.role }}={{ m.content }};
{%- endfor -%}
'''), [("ok", {"messages": M_UA}), ("fires", {"messages": M_SUAU})]),

    # ---- error cases ----
    ("error_undefined_mapping", "{{ bos_token }}{{ config.model_name }}", [("undefined_var", {"messages": M_UA})]),
    ("error_missing_attribute_chain", "{{ messages[0].missing.deeper }}", [("dict_attr", {"messages": M_UA})]),
    ("error_zero_division", "{%- if op == 'div' %}{{ a / b }}{% elif op == 'floordiv' %}{{ a // b }}{% else %}{{ a % b }}{% endif %}",
     [("ok", {"messages": M_UA, "op": "div", "a": 7, "b": 2}),
      ("div", {"messages": M_UA, "op": "div", "a": 7, "b": 0}),
      ("floordiv", {"messages": M_UA, "op": "floordiv", "a": 7, "b": 0}),
      ("mod", {"messages": M_UA, "op": "mod", "a": 7, "b": 0})]),
    ("error_type_concat", "{{ 'count: ' + messages|length }}", [("str_plus_int", {"messages": M_UA})]),
    ("error_call_undefined", "{{ format_message(messages[0]) }}", [("undefined_function", {"messages": M_UA})]),
    ("error_syntax_unclosed_for", "{% for m in messages %}{{ m.role }}", [("syntax", {"messages": M_UA})]),
    ("error_unknown_filter", "{{ messages|no_such_filter }}", [("compile_time", {"messages": M_UA})]),
    ("error_sandbox_list_append", "{% set l = [] %}{{ l.append(1) }}{{ l }}", [("immutable", {"messages": M_UA})]),
    ("error_namespace_underscore", "{% set ns = namespace(a=1) %}{% set ns._hidden = 2 %}{{ ns.a }}", [("security", {"messages": M_UA})]),
]


# ------------------------------------------------------------------------------------------------


def render(template, messages, add_generation_prompt, tokens, tools=None, documents=None, **kwargs):
    """Render as apply_chat_template(messages, tokenize=False, ...) does; return (context, result)."""
    conversation = _normalize_chat_messages(messages)
    template_kwargs = {**tokens, **kwargs}
    context = {
        "messages": _alias_reasoning_fields(_plain_template_data(conversation)),
        "tools": _plain_template_data(tools),
        "documents": _plain_template_data(documents),
        "add_generation_prompt": add_generation_prompt,
        **_plain_template_data(template_kwargs),
    }
    try:
        rendered, _ = render_jinja_template(
            conversations=[conversation],
            tools=tools,
            documents=documents,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            **template_kwargs,
        )
        result = {"expected": rendered[0]}
    except Exception as e:  # noqa: BLE001 -- any exception the template raises is a fixture
        result = {"error": str(e), "error_type": type(e).__name__}
    return context, result


def replay(template, context):
    """Render the compiled template directly from the JSON round-tripped context."""
    ctx = json.loads(json.dumps(context))
    try:
        return {"expected": _compile_jinja_template(template).render(**ctx)}
    except Exception as e:  # noqa: BLE001
        return {"error": str(e), "error_type": type(e).__name__}


def make_case(template_name, case, source, template, context, result):
    c = {"template_name": template_name, "case": case, "source": source, "template": template, "context": context}
    c.update(result)
    if "strftime_now" in template and "date_string" not in context and "error" not in result:
        if template_name != "strftime_presence":
            c["clock_dependent"] = True
    check = replay(template, context)
    if check != result and not c.get("clock_dependent"):
        sys.exit(f"replay mismatch for {template_name}/{case}:\n{result}\n{check}")
    return c


def build_cases():
    cases = []
    for name, source, template, tokens, convs in real_cases():
        for case, messages, agp, extra in convs:
            extra = dict(extra)
            tools = extra.pop("tools", None)
            context, result = render(template, messages, agp, tokens, tools=tools, **extra)
            cases.append(make_case(name, case, source, template, context, result))
    for name, template, contexts in SYNTHETIC:
        for case, ctx in contexts:
            ctx = dict(ctx)
            messages = ctx.pop("messages")
            agp = ctx.pop("add_generation_prompt", False)
            context, result = render(template, messages, agp, SYN_TOKENS, **ctx)
            cases.append(make_case(name, case, "synthetic", template, context, result))
    return cases


def main():
    import chat_template_corpus  # more Hub templates (it imports this module's helpers)

    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    doc = {
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "cases": build_cases() + chat_template_corpus.build(),
    }
    path = os.path.join(outdir, "chat_templates.json")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum("error" in c for c in doc["cases"])
    print(f"wrote {path}: {len(doc['cases'])} cases ({n_err} errors)")


if __name__ == "__main__":
    main()
