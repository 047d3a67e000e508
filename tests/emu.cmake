# CPU emulation of CUDA kernels (tests/emu/): the kernel sources, unchanged apart from their
# host tails and shared-memory declarations (extract.py checks this; their CUDA headers are
# tests/emu/device/), run on
# emulated warps (fibers with real barriers and shuffles, WMMA on whole 16x16 matrices, guard
# pages) against the CPU reference - so CI checks the kernels' logic without a GPU. The fiber
# switch is x86-64 assembly: elsewhere the tests are not built.
#   kernels.tc_attention_emu  attention_train_tc.cu (tensor-core attention) and
#                             attention_train_mma.cu (the forward on mma.sync, ldmatrix, cp.async)
#   kernels.rmsnorm_emu       rmsnorm.cu (forward, add + norm, backward, dw)
#   kernels.loss_emu          loss.cu (cross-entropy: target check, rows, loss sum)
#   kernels.optimizer_emu     optimizer.cu (multi-tensor AdamW, sum_squares, scale)
#   kernels.elementwise_emu   glu.cu (glu forward / backward, add_inplace, convert), rope.cu,
#                             embedding.cu (id check, gather, sorted-run scatter backward)
#   kernels.attention_emu     attention.cu (kv_cache_write; attention over the KV cache, F32 and
#                             BF16, every DMAX, split-K partials and their combine)
#   kernels.attention_train_emu  attention_train.cu (CUDA-core training attention: forward with
#                             lse, delta, dK/dV, dQ; F32 and BF16)
#   kernels.linear_emu        linear.cu's own kernels (bias broadcast, fallback GEMM, dbias
#                             column sums), as the three linear ops run without cuBLASLt
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  set(emu_gen ${CMAKE_BINARY_DIR}/emu_gen)
  set(emu_outputs attention_train_tc_emu.h attention_train_mma_emu.h rmsnorm_emu.h loss_emu.h
                  optimizer_emu.h glu_emu.h rope_emu.h
                  embedding_emu.h attention_emu.h attention_train_emu.h linear_emu.h)
  list(TRANSFORM emu_outputs PREPEND ${emu_gen}/)
  add_custom_command(
    OUTPUT ${emu_outputs}
    COMMAND Python3::Interpreter ${CMAKE_CURRENT_SOURCE_DIR}/emu/extract.py ${CMAKE_SOURCE_DIR} ${emu_gen}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/emu/extract.py ${CMAKE_CURRENT_SOURCE_DIR}/emu/shared_decls.py ${CMAKE_SOURCE_DIR}/kernels/cuda/attention_train_tc.cu
            ${CMAKE_SOURCE_DIR}/kernels/cuda/attention_train_mma.cu ${CMAKE_SOURCE_DIR}/kernels/cuda/warp_mma.cuh
            ${CMAKE_SOURCE_DIR}/kernels/cuda/rmsnorm.cu ${CMAKE_SOURCE_DIR}/kernels/cuda/loss.cu
            ${CMAKE_SOURCE_DIR}/kernels/cuda/optimizer.cu ${CMAKE_SOURCE_DIR}/kernels/cuda/glu.cu
            ${CMAKE_SOURCE_DIR}/kernels/cuda/rope.cu ${CMAKE_SOURCE_DIR}/kernels/cuda/embedding.cu
            ${CMAKE_SOURCE_DIR}/kernels/cuda/attention.cu ${CMAKE_SOURCE_DIR}/kernels/cuda/attention_train.cu
            ${CMAKE_SOURCE_DIR}/kernels/cuda/linear.cu
    COMMENT "Extracting CUDA kernels for the CPU emulation tests")
  # emu_test(NAME GENERATED_HEADER): tests/emu/NAME.cpp -> build/tests/NAME, ctest kernels.NAME
  function(emu_test name header)
    add_executable(${name} emu/${name}.cpp ${emu_gen}/${header})
    # emu/device first: the kernels' <cuda_runtime.h>, <mma.h>, ... are the emulated ones.
    target_include_directories(${name} BEFORE PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/emu/device)
    target_include_directories(${name} PRIVATE ${emu_gen} ${CMAKE_CURRENT_SOURCE_DIR}/emu ${CMAKE_SOURCE_DIR})
    target_compile_options(${name} PRIVATE -fno-strict-aliasing -Wno-unknown-pragmas -Wno-sign-compare)  # kernel code: threadIdx.x is unsigned
    target_link_libraries(${name} PRIVATE sppft_kernels)
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME kernels.${name} COMMAND ${name})
    set_tests_properties(kernels.${name} PROPERTIES LABELS kernels TIMEOUT 600)  # a hung kernel fails, not blocks
  endfunction()
  emu_test(tc_attention_emu attention_train_tc_emu.h)
  target_sources(tc_attention_emu PRIVATE ${emu_gen}/attention_train_mma_emu.h)
  emu_test(rmsnorm_emu rmsnorm_emu.h)
  emu_test(loss_emu loss_emu.h)
  emu_test(optimizer_emu optimizer_emu.h)
  emu_test(elementwise_emu glu_emu.h)
  target_sources(elementwise_emu PRIVATE ${emu_gen}/rope_emu.h ${emu_gen}/embedding_emu.h)
  emu_test(attention_emu attention_emu.h)
  emu_test(attention_train_emu attention_train_emu.h)
  emu_test(linear_emu linear_emu.h)
endif()
