// The chat-template interpreter's operators, attribute access, string/dict methods, filters,
// tests and globals, each as Python and Jinja define them (jinja2 3.1, transformers' sandbox:
// methods that mutate are not there).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <optional>

#include "engine/chat_template_value.h"

namespace sppft::jinja {

using K = Value::Kind;

namespace {

double num(const Value& v) { return v.kind == K::Float ? v.f : v.kind == K::Bool ? (v.b ? 1 : 0) : static_cast<double>(v.i); }
bool intish(const Value& v) { return v.kind == K::Int || v.kind == K::Bool; }
std::int64_t int_of(const Value& v) { return v.kind == K::Bool ? (v.b ? 1 : 0) : v.i; }

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  throw EvalError("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
}

// `str * n` and `list * n` stop here: a chat template never needs more, and more would only
// exhaust memory.
constexpr std::size_t kMaxRepeated = std::size_t{1} << 26;

// Python's ints are unbounded; sppft's have 64 bits and say so rather than wrap.
[[noreturn]] void overflow() { throw EvalError("integer overflow: the result needs more than 64 bits"); }
std::int64_t add(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) overflow();
  return r;
}
std::int64_t subtract(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r)) overflow();
  return r;
}
std::int64_t multiply(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) overflow();
  return r;
}

// Jinja's int filter on a float: truncated; NaN gives the filter's default, as int() raising
// ValueError does; beyond 64 bits an error (Python's OverflowError) instead of a wrapped value.
Value float_to_int(double x, const Value& fallback) {
  if (std::isnan(x)) return fallback;
  if (!(x >= -0x1p63 && x < 0x1p63)) throw EvalError("cannot convert float " + std::to_string(x) + " to a 64-bit integer");
  return Value::integer(static_cast<std::int64_t>(x));
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  if (a == std::numeric_limits<std::int64_t>::min() && b == -1) overflow();
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Python's str.strip family over code points; `chars` none = whitespace.
std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::u32string u = decode_utf8(s);
  std::u32string set;
  const bool by_set = chars && chars->kind == K::Str;
  if (by_set) set = decode_utf8(chars->s);
  auto drop = [&](char32_t c) { return by_set ? set.find(c) != std::u32string::npos : is_py_space(c); };
  std::size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  return encode_utf8(u.substr(b, e - b));
}

// Case mapping for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (Python maps all of
// Unicode; chat templates case roles and flags, which these cover).
char32_t lower_cp(char32_t c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3ab && c != 0x3a2) ||
      (c >= 0x410 && c <= 0x42f))
    return c + 0x20;
  if (c >= 0x400 && c <= 0x40f) return c + 0x50;
  if (c == 0x178) return 0xff;
  if (c == 0x386) return 0x3ac;
  if (c >= 0x388 && c <= 0x38a) return c + 0x25;
  if (c == 0x38c) return 0x3cc;
  if (c == 0x38e || c == 0x38f) return c + 0x3f;
  if (c >= 0x100 && c <= 0x17f && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17f) {
    const bool odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e);
    if (odd_upper ? c % 2 == 1 : c % 2 == 0) return c + 1;
  }
  return c;
}
char32_t upper_cp(char32_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 0xe0 && c <= 0xfe && c != 0xf7) || (c >= 0x3b1 && c <= 0x3cb && c != 0x3c2) ||
      (c >= 0x430 && c <= 0x44f))
    return c - 0x20;
  if (c == 0x3c2) return 0x3a3;  // final sigma
  if (c >= 0x450 && c <= 0x45f) return c - 0x50;
  if (c == 0xff) return 0x178;
  if (c == 0x3ac) return 0x386;
  if (c >= 0x3ad && c <= 0x3af) return c - 0x25;
  if (c == 0x3cc) return 0x38c;
  if (c == 0x3cd || c == 0x3ce) return c - 0x3f;
  if (c >= 0x100 && c <= 0x17f && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17f) {
    const bool odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e);
    if (odd_upper ? c % 2 == 0 : c % 2 == 1) return c - 1;
  }
  return c;
}
bool cased(char32_t c) { return lower_cp(c) != c || upper_cp(c) != c || c == 0xdf; }
std::u32string upper_u(char32_t c) { return c == 0xdf ? U"SS" : std::u32string(1, upper_cp(c)); }  // ß -> SS
std::u32string title_u(char32_t c) { return c == 0xdf ? U"Ss" : std::u32string(1, upper_cp(c)); }

std::string upper(const std::string& s) {
  std::u32string out;
  for (char32_t c : decode_utf8(s)) out += upper_u(c);
  return encode_utf8(out);
}
std::string lower(const std::string& s) {
  std::u32string u = decode_utf8(s);
  for (char32_t& c : u) c = lower_cp(c);
  return encode_utf8(u);
}
std::string capitalize(const std::string& s) {
  const std::u32string u = decode_utf8(s);
  std::u32string out;
  for (std::size_t i = 0; i < u.size(); ++i) out += i == 0 ? title_u(u[i]) : std::u32string(1, lower_cp(u[i]));
  return encode_utf8(out);
}
// Title-cases words: a cased character after an uncased one starts a word (str.title() when
// `boundary` is null), or one after a boundary character does (Jinja's title filter).
std::string title_words(const std::string& s, bool (*boundary)(char32_t)) {
  std::u32string out;
  bool start = true;
  for (char32_t c : decode_utf8(s)) {
    if (boundary ? boundary(c) : !cased(c)) {
      out += c;
      start = true;
    } else {
      out += start ? title_u(c) : std::u32string(1, lower_cp(c));
      start = false;
    }
  }
  return encode_utf8(out);
}
std::string title(const std::string& s) { return title_words(s, nullptr); }

// Jinja's title filter: words start after '-', whitespace, '(', '{', '[' or '<' (not after '_' or
// digits, unlike str.title).
std::string title_filter(const std::string& s) {
  return title_words(s, [](char32_t c) { return c == '-' || is_py_space(c) || c == '(' || c == '{' || c == '[' || c == '<'; });
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, std::int64_t count) {
  if (from.empty()) {  // Python inserts `to` around every character
    std::string out;
    std::int64_t n = 0;
    const std::u32string u = decode_utf8(s);
    for (std::size_t i = 0; i <= u.size(); ++i) {
      if (count < 0 || n < count) { out += to; ++n; }
      if (i < u.size()) out += encode_utf8(u.substr(i, 1));
    }
    return out;
  }
  std::string out;
  std::size_t pos = 0;
  std::int64_t n = 0;
  while (count < 0 || n < count) {
    const std::size_t at = s.find(from, pos);
    if (at == std::string::npos) break;
    out += s.substr(pos, at - pos) + to;
    pos = at + from.size();
    ++n;
  }
  return out + s.substr(pos);
}

Value split(const std::string& s, const Value* sep, std::int64_t maxsplit) {
  List parts;
  if (!sep || sep->kind == K::None) {
    const std::u32string u = decode_utf8(s);
    std::size_t i = 0;
    while (true) {
      while (i < u.size() && is_py_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) {
        std::size_t e = u.size();
        while (e > i && is_py_space(u[e - 1])) --e;
        parts.push_back(Value::str(encode_utf8(u.substr(i, e - i))));
        break;
      }
      std::size_t j = i;
      while (j < u.size() && !is_py_space(u[j])) ++j;
      parts.push_back(Value::str(encode_utf8(u.substr(i, j - i))));
      i = j;
    }
    return Value::make_list(std::move(parts));
  }
  if (sep->kind != K::Str) throw EvalError(std::string("must be str or None, not ") + type_name(*sep));
  if (sep->s.empty()) throw EvalError("empty separator");
  std::size_t pos = 0;
  while (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit) {
    const std::size_t at = s.find(sep->s, pos);
    if (at == std::string::npos) break;
    parts.push_back(Value::str(s.substr(pos, at - pos)));
    pos = at + sep->s.size();
  }
  parts.push_back(Value::str(s.substr(pos)));
  return Value::make_list(std::move(parts));
}

// str.splitlines() for \n, \r and \r\n.
List split_lines(const std::string& s) {
  List lines;
  std::string cur;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      lines.push_back(Value::str(cur));
      cur.clear();
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      cur += s[i];
    }
  }
  if (!cur.empty()) lines.push_back(Value::str(cur));
  return lines;
}

const Value& need(const Args& a, std::size_t i, const char* name, const char* fn) {
  if (const Value* v = a.get(i, name)) return *v;
  throw EvalError(std::string(fn) + "() missing required argument '" + name + "'");
}
std::int64_t int_arg(const Args& a, std::size_t i, const char* name, std::int64_t fallback) {
  const Value* v = a.get(i, name);
  if (!v || v->kind == K::None) return fallback;
  if (!intish(*v)) throw EvalError(std::string("'") + type_name(*v) + "' object cannot be interpreted as an integer");
  return int_of(*v);
}
const std::string& str_arg(const Value& v, const char* fn) {
  if (v.kind != K::Str) throw EvalError(std::string(fn) + "() argument must be str, not " + type_name(v));
  return v.s;
}

bool starts_or_ends(const std::string& whole, const Value& what, bool start, const Args& a) {
  // s[start:end] as Python slices it, by code point.
  const Value* b = a.get(1, "start");
  const Value* e = a.get(2, "end");
  const std::string s = b || e ? slice(Value::str(whole), b ? *b : Value::none(), e ? *e : Value::none(), Value::none()).s : whole;
  auto one = [&](const Value& p) {
    const std::string& x = str_arg(p, start ? "startswith" : "endswith");
    return start ? s.compare(0, x.size(), x) == 0 && s.size() >= x.size()
                 : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (what.kind == K::List) return std::any_of(what.list->begin(), what.list->end(), one);
  return one(what);
}

Value string_method(const std::string& s, const std::string& name) {
  auto m = [](auto f) { return Value::func(f); };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return m([s, name](Args& a) {
      return Value::str(strip(s, a.get(0, "chars"), name != "rstrip", name != "lstrip"));
    });
  if (name == "split") return m([s](Args& a) { return split(s, a.get(0, "sep"), int_arg(a, 1, "maxsplit", -1)); });
  if (name == "startswith" || name == "endswith")
    return m([s, name](Args& a) {
      return Value::boolean(starts_or_ends(s, need(a, 0, "prefix", name.c_str()), name == "startswith", a));
    });
  if (name == "upper") return m([s](Args&) { return Value::str(upper(s)); });
  if (name == "lower") return m([s](Args&) { return Value::str(lower(s)); });
  if (name == "title") return m([s](Args&) { return Value::str(title(s)); });
  if (name == "capitalize") return m([s](Args&) { return Value::str(capitalize(s)); });
  if (name == "replace")
    return m([s](Args& a) {
      return Value::str(replace(s, str_arg(need(a, 0, "old", "replace"), "replace"), str_arg(need(a, 1, "new", "replace"), "replace"),
                                int_arg(a, 2, "count", -1)));
    });
  if (name == "find" || name == "count")
    return m([s, name](Args& a) {
      const std::string& x = str_arg(need(a, 0, "sub", name.c_str()), name.c_str());
      if (name == "find") {
        const std::size_t at = s.find(x);
        return Value::integer(at == std::string::npos ? -1 : static_cast<std::int64_t>(decode_utf8(s.substr(0, at)).size()));
      }
      if (x.empty()) return Value::integer(static_cast<std::int64_t>(decode_utf8(s).size()) + 1);
      std::int64_t n = 0;
      for (std::size_t at = s.find(x); at != std::string::npos; at = s.find(x, at + x.size())) ++n;
      return Value::integer(n);
    });
  if (name == "join")
    return m([s](Args& a) {
      std::string out;
      bool first = true;
      for (const Value& v : iterate(need(a, 0, "iterable", "join"))) {
        if (v.kind != K::Str) throw EvalError(std::string("sequence item: expected str instance, ") + type_name(v) + " found");
        out += (first ? "" : s) + v.s;
        first = false;
      }
      return Value::str(out);
    });
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum")
    return m([s, name](Args&) {
      const std::u32string u = decode_utf8(s);
      auto ok = [&](char32_t c) {
        if (name == "isspace") return is_py_space(c);
        const bool digit = c >= '0' && c <= '9', alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        return name == "isdigit" ? digit : name == "isalpha" ? alpha : digit || alpha;
      };
      return Value::boolean(!u.empty() && std::all_of(u.begin(), u.end(), ok));
    });
  if (name == "splitlines") return m([s](Args&) { return Value::make_list(split_lines(s)); });
  return Value::undefined("'str object' has no attribute '" + name + "'");
}

Value dict_method(const std::shared_ptr<Dict>& d, const std::string& name) {
  if (name == "items")
    return Value::func([d](Args&) {
      List out;
      for (const auto& [k, v] : d->items) out.push_back(Value::make_list({k, v}, true));
      return Value::make_list(std::move(out));
    });
  if (name == "keys" || name == "values")
    return Value::func([d, name](Args&) {
      List out;
      for (const auto& [k, v] : d->items) out.push_back(name == "keys" ? k : v);
      return Value::make_list(std::move(out));
    });
  if (name == "get")
    return Value::func([d](Args& a) {
      const Value& key = need(a, 0, "key", "get");
      const Value* v = d->find(key);
      if (v) return *v;
      const Value* fallback = a.get(1, "default");
      return fallback ? *fallback : Value::none();
    });
  return Value::undefined("'dict object' has no attribute '" + name + "'");
}

Value index_list(const List& l, std::int64_t i, const char* what) {
  const auto n = static_cast<std::int64_t>(l.size());
  if (i < 0) i += n;
  if (i < 0 || i >= n) return Value::undefined(std::string("'") + what + " object' has no element " + std::to_string(i));
  return l[static_cast<std::size_t>(i)];
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined())
    throw EvalError(repr(a.is_undefined() ? a : b) == "Undefined" && !(a.is_undefined() ? a : b).s.empty()
                        ? (a.is_undefined() ? a : b).s
                        : "undefined value in arithmetic");
  const bool nums = a.is_number() && b.is_number(), ints = intish(a) && intish(b);
  if (op == "+") {
    if (nums) return ints ? Value::integer(add(int_of(a), int_of(b))) : Value::real(num(a) + num(b));
    if (a.kind == K::Str && b.kind == K::Str) return Value::str(a.s + b.s);
    if (a.kind == K::List && b.kind == K::List && a.tuple == b.tuple) {
      List out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(out), a.tuple);
    }
    if (a.kind == K::Str || b.kind == K::Str)
      throw EvalError(std::string("can only concatenate str (not \"") + type_name(a.kind == K::Str ? b : a) + "\") to str");
    unsupported("+", a, b);
  }
  if (op == "-") {
    if (nums) return ints ? Value::integer(subtract(int_of(a), int_of(b))) : Value::real(num(a) - num(b));
    unsupported("-", a, b);
  }
  if (op == "*") {
    if (nums) return ints ? Value::integer(multiply(int_of(a), int_of(b))) : Value::real(num(a) * num(b));
    const Value* seq = a.kind == K::Str || a.kind == K::List ? &a : &b;
    const Value* n = seq == &a ? &b : &a;
    if ((seq->kind == K::Str || seq->kind == K::List) && intish(*n)) {
      const std::int64_t times = std::max<std::int64_t>(0, int_of(*n));
      const std::size_t unit = seq->kind == K::Str ? seq->s.size() : seq->list->size();
      if (unit != 0 && times > static_cast<std::int64_t>(kMaxRepeated / unit))
        throw EvalError("repetition too large (over " + std::to_string(kMaxRepeated) + " characters or items)");
      if (seq->kind == K::Str) {
        std::string out;
        for (std::int64_t i = 0; i < times; ++i) out += seq->s;
        return Value::str(out);
      }
      List out;
      for (std::int64_t i = 0; i < times; ++i) out.insert(out.end(), seq->list->begin(), seq->list->end());
      return Value::make_list(std::move(out), seq->tuple);
    }
    unsupported("*", a, b);
  }
  if (!nums) unsupported(op == "**" ? "** or pow()" : op, a, b);
  if (op == "/") {
    if (num(b) == 0) throw EvalError("division by zero");
    return Value::real(num(a) / num(b));
  }
  if (op == "//" || op == "%") {
    if (num(b) == 0) throw EvalError(ints ? "integer division or modulo by zero" : "float divmod()");
    if (ints) {
      const std::int64_t q = floor_div(int_of(a), int_of(b));
      return Value::integer(op == "//" ? q : subtract(int_of(a), multiply(q, int_of(b))));
    }
    const double q = std::floor(num(a) / num(b));
    return Value::real(op == "//" ? q : num(a) - q * num(b));
  }
  if (op == "**") {
    if (ints && int_of(b) >= 0) {
      // By squaring: 1 ** 10**18 must not take 10**18 steps.
      std::int64_t r = 1, base = int_of(a), e = int_of(b);
      for (; e > 0; e >>= 1) {
        if (e & 1) r = multiply(r, base);
        if (e > 1) base = multiply(base, base);
      }
      return Value::integer(r);
    }
    return Value::real(std::pow(num(a), num(b)));
  }
  throw EvalError("unknown operator " + op);
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case K::Str:
      if (item.kind != K::Str) throw EvalError(std::string("'in <string>' requires string as left operand, not ") + type_name(item));
      return c.s.find(item.s) != std::string::npos;
    case K::List: return std::any_of(c.list->begin(), c.list->end(), [&](const Value& v) { return equals(v, item); });
    case K::Dict: return !c.ns && c.dict->find(item);
    case K::Undefined: return false;  // an undefined value iterates as empty
    default: throw EvalError(std::string("argument of type '") + type_name(c) + "' is not iterable");
  }
}

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case K::Undefined: throw EvalError(obj.s.empty() ? "'" + name + "' of an undefined value" : obj.s);
    case K::Str: return string_method(obj.s, name);
    case K::Dict: {
      if (obj.ns) {
        if (const Value* v = obj.dict->find(name)) return *v;
        return Value::undefined("'Namespace' object has no attribute '" + name + "'");
      }
      Value method = dict_method(obj.dict, name);  // attributes first, as Jinja's getattr
      if (!method.is_undefined()) return method;
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined("'dict object' has no attribute '" + name + "'");
    }
    default: return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + name + "'");
  }
}

Value get_item(const Value& obj, const Value& key) {
  switch (obj.kind) {
    case K::Undefined: throw EvalError(obj.s.empty() ? "subscript of an undefined value" : obj.s);
    case K::List:
      if (intish(key)) return index_list(*obj.list, int_of(key), type_name(obj));
      break;
    case K::Str:
      if (intish(key)) {
        List chars = iterate(obj);
        return index_list(chars, int_of(key), "str");
      }
      break;
    case K::Dict:
      if (const Value* v = obj.dict->find(key)) return *v;
      if (key.kind == K::Str) {
        if (!obj.ns) {
          Value method = dict_method(obj.dict, key.s);
          if (!method.is_undefined()) return method;
        }
        return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + key.s + "'");
      }
      return Value::undefined(std::string("'dict object' has no element ") + repr(key));
    default: break;
  }
  if (key.kind == K::Str) return get_attr(obj, key.s);
  return Value::undefined(std::string("'") + type_name(obj) + " object' has no element " + repr(key));
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  auto opt = [](const Value& v, const char* what) -> std::optional<std::int64_t> {
    if (v.is_undefined() || v.kind == K::None) return std::nullopt;
    if (!intish(v)) throw EvalError(std::string("slice ") + what + " must be an integer or None");
    return int_of(v);
  };
  const std::int64_t st = opt(step, "step").value_or(1);
  if (st == 0) throw EvalError("slice step cannot be zero");
  List items;
  if (obj.kind == K::List || obj.kind == K::Str)
    items = iterate(obj);
  else
    throw EvalError(std::string("'") + type_name(obj) + "' object is not subscriptable");
  const auto n = static_cast<std::int64_t>(items.size());
  auto clamp = [&](std::optional<std::int64_t> v, std::int64_t dflt) {
    if (!v) return dflt;
    std::int64_t x = *v < 0 ? *v + n : *v;
    return st > 0 ? std::clamp<std::int64_t>(x, 0, n) : std::clamp<std::int64_t>(x, -1, n - 1);
  };
  const std::int64_t b = clamp(opt(start, "start"), st > 0 ? 0 : n - 1), e = clamp(opt(stop, "stop"), st > 0 ? n : -1);
  List out;
  for (std::int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(items[static_cast<std::size_t>(i)]);
  if (obj.kind == K::Str) {
    std::string s;
    for (const Value& c : out) s += c.s;
    return Value::str(s);
  }
  return Value::make_list(std::move(out), obj.tuple);
}

// ------------------------------------------------------------------ tests
namespace {

// The name a filter or test is registered under (Jinja's aliases: d -> default, == -> eq, ...).
std::string canonical_name(const std::map<std::string, std::string>& aliases, const std::string& n) {
  auto it = aliases.find(n);
  return it == aliases.end() ? n : it->second;
}

using TestFn = bool (*)(const Value&, Args&);
const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> t = {
      {"defined", [](const Value& v, Args&) { return !v.is_undefined(); }},
      {"undefined", [](const Value& v, Args&) { return v.is_undefined(); }},
      {"none", [](const Value& v, Args&) { return v.kind == K::None; }},
      {"boolean", [](const Value& v, Args&) { return v.kind == K::Bool; }},
      {"true", [](const Value& v, Args&) { return v.kind == K::Bool && v.b; }},
      {"false", [](const Value& v, Args&) { return v.kind == K::Bool && !v.b; }},
      {"integer", [](const Value& v, Args&) { return v.kind == K::Int; }},
      {"float", [](const Value& v, Args&) { return v.kind == K::Float; }},
      {"number", [](const Value& v, Args&) { return v.is_number(); }},
      {"string", [](const Value& v, Args&) { return v.kind == K::Str; }},
      {"mapping", [](const Value& v, Args&) { return v.kind == K::Dict && !v.ns; }},
      {"sequence", [](const Value& v, Args&) { return v.kind == K::Str || v.kind == K::List || (v.kind == K::Dict && !v.ns) || v.is_undefined(); }},
      {"iterable", [](const Value& v, Args&) { return v.kind == K::Str || v.kind == K::List || v.kind == K::Dict || v.is_undefined(); }},
      {"callable", [](const Value& v, Args&) { return v.kind == K::Func || v.is_undefined(); }},
      {"odd", [](const Value& v, Args&) { return intish(v) && int_of(v) % 2 != 0; }},
      {"even", [](const Value& v, Args&) { return intish(v) && int_of(v) % 2 == 0; }},
      {"divisibleby", [](const Value& v, Args& a) { return int_of(v) % int_arg(a, 0, "num", 1) == 0; }},
      {"lower", [](const Value& v, Args&) { return v.kind == K::Str && lower(v.s) == v.s; }},
      {"upper", [](const Value& v, Args&) { return v.kind == K::Str && upper(v.s) == v.s; }},
      {"eq", [](const Value& v, Args& a) { return equals(v, need(a, 0, "other", "eq")); }},
      {"ne", [](const Value& v, Args& a) { return !equals(v, need(a, 0, "other", "ne")); }},
      {"lt", [](const Value& v, Args& a) { return less(v, need(a, 0, "other", "lt")); }},
      {"le", [](const Value& v, Args& a) { return !less(need(a, 0, "other", "le"), v); }},
      {"gt", [](const Value& v, Args& a) { return less(need(a, 0, "other", "gt"), v); }},
      {"ge", [](const Value& v, Args& a) { return !less(v, need(a, 0, "other", "ge")); }},
      {"in", [](const Value& v, Args& a) { return contains(need(a, 0, "seq", "in"), v); }},
      {"sameas", [](const Value& v, Args& a) {
         const Value& o = need(a, 0, "other", "sameas");
         if (v.kind != o.kind) return false;
         if (v.kind == K::None || v.kind == K::Undefined) return true;
         if (v.kind == K::Bool) return v.b == o.b;
         return v.list ? v.list == o.list : v.dict ? v.dict == o.dict : equals(v, o);
       }},
  };
  return t;
}
const std::map<std::string, std::string> kTestAliases = {{"equalto", "eq"}, {"==", "eq"}, {"!=", "ne"}, {"<", "lt"},
                                                         {"<=", "le"},      {">", "gt"},   {">=", "ge"}, {"lessthan", "lt"},
                                                         {"greaterthan", "gt"}};
std::string test_name(const std::string& n) { return canonical_name(kTestAliases, n); }

}  // namespace

bool has_test(const std::string& name) { return tests().count(test_name(name)) > 0; }

bool apply_test(const std::string& name, const Value& v, Args& args) { return tests().at(test_name(name))(v, args); }

// ------------------------------------------------------------------ filters
namespace {

// Jinja's attribute getter for filters: "a.b.0" walks items (then attributes) part by part.
Value attribute_path(Value v, const std::string& path) {
  std::size_t pos = 0;
  while (pos <= path.size()) {
    const std::size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    // (a number too long for 64 bits cannot index anything: looked up as a key, it is undefined)
    v = v.is_undefined() ? v
                         : get_item(v, digits && part.size() <= 18 ? Value::integer(std::stoll(part)) : Value::str(part));
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return v;
}

Args rest_args(const Args& a, std::size_t from) {
  Args r;
  for (std::size_t i = from; i < a.pos.size(); ++i) r.pos.push_back(a.pos[i]);
  r.kw = a.kw;
  return r;
}

Value select_filter(const Value& v, Args& a, bool by_attr, bool keep) {
  std::size_t next = 0;
  std::string attr;
  if (by_attr) attr = str_arg(need(a, next++, "attribute", "selectattr"), "selectattr");
  std::string test;
  if (const Value* t = a.get(next, "test"); t && t->kind == K::Str) {
    test = t->s;
    ++next;
    if (!has_test(test)) throw EvalError("no test named '" + test + "'");
  }
  Args targs = rest_args(a, next);
  targs.kw.clear();
  List out;
  for (const Value& item : iterate(v)) {
    const Value subject = by_attr ? attribute_path(item, attr) : item;
    const bool ok = test.empty() ? truthy(subject) : apply_test(test, subject, targs);
    if (ok == keep) out.push_back(item);
  }
  return Value::make_list(std::move(out));
}

Value sort_key(const Value& v, bool case_sensitive, const std::string& attr) {
  Value k = attr.empty() ? v : attribute_path(v, attr);
  if (!case_sensitive && k.kind == K::Str) k.s = lower(k.s);
  return k;
}

// min / max (case_sensitive=False, attribute=None): the first extreme item.
Value extreme(const Value& v, Args& a, bool largest) {
  const Value* cs = a.get(0, "case_sensitive");
  const Value* attr = a.get(1, "attribute");
  const std::string path = attr && attr->kind == K::Str ? attr->s : "";
  List items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key_less = [&](const Value& x, const Value& y) {
    return less(sort_key(x, cs && truthy(*cs), path), sort_key(y, cs && truthy(*cs), path));
  };
  return largest ? *std::max_element(items.begin(), items.end(), key_less) : *std::min_element(items.begin(), items.end(), key_less);
}

std::string indent_text(const std::string& s, const Value* width, bool first, bool blank) {
  const std::string pad = width && width->kind == K::Str ? width->s : std::string(width ? static_cast<std::size_t>(int_of(*width)) : 4, ' ');
  List lines = split_lines(s + "\n");
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i].s;
    if (i == 0) out = l;
    else out += "\n" + (blank || !l.empty() ? pad + l : l);
  }
  return first ? pad + out : out;
}

using FilterFn = Value (*)(const Value&, Args&);
const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> f = {
      {"length", [](const Value& v, Args&) { return Value::integer(length(v)); }},
      {"trim", [](const Value& v, Args& a) { return Value::str(strip(to_str(v), a.get(0, "chars"), true, true)); }},
      {"upper", [](const Value& v, Args&) { return Value::str(upper(to_str(v))); }},
      {"lower", [](const Value& v, Args&) { return Value::str(lower(to_str(v))); }},
      {"capitalize", [](const Value& v, Args&) { return Value::str(capitalize(to_str(v))); }},
      {"title", [](const Value& v, Args&) { return Value::str(title_filter(to_str(v))); }},
      {"string", [](const Value& v, Args&) { return Value::str(to_str(v)); }},
      {"safe", [](const Value& v, Args&) { return v; }},
      {"tojson", [](const Value& v, Args& a) {
         const Value* ind = a.get(0, "indent");
         int indent = -1;
         if (ind && ind->kind != K::None) indent = static_cast<int>(int_of(*ind));
         std::string item_sep = indent >= 0 ? "," : ", ", key_sep = ": ";
         if (const Value* sep = a.get(2, "separators"); sep && sep->kind == K::List && sep->list->size() == 2) {
           item_sep = to_str((*sep->list)[0]);
           key_sep = to_str((*sep->list)[1]);
         }
         const Value* sk = a.get(3, "sort_keys");
         return Value::str(to_json(v, indent, item_sep, key_sep, sk && truthy(*sk)));
       }},
      {"default", [](const Value& v, Args& a) {
         const Value* b = a.get(1, "boolean");
         if (v.is_undefined() || (b && truthy(*b) && !truthy(v))) {
           const Value* d = a.get(0, "default_value");
           return d ? *d : Value::str("");
         }
         return v;
       }},
      {"first", [](const Value& v, Args&) {
         List items = iterate(v);
         return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
       }},
      {"last", [](const Value& v, Args&) {
         List items = iterate(v);
         return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
       }},
      {"join", [](const Value& v, Args& a) {
         const Value* sep = a.get(0, "d");
         const Value* attr = a.get(1, "attribute");
         std::string out;
         bool first = true;
         for (const Value& item : iterate(v)) {
           out += (first ? "" : sep ? to_str(*sep) : "") + to_str(attr ? attribute_path(item, to_str(*attr)) : item);
           first = false;
         }
         return Value::str(out);
       }},
      {"int", [](const Value& v, Args& a) {
         if (v.is_undefined()) throw EvalError(v.s.empty() ? "undefined value" : v.s);
         const Value* d = a.get(0, "default");
         const Value fallback = d ? *d : Value::integer(0);
         if (intish(v)) return Value::integer(int_of(v));
         if (v.kind == K::Float) return float_to_int(v.f, fallback);
         if (v.kind == K::Str) {
           const std::string t = strip(v.s, nullptr, true, true);
           try {
             std::size_t used = 0;
             const long long x = std::stoll(t, &used);
             if (used == t.size()) return Value::integer(x);
             const double y = std::stod(t, &used);
             if (used == t.size()) return float_to_int(y, fallback);
           } catch (...) {
           }
         }
         return fallback;
       }},
      {"float", [](const Value& v, Args& a) {
         if (v.is_undefined()) throw EvalError(v.s.empty() ? "undefined value" : v.s);
         const Value* d = a.get(0, "default");
         if (v.is_number()) return Value::real(num(v));
         if (v.kind == K::Str) {
           try {
             std::size_t used = 0;
             const std::string t = strip(v.s, nullptr, true, true);
             const double y = std::stod(t, &used);
             if (used == t.size()) return Value::real(y);
           } catch (...) {
           }
         }
         return d ? *d : Value::real(0);
       }},
      {"abs", [](const Value& v, Args&) {
         if (intish(v)) return Value::integer(std::llabs(int_of(v)));
         if (v.kind == K::Float) return Value::real(std::fabs(v.f));
         throw EvalError(std::string("bad operand type for abs(): '") + type_name(v) + "'");
       }},
      {"round", [](const Value& v, Args& a) {
         const std::int64_t prec = int_arg(a, 0, "precision", 0);
         const Value* method = a.get(1, "method");
         const std::string m = method ? to_str(*method) : "common";
         if (m == "common" && intish(v) && prec >= 0) return Value::integer(int_of(v));  // round(int, n) is the int
         const double scale = std::pow(10.0, static_cast<double>(prec)), x = num(v) * scale;
         const double r = m == "ceil" ? std::ceil(x) : m == "floor" ? std::floor(x) : std::nearbyint(x);  // ties to even
         return Value::real(r / scale);
       }},
      {"list", [](const Value& v, Args&) { return Value::make_list(iterate(v)); }},
      {"reverse", [](const Value& v, Args&) {
         if (v.kind == K::Str) {
           std::u32string u = decode_utf8(v.s);
           std::reverse(u.begin(), u.end());
           return Value::str(encode_utf8(u));
         }
         List items = iterate(v);
         std::reverse(items.begin(), items.end());
         return Value::make_list(std::move(items));
       }},
      {"replace", [](const Value& v, Args& a) {
         return Value::str(replace(to_str(v), to_str(need(a, 0, "old", "replace")), to_str(need(a, 1, "new", "replace")),
                                   int_arg(a, 2, "count", -1)));
       }},
      {"items", [](const Value& v, Args&) {
         if (v.is_undefined()) return Value::make_list({});
         if (v.kind != K::Dict) throw EvalError("Can only get item pairs from a mapping.");
         Args none;
         return (*dict_method(v.dict, "items").fn)(none);
       }},
      {"selectattr", [](const Value& v, Args& a) { return select_filter(v, a, true, true); }},
      {"rejectattr", [](const Value& v, Args& a) { return select_filter(v, a, true, false); }},
      {"select", [](const Value& v, Args& a) { return select_filter(v, a, false, true); }},
      {"reject", [](const Value& v, Args& a) { return select_filter(v, a, false, false); }},
      {"map", [](const Value& v, Args& a) {
         List out;
         const Value* attr = nullptr;
         for (const auto& [k, x] : a.kw)
           if (k == "attribute") attr = &x;
         if (attr) {
           const Value* dflt = nullptr;
           for (const auto& [k, x] : a.kw)
             if (k == "default") dflt = &x;
           for (const Value& item : iterate(v)) {
             Value x = attribute_path(item, to_str(*attr));
             out.push_back(x.is_undefined() && dflt ? *dflt : x);
           }
           return Value::make_list(std::move(out));
         }
         const std::string name = str_arg(need(a, 0, "name", "map"), "map");
         if (!has_filter(name)) throw EvalError("no filter named '" + name + "'");
         Args fargs = rest_args(a, 1);
         for (const Value& item : iterate(v)) out.push_back(apply_filter(name, item, fargs));
         return Value::make_list(std::move(out));
       }},
      {"sort", [](const Value& v, Args& a) {
         const Value* rev = a.get(0, "reverse");
         const Value* cs = a.get(1, "case_sensitive");
         const Value* attr = a.get(2, "attribute");
         const bool case_sensitive = cs && truthy(*cs);
         const std::string path = attr && !attr->is_undefined() && attr->kind != K::None ? to_str(*attr) : "";
         List items = iterate(v);
         std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
           return less(sort_key(x, case_sensitive, path), sort_key(y, case_sensitive, path));
         });
         if (rev && truthy(*rev)) std::reverse(items.begin(), items.end());
         return Value::make_list(std::move(items));
       }},
      {"unique", [](const Value& v, Args& a) {
         const Value* cs = a.get(0, "case_sensitive");
         const Value* attr = a.get(1, "attribute");
         const std::string path = attr && attr->kind == K::Str ? attr->s : "";
         List out, seen;
         for (const Value& item : iterate(v)) {
           const Value key = sort_key(item, cs && truthy(*cs), path);
           if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
             seen.push_back(key);
             out.push_back(item);
           }
         }
         return Value::make_list(std::move(out));
       }},
      {"sum", [](const Value& v, Args& a) {
         const Value* attr = a.get(0, "attribute");
         const Value* start = a.get(1, "start");
         Value total = start ? *start : Value::integer(0);
         for (const Value& item : iterate(v)) total = binary_op("+", total, attr ? attribute_path(item, to_str(*attr)) : item);
         return total;
       }},
      {"min", [](const Value& v, Args& a) { return extreme(v, a, false); }},
      {"max", [](const Value& v, Args& a) { return extreme(v, a, true); }},
      {"indent", [](const Value& v, Args& a) {
         const Value* first = a.get(1, "first");
         const Value* blank = a.get(2, "blank");
         return Value::str(indent_text(to_str(v), a.get(0, "width"), first && truthy(*first), blank && truthy(*blank)));
       }},
      {"attr", [](const Value& v, Args& a) {  // attributes only: a dict's keys are not its attributes
         const std::string& name = str_arg(need(a, 0, "name", "attr"), "attr");
         if (v.kind == K::Dict && !v.ns) return dict_method(v.dict, name);
         return v.is_undefined() ? Value::undefined(v.s) : get_attr(v, name);
       }},
      {"dictsort", [](const Value& v, Args& a) {
         if (v.kind != K::Dict || v.ns) throw EvalError("You can only sort by either \"key\" or \"value\"");
         const Value* cs = a.get(0, "case_sensitive");
         const Value* by = a.get(1, "by");
         const Value* rev = a.get(2, "reverse");
         const bool by_value = by && to_str(*by) == "value";
         List items;
         for (const auto& [k, x] : v.dict->items) items.push_back(Value::make_list({k, x}, true));
         std::stable_sort(items.begin(), items.end(), [&](const Value& p, const Value& q) {
           return less(sort_key((*p.list)[by_value], cs && truthy(*cs), ""), sort_key((*q.list)[by_value], cs && truthy(*cs), ""));
         });
         if (rev && truthy(*rev)) std::reverse(items.begin(), items.end());
         return Value::make_list(std::move(items));
       }},
      {"wordcount", [](const Value& v, Args&) {
         Value none = Value::none();
         return Value::integer(static_cast<std::int64_t>(split(to_str(v), &none, -1).list->size()));
       }},
  };
  return f;
}
const std::map<std::string, std::string> kFilterAliases = {{"count", "length"}, {"d", "default"}, {"e", "escape"}};
std::string filter_name(const std::string& n) { return canonical_name(kFilterAliases, n); }

}  // namespace

bool has_filter(const std::string& name) { return filters().count(filter_name(name)) > 0; }

Value apply_filter(const std::string& name, const Value& v, Args& args) { return filters().at(filter_name(name))(v, args); }

// ------------------------------------------------------------------ globals
bool has_global(const std::string& name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "strftime_now";
}

Value global(const std::string& name) {
  if (name == "range")
    return Value::func([](Args& a) {
      std::int64_t start = 0, stop = 0, step = 1;
      if (a.pos.size() == 1) stop = int_arg(a, 0, "stop", 0);
      else if (a.pos.size() >= 2) {
        start = int_arg(a, 0, "start", 0);
        stop = int_arg(a, 1, "stop", 0);
        step = int_arg(a, 2, "step", 1);
      } else throw EvalError("range expected at least 1 argument, got 0");
      if (step == 0) throw EvalError("range() arg 3 must not be zero");
      List out;
      for (std::int64_t i = start; step > 0 ? i < stop : i > stop;) {
        out.push_back(Value::integer(i));
        if (out.size() > 100000) throw EvalError("range too big (more than 100000 items)");
        if (__builtin_add_overflow(i, step, &i)) break;  // past the 64-bit range: past stop too
      }
      return Value::make_list(std::move(out));
    });
  if (name == "namespace" || name == "dict")
    return Value::func([name](Args& a) {
      auto d = std::make_shared<Dict>();
      for (const Value& p : a.pos) {
        if (p.kind != K::Dict) throw EvalError(name + "() takes a mapping as its positional argument");
        for (const auto& [k, v] : p.dict->items) d->set(k, v);  // (a namespace's keys are strings)
      }
      for (const auto& [k, v] : a.kw) {
        if (name == "namespace" && !k.empty() && k[0] == '_')
          throw EvalError("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + k + "'");
        d->set(k, v);
      }
      return Value::make_dict(d, name == "namespace");
    });
  if (name == "strftime_now")
    return Value::func([](Args& a) {
      const std::string& given = str_arg(need(a, 0, "format", "strftime_now"), "strftime_now");
      std::string fmt;  // datetime.now() is naive: %Z and %z print nothing
      for (std::size_t i = 0; i < given.size(); ++i) {
        if (given[i] == '%' && i + 1 < given.size()) {
          if (given[i + 1] != 'Z' && given[i + 1] != 'z') fmt += given.substr(i, 2);
          ++i;
        } else {
          fmt += given[i];
        }
      }
      const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const std::size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
      return Value::str(std::string(buf, n));
    });
  throw EvalError("'" + name + "' is undefined");
}

}  // namespace sppft::jinja
