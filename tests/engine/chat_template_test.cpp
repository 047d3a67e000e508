// The chat-template interpreter against jinja2 as transformers configures it.
//
// With SPPFT_CHAT_TEMPLATE_FIXTURES=FILE (made by `tests/engine/make_chat_template_fixtures.py DIR`:
// 58 Hub chat templates - every supported family's and 46 more (tests/engine/chat_templates/) -
// and synthetic templates for each Jinja feature, rendered by transformers), every case must
// render to the same text, or fail where jinja2 fails. The cases below run without Python; their
// expected strings are jinja2 3.1.6's.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "engine/chat_template.h"
#include "engine/error.h"

using namespace sppft;
using ojson = nlohmann::ordered_json;

namespace {
std::string render(const std::string& tmpl, const ojson& vars = ojson::object()) {
  return ChatTemplate(tmpl, "t").render(vars);
}
}  // namespace

TEST_CASE("whitespace control as jinja2 with trim_blocks and lstrip_blocks") {
  CHECK(render("a\n  {# c #}\nb\n  {#- c -#}  \nd") == "a\nbd");
  CHECK(render("{% if true %}\n  x\n{% endif %}\n") == "  x\n");
  CHECK(render("  {% if true %}y{% endif %}") == "y");
  CHECK(render("  {%+ if true %}y{% endif %}") == "  y");
  CHECK(render("{% if true +%}\ny{% endif %}") == "\ny");
  CHECK(render("a  {{- 'b' -}}  \n c") == "abc");
  CHECK(render("  {{ 'v' }}") == "  v");
}

TEST_CASE("values print as Python prints them") {
  CHECK(render("{{ 1.0 }} {{ 1e16 }} {{ 0.00001 }} {{ [1, \"a\", None, True, 2.5] }} {{ {\"a\": (1,)} }} {{ 7 // -2 }} "
               "{{ -7 % 3 }} {{ 2 ** 10 }} {{ 10 / 4 }}") ==
        "1.0 1e+16 1e-05 [1, 'a', None, True, 2.5] {'a': (1,)} -4 2 1024 2.5");
  CHECK(render("{{ \"it's\" }}|{{ [\"it's\"] }}") == "it's|[\"it's\"]");
  CHECK(render("{{ \"abc\"[-1] }}{{ \"abc\"[::-1] }}{{ [1,2,3][1:] }}{{ messages[0].content }}",
               {{"messages", ojson::array({{{"role", "user"}, {"content", "hi"}}})}}) == "ccba[2, 3]hi");
  CHECK(render("{{ 3 if false }}|{{ (3 if false) is defined }}") == "|False");
}

TEST_CASE("scopes: a for loop's sets stay in their iteration, macros see the globals at call time") {
  CHECK(render("{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}") == "1110");
  CHECK(render("{% for i in range(3) %}{% if i == 0 %}{% set y = 5 %}{% endif %}{{ y }},{% endfor %}") == "5,,,");
  CHECK(render("{% macro m(a, b=2) %}[{{ a }}{{ b }}{{ top }}]{% endmacro %}{% set top = 9 %}{{ m(1) }}{{ m(1, b=3) }}") ==
        "[129][139]");
  CHECK(render("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "6");
}

TEST_CASE("errors name the template and line; raise_exception is reported as the template's") {
  CHECK_THROWS_WITH_AS(render("\n{{ x.y }}"), doctest::Contains("t: line 2: 'x' is undefined"), InputError);
  CHECK_THROWS_WITH_AS(render("{{ raise_exception('roles must alternate') }}"),
                       doctest::Contains("the template raised an exception: roles must alternate"), InputError);
  CHECK_THROWS_WITH_AS(render("{% if x %}"), doctest::Contains("expected 'elif' or 'else' or 'endif'"), InputError);
  CHECK_THROWS_WITH_AS(render("{{ x | nosuchfilter }}"), doctest::Contains("no filter named 'nosuchfilter'"), InputError);
  CHECK_THROWS_WITH_AS(render("{% include 'x' %}"), doctest::Contains("unsupported or unexpected tag 'include'"), InputError);
  CHECK_THROWS_WITH_AS(render("{{ 1 / 0 }}"), doctest::Contains("division by zero"), InputError);
}

TEST_CASE("Python's semantics where templates met them: undefined containers, any hashable dict key, unicode case") {
  CHECK(render("{{ 'citations' in controls }}|{{ 'x' not in controls }}") == "False|True");  // Granite 3.x
  CHECK(render("{% set d = {0: 'zero', 512: 'b'} %}{{ d[512] }}|{{ d|dictsort }}|{{ d }}") ==
        "b|[(0, 'zero'), (512, 'b')]|{0: 'zero', 512: 'b'}");  // Seed-OSS
  CHECK(render("{{ 'ÄÉ'|lower }}|{{ 'é'|upper }}|{{ 'élan vital'|title }}|{{ 'élan'|capitalize }}|{{ 'straße'.upper() }}") ==
        "äé|É|Élan Vital|Élan|STRASSE");
  CHECK(render("{{ 'Hello'.startswith('He', 1) }}|{{ 'Hello'.endswith('l', 0, 3) }}") == "False|True");
  CHECK(render("{{ (1, 2) == [1, 2] }}") == "False");
  CHECK(render("[{{ strftime_now('%Z') }}][{{ strftime_now('%z') }}]") == "[][]");
  CHECK(render("{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}") == "1(2,){'k': 3}");
  CHECK(render("{{ [{'a': 3}, {'a': 1}]|max(attribute='a') }}") == "{'a': 3}");
  // Where sppft stops short of Python, it says so instead of printing something else.
  CHECK_THROWS_WITH_AS(render("{{ nothere|int }}"), doctest::Contains("'nothere' is undefined"), InputError);
  CHECK_THROWS_WITH_AS(render("{{ 9223372036854775807 + 1 }}"), doctest::Contains("integer overflow"), InputError);
  CHECK_THROWS_WITH_AS(render("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}"), doctest::Contains("takes not more than 1"),
                       InputError);
  CHECK_THROWS_WITH_AS(render("{{ '\\N{BULLET}' }}"), doctest::Contains("escapes (Unicode character names) are not supported"),
                       InputError);
}

TEST_CASE("every case of the transformers fixtures renders as transformers renders it") {
  const char* path = std::getenv("SPPFT_CHAT_TEMPLATE_FIXTURES");
  if (!path || !*path) {
    MESSAGE("SPPFT_CHAT_TEMPLATE_FIXTURES not set: skipping the transformers comparison");
    return;
  }
  std::ifstream in(path);
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  const ojson fx = ojson::parse(ss.str());
  int rendered = 0, failed_as_expected = 0;
  for (const auto& c : fx.at("cases")) {
    const std::string name = c.at("template_name").get<std::string>();
    CAPTURE(name);
    const ojson& ctx = c.at("context");
    if (c.contains("error")) {
      CAPTURE(c.at("error").get<std::string>());
      CHECK_THROWS_AS(ChatTemplate(c.at("template").get<std::string>(), name).render(ctx), InputError);
      ++failed_as_expected;
      continue;
    }
    std::string got;
    try {
      got = ChatTemplate(c.at("template").get<std::string>(), name).render(ctx);
    } catch (const InputError& e) {
      FAIL_CHECK(e.what());
      continue;
    }
    CHECK(got == c.at("expected").get<std::string>());
    ++rendered;
  }
  MESSAGE(rendered << " renderings and " << failed_as_expected << " errors compared with transformers "
                   << fx.value("transformers_version", "?"));
  CHECK(rendered > 0);
}
