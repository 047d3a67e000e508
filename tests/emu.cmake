# CPU emulation of the BF16 tensor-core attention kernels (tests/emu/): the kernel source,
# unchanged apart from its includes and shared-memory declarations (extract.py checks this),
# runs on emulated warps (fibers with real barriers and shuffles, WMMA on whole 16x16
# matrices, guard pages) against the CPU reference - so CI checks the kernels' logic
# without a GPU. The fiber switch is x86-64 assembly: elsewhere the test is not built.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  set(emu_gen ${CMAKE_BINARY_DIR}/emu_gen)
  add_custom_command(
    OUTPUT ${emu_gen}/attention_train_tc_emu.h ${emu_gen}/attention_tiles_emu.cuh ${emu_gen}/cuda_common_emu.cuh
    COMMAND Python3::Interpreter ${CMAKE_CURRENT_SOURCE_DIR}/emu/extract.py ${CMAKE_SOURCE_DIR} ${emu_gen}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/emu/extract.py ${CMAKE_SOURCE_DIR}/kernels/cuda/attention_train_tc.cu
            ${CMAKE_SOURCE_DIR}/kernels/cuda/attention_tiles.cuh ${CMAKE_SOURCE_DIR}/kernels/cuda/cuda_common.cuh
    COMMENT "Extracting the tensor-core attention kernels for the CPU emulation test")
  add_executable(tc_attention_emu emu/tc_attention_emu.cpp ${emu_gen}/attention_train_tc_emu.h)
  target_include_directories(tc_attention_emu PRIVATE ${emu_gen} ${CMAKE_CURRENT_SOURCE_DIR}/emu ${CMAKE_SOURCE_DIR})
  target_compile_options(tc_attention_emu PRIVATE -fno-strict-aliasing -Wno-unknown-pragmas)
  target_link_libraries(tc_attention_emu PRIVATE sppft_kernels)
  set_target_properties(tc_attention_emu PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME kernels.tc_attention_emu COMMAND tc_attention_emu)
  set_tests_properties(kernels.tc_attention_emu PROPERTIES LABELS kernels)
endif()
