// Hugging Face chat templates: the Jinja2 subset they are written in, rendered as transformers
// renders them (jinja2 with trim_blocks and lstrip_blocks, the loopcontrols extension and
// transformers' globals raise_exception, strftime_now, namespace and tojson; the
// `{% generation %}` tag renders its body).
//
// Supported: text with whitespace control ({%- -%} {{- -}} {#- -#}, `+`), comments;
// statements if / elif / else, for (tuple targets, `if` filters, else, break, continue, loop.*),
// set (names, tuples, namespace attributes, blocks), macro, filter blocks, generation;
// expressions with Jinja's precedence: literals, lists, dicts, tuples, attribute and subscript
// access (slices included), calls with keyword arguments, filters, tests, `~`, arithmetic,
// comparisons, in / not in, and / or / not, inline if. Values behave as Python's: str() of
// lists and floats, truthiness, undefined values that print as nothing and fail when used.
// Anything else (raw blocks, include, extends, call blocks, unknown filters) is an InputError
// naming the template and line, never a silently different rendering.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace sppft {

class ChatTemplate {
 public:
  // Parses `source`; InputError "<where>: line N: ..." on a syntax error.
  ChatTemplate(std::string_view source, std::string where);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Renders with `variables` (an object: messages, add_generation_prompt, bos_token, ...) as
  // the template's globals. InputError when the template raises (raise_exception) or fails.
  std::string render(const nlohmann::ordered_json& variables) const;

  const std::string& where() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sppft
