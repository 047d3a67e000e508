// Values of the chat-template interpreter (engine/chat_template.cpp): Python's semantics for the
// types JSON and Jinja give templates - None, bool, int, float, str, list/tuple, dict (ordered),
// Jinja's namespace and undefined, and callables (builtins, bound methods, macros).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sppft::jinja {

// A template run-time failure; the interpreter adds the template and line.
struct EvalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Value;
struct Dict;
struct Args;
using List = std::vector<Value>;
using Function = std::function<Value(Args&)>;

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, Str, List, Dict, Func };
  Kind kind = Kind::Undefined;
  bool b = false;
  std::int64_t i = 0;
  double f = 0;
  std::string s;                // Str: the text; Undefined: why (for errors)
  std::shared_ptr<List> list;   // List
  std::shared_ptr<Dict> dict;   // Dict
  std::shared_ptr<Function> fn; // Func
  bool tuple = false;           // a List that Python would hold as a tuple (str() shows parentheses)
  bool ns = false;              // a Dict that is a Jinja namespace (attributes assignable)

  static Value undefined(std::string why) { Value v; v.s = std::move(why); return v; }
  static Value none() { Value v; v.kind = Kind::None; return v; }
  static Value boolean(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
  static Value integer(std::int64_t x) { Value v; v.kind = Kind::Int; v.i = x; return v; }
  static Value real(double x) { Value v; v.kind = Kind::Float; v.f = x; return v; }
  static Value str(std::string x) { Value v; v.kind = Kind::Str; v.s = std::move(x); return v; }
  static Value make_list(List items, bool is_tuple = false) {
    Value v; v.kind = Kind::List; v.list = std::make_shared<List>(std::move(items)); v.tuple = is_tuple; return v;
  }
  static Value make_dict(std::shared_ptr<Dict> d, bool is_namespace = false) {
    Value v; v.kind = Kind::Dict; v.dict = std::move(d); v.ns = is_namespace; return v;
  }
  static Value func(Function f) { Value v; v.kind = Kind::Func; v.fn = std::make_shared<Function>(std::move(f)); return v; }

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_str() const { return kind == Kind::Str; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
};

bool equals(const Value& a, const Value& b);

// An insertion-ordered dict, as Python's: keys are str, int, float, bool or None (equal keys,
// such as 1 and 1.0, are one key).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const {
    for (const auto& [k, v] : items)
      if (equals(k, key)) return &v;
    return nullptr;
  }
  const Value* find(const std::string& key) const { return find(Value::str(key)); }
  void set(const Value& key, Value v) {
    for (auto& [k, old] : items)
      if (equals(k, key)) { old = std::move(v); return; }
    items.emplace_back(key, std::move(v));
  }
  void set(const std::string& key, Value v) { set(Value::str(key), std::move(v)); }
};

// Call arguments: positional, then keyword.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Argument `index` or keyword `name`, else `fallback`; EvalError on a missing required one.
  const Value* get(std::size_t index, const char* name) const {
    if (index < pos.size()) return &pos[index];
    for (const auto& [k, v] : kw)
      if (k == name) return &v;
    return nullptr;
  }
};

// Python's type name of a value, for errors ("str", "int", "NoneType", ...).
const char* type_name(const Value& v);
// str(v) and repr(v) as Python prints them (floats shortest round-trip, lists with reprs).
std::string to_str(const Value& v);
std::string repr(const Value& v);
bool truthy(const Value& v);
bool less(const Value& a, const Value& b);  // EvalError for unordered types
// The items a for loop visits: list items, dict keys, characters; undefined gives none.
List iterate(const Value& v);
// len(); undefined is 0. EvalError when v has no length.
std::int64_t length(const Value& v);
// json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) as transformers' tojson.
std::string to_json(const Value& v, int indent, const std::string& item_sep, const std::string& key_sep, bool sort_keys);

// Operations (engine/chat_template_builtins.cpp), each EvalError on what Python would refuse.
Value binary_op(const std::string& op, const Value& a, const Value& b);  // + - * / // % **
bool contains(const Value& container, const Value& item);               // `item in container`
Value get_attr(const Value& obj, const std::string& name);              // obj.name (then obj['name'])
Value get_item(const Value& obj, const Value& key);                     // obj[key] (then obj.key)
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
bool has_filter(const std::string& name);
bool has_test(const std::string& name);
Value apply_filter(const std::string& name, const Value& v, Args& args);
bool apply_test(const std::string& name, const Value& v, Args& args);
// range, namespace, dict, strftime_now (raise_exception is the interpreter's: it needs the template).
bool has_global(const std::string& name);
Value global(const std::string& name);

// UTF-8 <-> code points (Python indexes and slices strings by code point).
std::u32string decode_utf8(const std::string& s);
std::string encode_utf8(const std::u32string& s);
bool is_py_space(char32_t c);

}  // namespace sppft::jinja
