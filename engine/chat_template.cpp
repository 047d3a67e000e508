// Chat templates: lexer (Jinja's whitespace rules with trim_blocks and lstrip_blocks), parser
// (Jinja's grammar and operator precedence) and interpreter. Values, operators, filters and
// tests live in chat_template_value.cpp / chat_template_builtins.cpp.
#include "engine/chat_template.h"

#include <cerrno>

#include <algorithm>
#include <climits>
#include <map>
#include <optional>
#include <unordered_map>

#include "engine/chat_template_value.h"
#include "engine/error.h"

namespace sppft {

using jinja::Args;
using jinja::EvalError;
using jinja::List;
using jinja::Value;
using K = Value::Kind;

namespace {

// ------------------------------------------------------------------ lexer

struct Token {
  enum class T { Name, Int, Float, Str, Op, End };
  T type = T::End;
  std::string text;  // name, operator, or the decoded string
  std::int64_t i = 0;
  double f = 0;
  int line = 0;
  bool is(const char* op) const { return type == T::Op && text == op; }
  bool is_name(const char* n) const { return type == T::Name && text == n; }
};

struct Piece {
  enum class T { Text, Output, Statement };
  T type;
  std::string text;
  std::vector<Token> toks;  // ends with an End token
  int line;
};

struct SyntaxError : std::runtime_error {
  int line;
  SyntaxError(int l, const std::string& m) : std::runtime_error(m), line(l) {}
};

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// lstrip_blocks: the text before a block or comment tag loses the tag's indent when only spaces
// stand between the last newline (or, `line_starting`, the text's start) and the tag.
void lstrip_block_indent(std::string& text, bool line_starting) {
  const std::size_t nl = text.rfind('\n');
  const std::size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
  if ((l_pos > 0 || line_starting) && l_pos < text.size() && text.find_first_not_of(" \t\r\f\v", l_pos) == std::string::npos)
    text.resize(l_pos);
}

// Decodes a Python string literal's escapes (unknown ones stay as written).
std::string unescape(const std::string& raw) {
  std::string out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\' || i + 1 >= raw.size()) {
      out += raw[i];
      continue;
    }
    const char c = raw[++i];
    auto hex = [&](int n) {
      char32_t v = 0;
      for (int k = 1; k <= n; ++k) {
        if (i + k >= raw.size() || !std::isxdigit(static_cast<unsigned char>(raw[i + k]))) return std::optional<char32_t>{};
        v = v * 16 + static_cast<char32_t>(std::stoi(std::string(1, raw[i + k]), nullptr, 16));
      }
      i += n;
      return std::optional<char32_t>{v};
    };
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\n': break;
      case 'N': throw std::invalid_argument("\\N{...} escapes (Unicode character names) are not supported");
      case 'x':
      case 'u':
      case 'U': {
        const auto v = hex(c == 'x' ? 2 : c == 'u' ? 4 : 8);
        if (v) out += jinja::encode_utf8(std::u32string(1, *v));
        else out += std::string("\\") + c;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int v = c - '0', n = 1;
          while (n < 3 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7') v = v * 8 + (raw[++i] - '0'), ++n;
          out += jinja::encode_utf8(std::u32string(1, static_cast<char32_t>(v)));
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  // Jinja's newline handling: \r\n and \r read as \n, and one trailing newline of the template
  // is dropped (keep_trailing_newline=False).
  explicit Lexer(std::string_view src) {
    for (std::size_t i = 0; i < src.size(); ++i) {
      if (src[i] == '\r') {
        text_ += '\n';
        if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
      } else {
        text_ += src[i];
      }
    }
    if (!text_.empty() && text_.back() == '\n') text_.pop_back();
    src_ = text_;
  }

  std::vector<Piece> run() {
    std::vector<Piece> out;
    bool line_starting = true;  // the previous tag's end took a newline (or this is the start)
    while (pos_ < src_.size()) {
      std::size_t open = src_.find('{', pos_);
      while (open != std::string_view::npos && open + 1 < src_.size() && src_[open + 1] != '{' && src_[open + 1] != '%' &&
             src_[open + 1] != '#')
        open = src_.find('{', open + 1);
      if (open == std::string_view::npos || open + 1 >= src_.size()) {
        emit_text(out, std::string(src_.substr(pos_)));
        break;
      }
      std::string text(src_.substr(pos_, open - pos_));
      const char kind = src_[open + 1];
      char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign == '+' && kind == '{') sign = '\0';  // `{{+x}}` is unary plus, not whitespace control
      if (sign == '-') {
        std::size_t e = text.size();
        while (e > 0 && space(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {
        lstrip_block_indent(text, line_starting);
      }
      advance_to(open);  // line numbers
      emit_text(out, text);
      pos_ = open + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      const int tag_line = line_;
      if (kind == '#') {
        const std::size_t close = src_.find("#}", pos_);
        if (close == std::string_view::npos) throw SyntaxError(tag_line, "unterminated comment");
        line_starting = finish_tag(close, close > pos_ && src_[close - 1] == '-', close > pos_ && src_[close - 1] == '+', true);
        continue;
      }
      if (kind == '%' && raw_block(out, line_starting)) continue;
      Piece p;
      p.type = kind == '{' ? Piece::T::Output : Piece::T::Statement;
      p.line = tag_line;
      bool strip_after = false, keep_after = false;
      std::size_t close = tokenize(p.toks, kind == '{' ? "}}" : "%}", strip_after, keep_after);
      line_starting = finish_tag(close, strip_after, keep_after, kind == '%');
      if (p.toks.size() == 1) throw SyntaxError(tag_line, kind == '{' ? "empty expression" : "empty tag");
      out.push_back(std::move(p));
    }
    return out;
  }

 private:
  std::string text_;
  std::string_view src_;
  std::size_t pos_ = 0, counted_ = 0;
  int line_ = 1;

  void advance_to(std::size_t p) {
    for (; counted_ < p && counted_ < src_.size(); ++counted_)
      if (src_[counted_] == '\n') ++line_;
  }

  // At `raw %}` (pos_ after the opener): the text up to `{% endraw %}` verbatim, with the
  // whitespace control Jinja applies around both tags. false when the tag is not `raw`.
  bool raw_block(std::vector<Piece>& out, bool& line_starting) {
    std::size_t p = pos_;
    while (p < src_.size() && space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0 ||
        (p + 3 < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p + 3])) || src_[p + 3] == '_')))
      return false;
    p += 3;
    while (p < src_.size() && space(src_[p])) ++p;
    const bool strip_after = src_.compare(p, 3, "-%}") == 0;
    if (!strip_after && src_.compare(p, 2, "%}") != 0) throw SyntaxError(line_, "expected '%}' after 'raw'");
    p += strip_after ? 3 : 2;
    if (strip_after)
      while (p < src_.size() && space(src_[p])) ++p;
    for (std::size_t q = src_.find("{%", p); q != std::string_view::npos; q = src_.find("{%", q + 2)) {
      std::size_t r = q + 2;
      const char sign = r < src_.size() && (src_[r] == '-' || src_[r] == '+') ? src_[r++] : '\0';
      while (r < src_.size() && space(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") != 0) continue;
      r += 6;
      while (r < src_.size() && space(src_[r])) ++r;
      const char end_sign = r < src_.size() && (src_[r] == '-' || src_[r] == '+') ? src_[r++] : '\0';
      if (src_.compare(r, 2, "%}") != 0) continue;
      std::string body(src_.substr(p, q - p));
      if (sign == '-') {
        while (!body.empty() && space(body.back())) body.pop_back();
      } else if (sign != '+') {
        lstrip_block_indent(body, false);
      }
      emit_text(out, body);
      advance_to(r);
      line_starting = finish_tag(r, end_sign == '-', end_sign == '+', true);
      return true;
    }
    throw SyntaxError(line_, "unterminated raw block (no {% endraw %})");
  }

  void emit_text(std::vector<Piece>& out, std::string text) {
    if (!text.empty()) out.push_back({Piece::T::Text, std::move(text), {}, line_});
  }

  // Consumes the closing delimiter at `close` and the whitespace control after it; returns
  // whether what it consumed ends with a newline (Jinja's line_starting).
  bool finish_tag(std::size_t close, bool strip_after, bool keep_after, bool trim_newline) {
    std::size_t p = close + 2;
    bool newline = false;
    if (strip_after) {
      while (p < src_.size() && space(src_[p])) newline = src_[p++] == '\n';
    } else if (trim_newline && !keep_after && p < src_.size() && src_[p] == '\n') {  // trim_blocks
      ++p;
      newline = true;
    }
    pos_ = p;
    return newline;
  }

  // Tokens up to `closer` at bracket depth 0; returns where the closer starts (after a - or +).
  std::size_t tokenize(std::vector<Token>& toks, const char* closer, bool& strip_after, bool& keep_after) {
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && space(src_[pos_])) ++pos_;
      advance_to(pos_);
      if (pos_ >= src_.size()) throw SyntaxError(line_, std::string("unexpected end of template, expected '") + closer + "'");
      if (depth == 0) {
        if ((src_[pos_] == '-' || src_[pos_] == '+') && src_.compare(pos_ + 1, 2, closer) == 0) {
          (src_[pos_] == '-' ? strip_after : keep_after) = true;
          toks.push_back(Token{Token::T::End, "", 0, 0, line_});
          return pos_ + 1;
        }
        if (src_.compare(pos_, 2, closer) == 0) {
          toks.push_back(Token{Token::T::End, "", 0, 0, line_});
          return pos_;
        }
      }
      Token t;
      t.line = line_;
      const char c = src_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t e = pos_;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        t.type = Token::T::Name;
        t.text = std::string(src_.substr(pos_, e - pos_));
        pos_ = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        std::size_t e = pos_;
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        bool is_float = false;
        if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
          is_float = true;
          ++e;
          while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        }
        if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
          std::size_t x = e + 1;
          if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
          if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
            is_float = true;
            e = x;
            while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
          }
        }
        std::string digits;
        for (char d : src_.substr(pos_, e - pos_))
          if (d != '_') digits += d;
        t.type = is_float ? Token::T::Float : Token::T::Int;
        if (is_float) {
          t.f = std::strtod(digits.c_str(), nullptr);  // inf past the double range, as Python
        } else {
          errno = 0;
          t.i = std::strtoll(digits.c_str(), nullptr, 10);
          if (errno == ERANGE) throw SyntaxError(line_, "integer literal " + digits + " needs more than 64 bits");
        }
        pos_ = e;
      } else if (c == '\'' || c == '"') {
        std::size_t e = pos_ + 1;
        while (e < src_.size() && src_[e] != c) e += src_[e] == '\\' ? 2 : 1;
        if (e >= src_.size()) throw SyntaxError(line_, "unterminated string");
        t.type = Token::T::Str;
        try {
          t.text = unescape(std::string(src_.substr(pos_ + 1, e - pos_ - 1)));
        } catch (const std::invalid_argument& err) {
          throw SyntaxError(line_, err.what());
        }
        pos_ = e + 1;
      } else {
        static const char* ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                    "=",  "(",  ")",  "[",  "]",  "{",  "}", ",", ".", ":", "|"};
        t.type = Token::T::Op;
        for (const char* op : ops)
          if (src_.compare(pos_, std::char_traits<char>::length(op), op) == 0) {
            t.text = op;
            break;
          }
        if (t.text.empty()) throw SyntaxError(line_, std::string("unexpected character '") + c + "'");
        pos_ += t.text.size();
        if (t.text == "(" || t.text == "[" || t.text == "{") ++depth;
        if (t.text == ")" || t.text == "]" || t.text == "}") --depth;
      }
      toks.push_back(std::move(t));
    }
  }
};

// ------------------------------------------------------------------ syntax tree

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum class T { Literal, Name, List, Tuple, Dict, Attr, Item, Slice, Call, Filter, Test, Neg, Pos, Not, Binary, Concat,
                 Compare, And, Or, Cond };
  T type;
  int line = 0;
  Value literal;
  std::string name;                // Name, Attr, Filter, Test, Binary operator
  std::vector<ExprP> args;         // operands; Call: callee then positional; Filter/Test: subject then positional
  std::vector<std::string> kwnames;
  std::vector<ExprP> kwargs;
  std::vector<std::string> ops;    // Compare
  bool negated = false;            // Test: `is not`
};

struct Node;
using NodeP = std::unique_ptr<Node>;
using Body = std::vector<NodeP>;

struct Node {
  enum class T { Text, Output, If, For, Set, SetBlock, Macro, FilterBlock, Break, Continue, Generation };
  T type;
  int line = 0;
  std::string text;                                  // Text; Macro: name
  ExprP expr;                                        // Output, For: iterable, Set: value, SetBlock/FilterBlock: filters
  std::vector<std::pair<ExprP, Body>> branches;      // If (null condition = else)
  std::vector<std::string> targets;                  // For / Set / SetBlock: names (Set on `ns.attr`: ns)
  std::string attr;                                  // Set: namespace attribute
  ExprP filter;                                      // For: `if` filter
  Body body, else_body;                              // For, SetBlock, Macro, FilterBlock, Generation
  std::vector<std::string> params;                   // Macro
  std::vector<ExprP> defaults;                       // Macro: per param, null = none
  bool varargs = false, kwargs = false;              // Macro: its body reads varargs / kwargs
};

// Whether `name` is read anywhere in `body` (Jinja lets a macro take extra arguments only when
// its body reads varargs / kwargs).
bool reads_name(const Expr& e, const std::string& name) {
  if (e.type == Expr::T::Name && e.name == name) return true;
  for (const auto& x : e.args)
    if (x && reads_name(*x, name)) return true;
  for (const auto& x : e.kwargs)
    if (x && reads_name(*x, name)) return true;
  return false;
}
bool reads_name(const Body& body, const std::string& name) {
  for (const NodeP& n : body) {
    for (const Expr* e : {n->expr.get(), n->filter.get()})
      if (e && reads_name(*e, name)) return true;
    for (const auto& [cond, b] : n->branches)
      if ((cond && reads_name(*cond, name)) || reads_name(b, name)) return true;
    for (const auto& d : n->defaults)
      if (d && reads_name(*d, name)) return true;
    if (reads_name(n->body, name) || reads_name(n->else_body, name)) return true;
  }
  return false;
}

// ------------------------------------------------------------------ parser

class ExprParser {
 public:
  ExprParser(const std::vector<Token>& toks, std::size_t start = 0) : t_(toks), i_(start) {}

  const Token& cur() const { return t_[i_]; }
  const Token& peek(std::size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  void next() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  bool at_end() const { return cur().type == Token::T::End; }
  [[noreturn]] void fail(const std::string& m) const { throw SyntaxError(cur().line, m); }
  bool accept_op(const char* op) {
    if (!cur().is(op)) return false;
    next();
    return true;
  }
  bool accept_name(const char* n) {
    if (!cur().is_name(n)) return false;
    next();
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != Token::T::Name) fail("expected a name, got " + describe(cur()));
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_end() {
    if (!at_end()) fail("unexpected " + describe(cur()) + " at the end of the tag");
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::T::End: return "end of tag";
      case Token::T::Str: return "string";
      case Token::T::Int:
      case Token::T::Float: return "number";
      default: return "'" + t.text + "'";
    }
  }

  ExprP make(Expr::T type) const {
    auto e = std::make_unique<Expr>();
    e->type = type;
    e->line = cur().line;
    return e;
  }

  ExprP expression(bool with_cond = true) { return with_cond ? cond_expr() : or_expr(); }

  // `a, b` without parentheses (set values, for iterables, outputs) -> tuple.
  ExprP tuple_or_expression(bool with_cond = true) {
    ExprP first = expression(with_cond);
    if (!cur().is(",")) return first;
    ExprP t = make(Expr::T::Tuple);
    t->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (at_end() || cur().is_name("if")) break;
      t->args.push_back(expression(with_cond));
    }
    return t;
  }

  // `(a, b, name=c)` into `into`'s positional args and keyword args.
  void call_args(Expr& into) {
    expect_op("(");
    while (!cur().is(")")) {
      if (cur().type == Token::T::Name && peek().is("=")) {
        into.kwnames.push_back(cur().text);
        next();
        next();
        into.kwargs.push_back(expression());
      } else {
        if (!into.kwnames.empty()) fail("positional argument after a keyword argument");
        into.args.push_back(expression());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }

 private:
  const std::vector<Token>& t_;
  std::size_t i_;

  ExprP cond_expr() {
    ExprP e = or_expr();
    while (cur().is_name("if")) {
      next();
      ExprP c = make(Expr::T::Cond);
      ExprP cond = or_expr();
      ExprP other = accept_name("else") ? cond_expr() : nullptr;
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }
  ExprP logical(ExprP (ExprParser::*operand)(), const char* word, Expr::T type) {
    ExprP e = (this->*operand)();
    while (cur().is_name(word)) {
      next();
      ExprP o = make(type);
      o->args.push_back(std::move(e));
      o->args.push_back((this->*operand)());
      e = std::move(o);
    }
    return e;
  }
  ExprP or_expr() { return logical(&ExprParser::and_expr, "or", Expr::T::Or); }
  ExprP and_expr() { return logical(&ExprParser::not_expr, "and", Expr::T::And); }
  ExprP not_expr() {
    if (cur().is_name("not")) {
      ExprP n = make(Expr::T::Not);
      next();
      n->args.push_back(not_expr());
      return n;
    }
    return compare();
  }
  ExprP compare() {
    ExprP e = math1();
    ExprP c;
    while (true) {
      std::string op;
      if (cur().type == Token::T::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                         cur().text == ">" || cur().text == "<=" || cur().text == ">="))
        op = cur().text;
      else if (cur().is_name("in"))
        op = "in";
      else if (cur().is_name("not") && peek().is_name("in"))
        op = "notin";
      else
        break;
      next();
      if (op == "notin") next();
      if (!c) {
        c = make(Expr::T::Compare);
        c->args.push_back(std::move(e));
      }
      c->ops.push_back(op);
      c->args.push_back(math1());
    }
    return c ? std::move(c) : std::move(e);
  }
  // Left-associative chains (Jinja parses ** left to right too: 2 ** 3 ** 2 is 64).
  ExprP binary_chain(ExprP (ExprParser::*operand)(), std::initializer_list<const char*> ops, Expr::T type = Expr::T::Binary) {
    ExprP e = (this->*operand)();
    while (true) {
      const char* hit = nullptr;
      for (const char* op : ops)
        if (cur().is(op)) hit = op;
      if (!hit) return e;
      ExprP b = make(type);
      b->name = hit;
      next();
      b->args.push_back(std::move(e));
      b->args.push_back((this->*operand)());
      e = std::move(b);
    }
  }
  ExprP math1() { return binary_chain(&ExprParser::concat, {"+", "-"}); }
  ExprP concat() { return binary_chain(&ExprParser::math2, {"~"}, Expr::T::Concat); }
  ExprP math2() { return binary_chain(&ExprParser::power, {"*", "/", "//", "%"}); }
  ExprP power() { return binary_chain(&ExprParser::unary_filtered, {"**"}); }
  ExprP unary_filtered() { return unary(true); }

  // Filters and tests bind tighter than arithmetic; a sign takes its operand without them
  // (-x|abs is (-x)|abs).
  ExprP unary(bool with_filter) {
    ExprP e;
    if (cur().is("-") || cur().is("+")) {
      e = make(cur().is("-") ? Expr::T::Neg : Expr::T::Pos);
      next();
      e->args.push_back(unary(false));
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    return with_filter ? filter_chain(std::move(e)) : std::move(e);
  }

  ExprP primary() {
    const Token& t = cur();
    ExprP e;
    switch (t.type) {
      case Token::T::Name: {
        static const std::map<std::string, Value> consts = {
            {"true", Value::boolean(true)},   {"True", Value::boolean(true)}, {"false", Value::boolean(false)},
            {"False", Value::boolean(false)}, {"none", Value::none()},        {"None", Value::none()}};
        auto it = consts.find(t.text);
        if (it != consts.end()) {
          e = make(Expr::T::Literal);
          e->literal = it->second;
        } else {
          e = make(Expr::T::Name);
          e->name = t.text;
        }
        next();
        return e;
      }
      case Token::T::Str: {
        std::string s;
        while (cur().type == Token::T::Str) {  // adjacent literals concatenate
          s += cur().text;
          next();
        }
        e = make(Expr::T::Literal);
        e->literal = Value::str(s);
        return e;
      }
      case Token::T::Int:
      case Token::T::Float:
        e = make(Expr::T::Literal);
        e->literal = t.type == Token::T::Int ? Value::integer(t.i) : Value::real(t.f);
        next();
        return e;
      case Token::T::Op:
        if (t.text == "(") {
          next();
          if (accept_op(")")) return make(Expr::T::Tuple);
          ExprP first = expression();
          if (accept_op(")")) return first;
          ExprP tup = make(Expr::T::Tuple);
          tup->args.push_back(std::move(first));
          while (accept_op(",")) {
            if (cur().is(")")) break;
            tup->args.push_back(expression());
          }
          expect_op(")");
          return tup;
        }
        if (t.text == "[" || t.text == "{") {
          const bool list = t.text == "[";
          next();
          e = make(list ? Expr::T::List : Expr::T::Dict);
          while (!cur().is(list ? "]" : "}")) {  // items, a trailing comma allowed
            e->args.push_back(expression());
            if (!list) {
              expect_op(":");
              e->args.push_back(expression());
            }
            if (!accept_op(",")) break;
          }
          expect_op(list ? "]" : "}");
          return e;
        }
        break;
      default: break;
    }
    fail("unexpected " + describe(t));
  }

  ExprP postfix(ExprP e) {
    while (true) {
      if (cur().is(".")) {
        next();
        if (cur().type == Token::T::Int) {
          ExprP item = make(Expr::T::Item);
          ExprP key = make(Expr::T::Literal);
          key->literal = Value::integer(cur().i);
          next();
          item->args.push_back(std::move(e));
          item->args.push_back(std::move(key));
          e = std::move(item);
        } else {
          ExprP a = make(Expr::T::Attr);
          a->name = expect_name();
          a->args.push_back(std::move(e));
          e = std::move(a);
        }
      } else if (cur().is("[")) {
        next();
        ExprP parts[3];
        bool is_slice = false;
        if (!cur().is(":")) parts[0] = expression();
        if (accept_op(":")) {
          is_slice = true;
          if (!cur().is("]") && !cur().is(":")) parts[1] = expression();
          if (accept_op(":") && !cur().is("]")) parts[2] = expression();
        }
        expect_op("]");
        ExprP s = make(is_slice ? Expr::T::Slice : Expr::T::Item);
        s->args.push_back(std::move(e));
        for (int k = 0; k < (is_slice ? 3 : 1); ++k) s->args.push_back(std::move(parts[k]));
        e = std::move(s);
      } else if (cur().is("(")) {
        e = call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprP call(ExprP callee) {
    ExprP c = make(Expr::T::Call);
    c->args.push_back(std::move(callee));
    call_args(*c);
    return c;
  }

  ExprP filter_chain(ExprP e) {
    while (true) {
      if (cur().is("|")) {
        next();
        ExprP f = make(Expr::T::Filter);
        f->name = expect_name();
        if (!jinja::has_filter(f->name)) fail("no filter named '" + f->name + "'");
        f->args.push_back(std::move(e));
        if (cur().is("(")) call_args(*f);
        e = std::move(f);
      } else if (cur().is_name("is")) {
        next();
        ExprP t = make(Expr::T::Test);
        t->negated = accept_name("not");
        t->name = expect_name();
        if (!jinja::has_test(t->name)) fail("no test named '" + t->name + "'");
        t->args.push_back(std::move(e));
        if (cur().is("(")) {
          call_args(*t);
        } else if ((cur().type == Token::T::Name && !cur().is_name("else") && !cur().is_name("or") &&
                    !cur().is_name("and")) ||
                   cur().type == Token::T::Str || cur().type == Token::T::Int || cur().type == Token::T::Float ||
                   cur().is("[") || cur().is("{")) {
          if (cur().is_name("is")) fail("You cannot chain multiple tests with is");
          t->args.push_back(postfix(primary()));  // `is divisibleby 3`, `is equalto 'x'`
        }
        e = std::move(t);
      } else if (cur().is("(")) {
        e = call(std::move(e));
      } else {
        return e;
      }
    }
  }
};

class Parser {
 public:
  explicit Parser(std::vector<Piece> pieces) : p_(std::move(pieces)) {}

  Body parse() {
    std::string end;
    return body({}, end);
  }

 private:
  std::vector<Piece> p_;
  std::size_t i_ = 0;

  static std::string keyword(const Piece& p) { return p.toks[0].type == Token::T::Name ? p.toks[0].text : ""; }

  // Nodes up to a statement whose keyword is in `ends` (left unconsumed; its keyword in `end`).
  Body body(std::initializer_list<const char*> ends, std::string& end) {
    Body out;
    while (i_ < p_.size()) {
      Piece& p = p_[i_];
      if (p.type == Piece::T::Text) {
        auto n = std::make_unique<Node>();
        n->type = Node::T::Text;
        n->text = p.text;
        n->line = p.line;
        out.push_back(std::move(n));
        ++i_;
        continue;
      }
      if (p.type == Piece::T::Output) {
        ExprParser ep(p.toks);
        auto n = std::make_unique<Node>();
        n->type = Node::T::Output;
        n->line = p.line;
        n->expr = ep.tuple_or_expression();
        ep.expect_end();
        out.push_back(std::move(n));
        ++i_;
        continue;
      }
      const std::string kw = keyword(p);
      for (const char* e : ends)
        if (kw == e) {
          end = kw;
          return out;
        }
      out.push_back(statement());
    }
    if (ends.size() != 0) {
      std::string names;
      for (const char* e : ends) names += std::string(names.empty() ? "" : " or ") + "'" + e + "'";
      throw SyntaxError(p_.empty() ? 1 : p_.back().line, "unexpected end of template, expected " + names);
    }
    return out;
  }

  // Consumes the end tag `body` stopped at; it takes no arguments.
  void close_tag() { ExprParser(p_[i_++].toks, 1).expect_end(); }

  NodeP statement() {
    Piece& p = p_[i_];
    ExprParser ep(p.toks, 1);
    const std::string kw = keyword(p);
    auto n = std::make_unique<Node>();
    n->line = p.line;
    ++i_;
    std::string end;
    if (kw == "if") {
      n->type = Node::T::If;
      ExprP cond = ep.expression();
      ep.expect_end();
      while (true) {
        Body b = body({"elif", "else", "endif"}, end);
        n->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "endif") {
          close_tag();
          break;
        }
        if (end == "elif") {
          ExprParser tail(p_[i_++].toks, 1);
          cond = tail.expression();
          tail.expect_end();
        } else {
          close_tag();
          Body eb = body({"endif"}, end);
          n->branches.emplace_back(nullptr, std::move(eb));
          close_tag();
          break;
        }
      }
    } else if (kw == "for") {
      n->type = Node::T::For;
      const bool paren = ep.accept_op("(");
      do {
        n->targets.push_back(ep.expect_name());
      } while (ep.accept_op(","));
      if (paren) ep.expect_op(")");
      if (!ep.accept_name("in")) ep.fail("expected 'in' in the for loop");
      n->expr = ep.tuple_or_expression(false);
      if (ep.accept_name("if")) n->filter = ep.expression();
      if (ep.accept_name("recursive")) ep.fail("recursive for loops are not supported");
      ep.expect_end();
      n->body = body({"else", "endfor"}, end);
      close_tag();
      if (end == "else") {
        n->else_body = body({"endfor"}, end);
        close_tag();
      }
    } else if (kw == "set") {
      n->targets = {ep.expect_name()};
      if (ep.accept_op(".")) {
        n->attr = ep.expect_name();
      } else {
        while (ep.accept_op(",")) n->targets.push_back(ep.expect_name());
      }
      if (ep.accept_op("=")) {
        n->type = Node::T::Set;
        n->expr = ep.tuple_or_expression();
        ep.expect_end();
      } else {
        if (!n->attr.empty() || n->targets.size() != 1) ep.fail("expected '=' after the set target");
        n->type = Node::T::SetBlock;
        if (ep.accept_op("|")) n->expr = block_filters(ep);  // {% set x | f %}: the filters apply to the block
        ep.expect_end();
        n->body = body({"endset"}, end);
        close_tag();
      }
    } else if (kw == "macro") {
      n->type = Node::T::Macro;
      n->text = ep.expect_name();
      ep.expect_op("(");
      while (!ep.cur().is(")")) {
        n->params.push_back(ep.expect_name());
        n->defaults.push_back(ep.accept_op("=") ? ep.expression() : nullptr);
        if (!ep.accept_op(",")) break;
      }
      ep.expect_op(")");
      ep.expect_end();
      n->body = body({"endmacro"}, end);
      close_tag();
      n->varargs = reads_name(n->body, "varargs");
      n->kwargs = reads_name(n->body, "kwargs");
    } else if (kw == "filter") {
      n->type = Node::T::FilterBlock;
      n->expr = block_filters(ep);
      ep.expect_end();
      n->body = body({"endfilter"}, end);
      close_tag();
    } else if (kw == "generation") {
      n->type = Node::T::Generation;
      ep.expect_end();
      n->body = body({"endgeneration"}, end);
      close_tag();
    } else if (kw == "break" || kw == "continue") {
      n->type = kw == "break" ? Node::T::Break : Node::T::Continue;
      ep.expect_end();
    } else {
      const std::string what = kw.empty() ? ExprParser::describe(p.toks[0]) : "'" + kw + "'";
      throw SyntaxError(p.line, "unsupported or unexpected tag " + what);
    }
    return n;
  }

  // `f(x) | g` applied to the rendered block, held as the variable "__block__".
  static ExprP block_filters(ExprParser& ep) {
    ExprP e = ep.make(Expr::T::Name);
    e->name = "__block__";
    do {
      ExprP f = ep.make(Expr::T::Filter);
      f->name = ep.expect_name();
      if (!jinja::has_filter(f->name)) ep.fail("no filter named '" + f->name + "'");
      f->args.push_back(std::move(e));
      if (ep.cur().is("(")) ep.call_args(*f);
      e = std::move(f);
    } while (ep.accept_op("|"));
    return e;
  }
};

// ------------------------------------------------------------------ interpreter

struct Raised : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  explicit Renderer(const Value& globals) {
    scopes_.emplace_back();
    for (const auto& [k, v] : globals.dict->items) scopes_.back()[k.s] = v;
  }

  // Runs `body`, turning errors into InputErrors that name the template and line.
  std::string render(const Body& body, const std::string& where) {
    std::string out;
    try {
      exec(body, out);
    } catch (const Raised& r) {
      throw InputError(where + ": the template raised an exception: " + r.what());
    } catch (const LineError& e) {
      throw InputError(where + ": line " + std::to_string(e.line) + ": " + e.what());
    }
    return out;
  }

 private:
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  int depth_ = 0;

  struct LineError : std::runtime_error {
    int line;
    LineError(int l, const std::string& m) : std::runtime_error(m), line(l) {}
  };

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    if (name == "raise_exception")
      return Value::func([](Args& a) -> Value { throw Raised(a.pos.empty() ? std::string() : jinja::to_str(a.pos[0])); });
    if (jinja::has_global(name)) return jinja::global(name);
    return Value::undefined("'" + name + "' is undefined");
  }

  Flow exec(const Body& body, std::string& out) {
    for (const NodeP& n : body) {
      const Flow f = exec(*n, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node& n, std::string& out) {
    try {
      return exec_node(n, out);
    } catch (const EvalError& e) {
      throw LineError(n.line, e.what());
    }
  }

  Flow exec_node(const Node& n, std::string& out) {
    switch (n.type) {
      case Node::T::Text: out += n.text; return Flow::Normal;
      case Node::T::Output: out += jinja::to_str(eval(*n.expr)); return Flow::Normal;
      case Node::T::If:
        for (const auto& [cond, body] : n.branches)
          if (!cond || jinja::truthy(eval(*cond))) return exec(body, out);
        return Flow::Normal;
      case Node::T::For: return exec_for(n, out);
      case Node::T::Set: {
        const Value v = eval(*n.expr);
        if (!n.attr.empty()) {
          const Value ns = lookup(n.targets[0]);
          if (ns.kind != K::Dict || !ns.ns) throw EvalError("cannot assign attribute on non-namespace object");
          if (n.attr[0] == '_')
            throw EvalError("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + n.attr + "'");
          ns.dict->set(n.attr, v);
        } else {
          assign(n.targets, v);
        }
        return Flow::Normal;
      }
      case Node::T::SetBlock: {
        std::string text;
        exec(n.body, text);
        Value v = Value::str(text);
        if (n.expr) v = with_block(*n.expr, v);
        scopes_.back()[n.targets[0]] = v;
        return Flow::Normal;
      }
      case Node::T::Macro: scopes_.back()[n.text] = macro(n); return Flow::Normal;
      case Node::T::FilterBlock: {
        std::string text;
        exec(n.body, text);
        out += jinja::to_str(with_block(*n.expr, Value::str(text)));
        return Flow::Normal;
      }
      case Node::T::Generation: return exec(n.body, out);
      case Node::T::Break: return Flow::Break;
      case Node::T::Continue: return Flow::Continue;
    }
    return Flow::Normal;
  }

  Value with_block(const Expr& filters, const Value& block) {
    scopes_.emplace_back();
    scopes_.back()["__block__"] = block;
    Value v = eval(filters);
    scopes_.pop_back();
    return v;
  }

  void assign(const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = v;
      return;
    }
    List items = jinja::iterate(v);
    if (items.size() != targets.size())
      throw EvalError("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) +
                      " names");
    for (std::size_t k = 0; k < targets.size(); ++k) scopes_.back()[targets[k]] = items[k];
  }

  // Each iteration runs in a scope of its own: a set inside the loop is gone after it, and
  // does not carry into the next iteration (Jinja's scoping; namespaces carry state).
  Flow exec_for(const Node& n, std::string& out) {
    List items = jinja::iterate(eval(*n.expr));
    if (n.filter) {
      List kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        assign(n.targets, item);
        const bool keep = jinja::truthy(eval(*n.filter));
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      scopes_.emplace_back();
      exec(n.else_body, out);
      scopes_.pop_back();
      return Flow::Normal;
    }
    const auto len = static_cast<std::int64_t>(items.size());
    for (std::int64_t k = 0; k < len; ++k) {
      scopes_.emplace_back();
      assign(n.targets, items[static_cast<std::size_t>(k)]);
      auto loop = std::make_shared<jinja::Dict>();
      loop->set("index", Value::integer(k + 1));
      loop->set("index0", Value::integer(k));
      loop->set("revindex", Value::integer(len - k));
      loop->set("revindex0", Value::integer(len - k - 1));
      loop->set("first", Value::boolean(k == 0));
      loop->set("last", Value::boolean(k == len - 1));
      loop->set("length", Value::integer(len));
      loop->set("depth", Value::integer(1));
      loop->set("depth0", Value::integer(0));
      loop->set("previtem", k > 0 ? items[static_cast<std::size_t>(k - 1)] : Value::undefined("there is no previous item"));
      loop->set("nextitem", k + 1 < len ? items[static_cast<std::size_t>(k + 1)] : Value::undefined("there is no next item"));
      loop->set("cycle", Value::func([k](Args& a) -> Value {
                  if (a.pos.empty()) throw EvalError("no items for cycling given");
                  return a.pos[static_cast<std::size_t>(k) % a.pos.size()];
                }));
      scopes_.back()["loop"] = Value::make_dict(loop);
      const Flow f = exec(n.body, out);
      scopes_.pop_back();
      if (f == Flow::Break) break;
    }
    return Flow::Normal;
  }

  // A macro runs over the template's globals as they are when it is called, plus its arguments.
  Value macro(const Node& n) {
    return Value::func([this, &n](Args& a) -> Value {
      if (a.pos.size() > n.params.size() && !n.varargs)
        throw EvalError("macro '" + n.text + "' takes not more than " + std::to_string(n.params.size()) + " argument(s)");
      auto extra_kw = std::make_shared<jinja::Dict>();
      for (const auto& [k, v] : a.kw)
        if (std::find(n.params.begin(), n.params.end(), k) == n.params.end()) {
          if (!n.kwargs) throw EvalError("macro '" + n.text + "' takes no keyword argument '" + k + "'");
          extra_kw->set(k, v);
        }
      if (depth_ >= 64) throw EvalError("macro recursion deeper than 64");
      std::unordered_map<std::string, Value> frame;
      if (n.varargs)
        frame["varargs"] = Value::make_list(
            a.pos.size() > n.params.size() ? List(a.pos.begin() + static_cast<std::ptrdiff_t>(n.params.size()), a.pos.end()) : List{},
            true);
      if (n.kwargs) frame["kwargs"] = Value::make_dict(extra_kw);
      for (std::size_t k = 0; k < n.params.size(); ++k) {
        if (const Value* given = a.get(k, n.params[k].c_str())) frame[n.params[k]] = *given;
        else if (n.defaults[k]) frame[n.params[k]] = eval(*n.defaults[k]);
        else frame[n.params[k]] = Value::undefined("'" + n.params[k] + "' is undefined");
      }
      auto saved = std::move(scopes_);
      scopes_ = {saved.front(), std::move(frame)};
      ++depth_;
      std::string text;
      try {
        exec(n.body, text);
      } catch (...) {
        scopes_ = std::move(saved);
        --depth_;
        throw;
      }
      scopes_ = std::move(saved);
      --depth_;
      return Value::str(text);
    });
  }

  Args eval_args(const Expr& e, std::size_t first) {
    Args a;
    for (std::size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
    for (std::size_t k = 0; k < e.kwnames.size(); ++k) a.kw.emplace_back(e.kwnames[k], eval(*e.kwargs[k]));
    return a;
  }

  bool compare(const std::string& op, const Value& l, const Value& r) {
    if (op == "==") return jinja::equals(l, r);
    if (op == "!=") return !jinja::equals(l, r);
    if (op == "<") return jinja::less(l, r);
    if (op == ">") return jinja::less(r, l);
    if (op == "<=") return !jinja::less(r, l);
    if (op == ">=") return !jinja::less(l, r);
    if (op == "in") return jinja::contains(r, l);
    return !jinja::contains(r, l);
  }

  Value eval(const Expr& e) {
    switch (e.type) {
      case Expr::T::Literal: return e.literal;
      case Expr::T::Name: return lookup(e.name);
      case Expr::T::List:
      case Expr::T::Tuple: {
        List items;
        for (const auto& x : e.args) items.push_back(eval(*x));
        return Value::make_list(std::move(items), e.type == Expr::T::Tuple);
      }
      case Expr::T::Dict: {
        auto d = std::make_shared<jinja::Dict>();
        for (std::size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const Value key = eval(*e.args[k]);
          if (key.kind == K::List || key.kind == K::Dict || key.kind == K::Func || key.is_undefined())
            throw EvalError(std::string("unhashable type: '") + jinja::type_name(key) + "'");
          d->set(key, eval(*e.args[k + 1]));
        }
        return Value::make_dict(d);
      }
      case Expr::T::Attr: return jinja::get_attr(eval(*e.args[0]), e.name);
      case Expr::T::Item: return jinja::get_item(eval(*e.args[0]), eval(*e.args[1]));
      case Expr::T::Slice: {
        const Value obj = eval(*e.args[0]);
        auto part = [&](int k) { return e.args[k] ? eval(*e.args[k]) : Value::none(); };
        return jinja::slice(obj, part(1), part(2), part(3));
      }
      case Expr::T::Call: {
        const Value f = eval(*e.args[0]);
        if (f.kind != K::Func)
          throw EvalError(f.is_undefined() && !f.s.empty() ? f.s
                                                          : std::string("'") + jinja::type_name(f) + "' object is not callable");
        Args a = eval_args(e, 1);
        return (*f.fn)(a);
      }
      case Expr::T::Filter: {
        const Value v = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        return jinja::apply_filter(e.name, v, a);
      }
      case Expr::T::Test: {
        const Value v = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        return Value::boolean(jinja::apply_test(e.name, v, a) != e.negated);
      }
      case Expr::T::Neg:
      case Expr::T::Pos: {
        const Value v = eval(*e.args[0]);
        if (!v.is_number())
          throw EvalError(std::string("bad operand type for unary ") + (e.type == Expr::T::Neg ? "-" : "+") + ": '" +
                          jinja::type_name(v) + "'");
        if (e.type == Expr::T::Pos) return v.kind == K::Bool ? Value::integer(v.b) : v;
        return v.kind == K::Float ? Value::real(-v.f) : Value::integer(-(v.kind == K::Bool ? v.b : v.i));
      }
      case Expr::T::Not: return Value::boolean(!jinja::truthy(eval(*e.args[0])));
      case Expr::T::Binary: return jinja::binary_op(e.name, eval(*e.args[0]), eval(*e.args[1]));
      case Expr::T::Concat: return Value::str(jinja::to_str(eval(*e.args[0])) + jinja::to_str(eval(*e.args[1])));
      case Expr::T::Compare: {
        Value left = eval(*e.args[0]);
        for (std::size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1]);
          if (!compare(e.ops[k], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::T::And: {
        Value a = eval(*e.args[0]);
        return jinja::truthy(a) ? eval(*e.args[1]) : a;
      }
      case Expr::T::Or: {
        Value a = eval(*e.args[0]);
        return jinja::truthy(a) ? a : eval(*e.args[1]);
      }
      case Expr::T::Cond:
        if (jinja::truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined("the inline if had no else");
    }
    throw EvalError("unknown expression");
  }
};

Value from_json(const nlohmann::ordered_json& j) {
  using VT = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case VT::boolean: return Value::boolean(j.get<bool>());
    case VT::number_integer:
    case VT::number_unsigned:
      if (j.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) throw EvalError("an integer beyond 64 bits");
      return Value::integer(j.get<std::int64_t>());
    case VT::number_float: return Value::real(j.get<double>());
    case VT::string: return Value::str(j.get<std::string>());
    case VT::array: {
      List items;
      for (const auto& x : j) items.push_back(from_json(x));
      return Value::make_list(std::move(items));
    }
    case VT::object: {
      auto d = std::make_shared<jinja::Dict>();
      for (const auto& [k, v] : j.items()) d->items.emplace_back(Value::str(k), from_json(v));
      return Value::make_dict(d);
    }
    default: return Value::none();
  }
}

}  // namespace

struct ChatTemplate::Impl {
  std::string where;
  Body body;
};

ChatTemplate::ChatTemplate(std::string_view source, std::string where) : impl_(std::make_unique<Impl>()) {
  impl_->where = std::move(where);
  try {
    impl_->body = Parser(Lexer(source).run()).parse();
  } catch (const SyntaxError& e) {
    throw InputError(impl_->where + ": line " + std::to_string(e.line) + ": " + e.what());
  }
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

const std::string& ChatTemplate::where() const { return impl_->where; }

std::string ChatTemplate::render(const nlohmann::ordered_json& variables) const {
  if (!variables.is_object()) throw InputError(impl_->where + ": render needs an object of variables");
  Value globals;
  try {
    globals = from_json(variables);
  } catch (const EvalError& e) {
    throw InputError(impl_->where + ": variables: " + e.what());
  }
  Renderer r(globals);
  return r.render(impl_->body, impl_->where);
}

}  // namespace sppft
