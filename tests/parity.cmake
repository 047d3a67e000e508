# The transformers parity suite: fixtures made by transformers itself (from the
# venv that scripts/install-deps.sh --python creates), then compared by C++ tests.
set(SPPFT_VENV_PYTHON ${CMAKE_BINARY_DIR}/pyenv/bin/python CACHE FILEPATH "Python with the test references (scripts/install-deps.sh --python)")
add_test(NAME parity.make_fixtures
         COMMAND ${SPPFT_VENV_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/make_fixtures.py ${CMAKE_BINARY_DIR}/parity)
set_tests_properties(parity.make_fixtures PROPERTIES FIXTURES_SETUP parity_fixtures LABELS parity TIMEOUT 900)
set_tests_properties(parity.parity_test PROPERTIES FIXTURES_REQUIRED parity_fixtures TIMEOUT 900)
set_tests_properties(parity.train_parity_test PROPERTIES FIXTURES_REQUIRED parity_fixtures TIMEOUT 900)

# Tokenizers against transformers' own ids on 14 tokenizer directories made for the purpose.
add_test(NAME engine.make_tokenizer_fixtures
         COMMAND ${SPPFT_VENV_PYTHON} ${CMAKE_SOURCE_DIR}/tests/engine/make_tokenizer_fixtures.py ${CMAKE_BINARY_DIR}/tokenizer-fixtures)
set_tests_properties(engine.make_tokenizer_fixtures PROPERTIES FIXTURES_SETUP tokenizer_fixtures LABELS parity TIMEOUT 600)
set_tests_properties(engine.tokenizer_test PROPERTIES FIXTURES_REQUIRED "tokenizer_fixtures;parity_fixtures" TIMEOUT 600
  ENVIRONMENT "${SPPFT_TEST_ENV};SPPFT_TOKENIZER_FIXTURES=${CMAKE_BINARY_DIR}/tokenizer-fixtures;SPPFT_PARITY_FIXTURES=${CMAKE_BINARY_DIR}/parity")
set_tests_properties(parity.analysis_parity_test PROPERTIES FIXTURES_REQUIRED parity_fixtures TIMEOUT 900)

# Chat templates against transformers' own renderings: the Hub templates of the supported
# families and synthetic ones for each Jinja feature (tests/engine/make_chat_template_fixtures.py).
add_test(NAME engine.make_chat_template_fixtures
         COMMAND ${SPPFT_VENV_PYTHON} ${CMAKE_SOURCE_DIR}/tests/engine/make_chat_template_fixtures.py ${CMAKE_BINARY_DIR}/chat-template-fixtures)
set_tests_properties(engine.make_chat_template_fixtures PROPERTIES FIXTURES_SETUP chat_template_fixtures LABELS parity TIMEOUT 300)
set_tests_properties(engine.chat_template_test PROPERTIES FIXTURES_REQUIRED chat_template_fixtures
  ENVIRONMENT "${SPPFT_TEST_ENV};SPPFT_CHAT_TEMPLATE_FIXTURES=${CMAKE_BINARY_DIR}/chat-template-fixtures/chat_templates.json")

# The same templates inside checkpoints: prompt ids and chat training labels vs transformers.
add_test(NAME parity.make_chat_fixtures
         COMMAND ${SPPFT_VENV_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/make_chat_fixtures.py ${CMAKE_BINARY_DIR}/parity)
set_tests_properties(parity.make_chat_fixtures PROPERTIES FIXTURES_REQUIRED parity_fixtures FIXTURES_SETUP chat_fixtures
  LABELS parity TIMEOUT 300)
set_tests_properties(parity.chat_parity_test PROPERTIES FIXTURES_REQUIRED "parity_fixtures;chat_fixtures" TIMEOUT 600)
