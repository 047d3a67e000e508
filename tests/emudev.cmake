# The emulated-device build: the whole product compiled once more as plain C++ with
# SPPFT_HAVE_CUDA and SPPFT_HAVE_NCCL, its CUDA headers resolved to tests/emu/device/ (runtime:
# host memory, streams run as late as CUDA allows, emu_runtime.h; cuBLASLt: fp32 GEMM through
# OpenBLAS; NCCL: ranks as processes meeting over a Unix socket; NVTX: no-ops) and
# every kernels/cuda/*.cu rewritten by tests/emu/translate.py so that each <<<...>>> launch runs
# the kernel on emulated warps (emu_cuda.h). The tests in tests/gpu then find two "GPUs"
# (SPPFT_EMU_DEVICES=2) and run for real: host code, launch configurations, scratch buffers,
# device memory accounting, stream ordering, `sppft ... --device cuda` on one rank and on two -
# everything but the hardware's rounding and its speed.
# ctest label `gpu_emu`, names gpu_emu.<test>. x86-64 only (the fiber switch is assembly).
# Not in `all` (a second build of everything would slow `make` / `make demo` by minutes):
# `make test` builds the target `emudev_tests` before running ctest, and for a plain `ctest` the
# fixture test gpu_emu.build builds it first (a no-op when it is built).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  set(emudev_gen ${CMAKE_BINARY_DIR}/emudev_gen)
  set(emudev_kernels)
  foreach(cu ${SPPFT_CUDA_SRC})
    get_filename_component(name ${cu} NAME_WE)
    list(APPEND emudev_kernels ${emudev_gen}/${name}.cpp)
  endforeach()
  add_custom_command(
    OUTPUT ${emudev_kernels}
    COMMAND Python3::Interpreter ${CMAKE_CURRENT_SOURCE_DIR}/emu/translate.py ${CMAKE_SOURCE_DIR} ${emudev_gen}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/emu/translate.py ${CMAKE_CURRENT_SOURCE_DIR}/emu/shared_decls.py ${SPPFT_CUDA_SRC}
    COMMENT "Rewriting the CUDA sources for the emulated-device build")

  add_custom_target(emudev_tests)
  add_library(sppft_emudev STATIC EXCLUDE_FROM_ALL ${SPPFT_ENGINE_SRC} ${SPPFT_KERNELS_SRC} ${emudev_kernels} ${SPPFT_MODELS_SRC}
                                  ${SPPFT_TRAINER_SRC} ${SPPFT_ANALYSIS_SRC})
  target_include_directories(sppft_emudev BEFORE PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/emu/device ${CMAKE_CURRENT_SOURCE_DIR}/emu)
  target_include_directories(sppft_emudev PUBLIC ${CMAKE_SOURCE_DIR} ${SENTENCEPIECE_INCLUDE_DIR} ${CBLAS_INCLUDE_DIR})
  target_compile_definitions(sppft_emudev PUBLIC SPPFT_HAVE_CUDA=1 SPPFT_HAVE_NCCL=1 SPPFT_EMULATED_DEVICE=1
                             PRIVATE SPPFT_SOURCE_DATA_DIR="${CMAKE_SOURCE_DIR}/data")
  # Kernel code compiled as C++: unsigned threadIdx comparisons, CUDA pragmas, type punning of packs.
  target_compile_options(sppft_emudev PRIVATE -fno-strict-aliasing -Wno-unknown-pragmas -Wno-sign-compare
                         -Wno-unused-parameter -Wno-missing-field-initializers)
  target_link_libraries(sppft_emudev PUBLIC nlohmann_json::nlohmann_json OpenMP::OpenMP_CXX ${SENTENCEPIECE_LIBRARY}
                        ${SENTENCEPIECE_TRAIN_LIBRARY} PkgConfig::PCRE2 ${BLAS_LIBRARIES})
  if(MPI_C_FOUND)
    target_compile_definitions(sppft_emudev PUBLIC SPPFT_HAVE_MPI=1)
    target_link_libraries(sppft_emudev PRIVATE MPI::MPI_C)
  endif()

  # No OUTPUT_NAME sppft / bench_kernels: Ninja would then alias the real targets' names to
  # these emulated copies (`cmake --build --target bench_kernels` built emudev/bench_kernels).
  add_executable(sppft_emudev_cli EXCLUDE_FROM_ALL ${SPPFT_TOOL_SRC})
  target_link_libraries(sppft_emudev_cli PRIVATE sppft_emudev)
  set_target_properties(sppft_emudev_cli PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/emudev)

  add_executable(emudev_bench_kernels EXCLUDE_FROM_ALL ${CMAKE_SOURCE_DIR}/bench/bench_kernels.cpp)
  target_link_libraries(emudev_bench_kernels PRIVATE sppft_emudev)
  set_target_properties(emudev_bench_kernels PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/emudev)
  # Checked once every target exists (bench/ comes after tests/).
  function(sppft_check_emudev_file_names)
    foreach(t sppft_emudev_cli emudev_bench_kernels)
      get_target_property(file_name ${t} OUTPUT_NAME)
      if(file_name AND TARGET ${file_name})
        message(FATAL_ERROR "${t}: OUTPUT_NAME ${file_name} is a real target's name; Ninja would build ${t} for it")
      endif()
    endforeach()
  endfunction()
  cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL sppft_check_emudev_file_names)

  add_test(NAME gpu_emu.build COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target emudev_tests)
  set_tests_properties(gpu_emu.build PROPERTIES LABELS gpu_emu TIMEOUT 1800 FIXTURES_SETUP emudev)

  file(GLOB emudev_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/gpu/*_test.cpp)
  foreach(src ${emudev_tests})
    get_filename_component(name ${src} NAME_WE)
    add_executable(emudev_${name} EXCLUDE_FROM_ALL ${src} ${CMAKE_CURRENT_SOURCE_DIR}/doctest_main.cpp ${CMAKE_CURRENT_SOURCE_DIR}/test_util.cpp)
    target_include_directories(emudev_${name} PRIVATE ${DOCTEST_INCLUDE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
    target_link_libraries(emudev_${name} PRIVATE sppft_emudev)
    set_target_properties(emudev_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/emudev)
    add_dependencies(emudev_tests emudev_${name} sppft_emudev_cli emudev_bench_kernels)
    add_test(NAME gpu_emu.${name} COMMAND emudev_${name})
    set_tests_properties(gpu_emu.${name} PROPERTIES LABELS gpu_emu TIMEOUT 900 FIXTURES_REQUIRED emudev ENVIRONMENT
      "SPPFT_EMU_DEVICES=2;SPPFT_SOURCE_DIR=${CMAKE_SOURCE_DIR};SPPFT_BUILD_DIR=${CMAKE_BINARY_DIR};SPPFT_BIN=$<TARGET_FILE:sppft_emudev_cli>;SPPFT_BENCH_KERNELS=$<TARGET_FILE:emudev_bench_kernels>;SPPFT_PARITY_DIR=${CMAKE_BINARY_DIR}/parity")
  endforeach()
endif()
