// Errors carry what was wrong, where, and what was expected. The CLI maps
// InputError (bad usage, bad files) to exit code 2 and everything else to 1.
#pragma once

#include <stdexcept>
#include <string>

namespace sppft {

// `text` with line breaks written as \n and \r: errors are one line even when they quote a
// file's contents (a tensor name, a template's raise_exception text).
inline std::string one_line(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

// Bad user input: a missing file, malformed JSON, a tensor of the wrong shape,
// an unknown flag. Never an internal invariant.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& what) : std::runtime_error(one_line(what)) {}
};

// Something failed at run time that the input did not cause (I/O, CUDA, NaN loss).
class RuntimeFailure : public std::runtime_error {
 public:
  explicit RuntimeFailure(const std::string& what) : std::runtime_error(one_line(what)) {}
};

// Throws InputError when `cond` is false; message is built only on failure.
#define SPPFT_CHECK_INPUT(cond, msg)                                   \
  do {                                                                 \
    if (!(cond)) throw ::sppft::InputError(std::string() + msg);       \
  } while (0)

}  // namespace sppft
