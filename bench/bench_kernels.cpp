// GPU kernel benchmarks against ceilings measured on the same GPU: memory-bound
// ops in GB/s next to the device-to-device copy bandwidth, GEMMs and attention in
// TFLOP/s next to the cuBLASLt BF16 GEMM rate. Timed with CUDA events around
// `reps` launches after two warm-up calls; the median of 5 such samples is reported.
//   bench_kernels [--json] [--quick | --smoke] [--partial FILE]
// --partial FILE: after every row, FILE (written atomically) holds the JSON of the rows so
// far with "partial": true, so a run stopped by a time limit still leaves its numbers.
// Shapes are Llama-3-8B's (hidden 4096, intermediate 14336, 32 query / 8 KV heads
// of 128) at 16384 tokens; attention B = 4 x T = 4096, causal, bf16 (--quick: 1/4
// of the tokens; --smoke: toy shapes - hidden 64, 4 / 2 heads of 32, 2 x 64 tokens - that only
// check the benchmark runs end to end, e.g. on the emulated device). Bytes counted are the bytes each op must move (inputs read once,
// outputs written once); FLOPs of a causal attention forward are 2 * 2 * T^2/2 * D
// per (sequence, query head), the backward 2.5x that (the flash-attention convention).
// Without a GPU it prints "skipped: no CUDA device" and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/fs.h"
#include "engine/json.h"
#include "kernels/ops.h"
#ifdef SPPFT_HAVE_CUDA
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#endif

using namespace sppft;

#ifdef SPPFT_HAVE_CUDA
namespace {

// Median over 5 samples of the mean time of `reps` calls, in ms. The ops queue on
// the legacy default stream, where the events are recorded too.
bool g_smoke = false;  // --smoke: one warm-up call and one sample of one call

double time_ms(const std::function<void()>& fn, int reps) {
  cudaEvent_t a, b;
  SPPFT_CUDA_CHECK(cudaEventCreate(&a));
  SPPFT_CUDA_CHECK(cudaEventCreate(&b));
  if (g_smoke) reps = 1;
  for (int i = 0; i < (g_smoke ? 1 : 2); ++i) fn();
  std::vector<double> samples;
  for (int s = 0; s < (g_smoke ? 1 : 5); ++s) {
    cudaEventRecord(a, 0);
    for (int i = 0; i < reps; ++i) fn();
    cudaEventRecord(b, 0);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    samples.push_back(ms / reps);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cuda::synchronize();  // a faulting kernel throws here
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// N(0, scale) values (or `offset` + them), stored in `dt` on the GPU.
Tensor random_device(const Shape& shape, DType dt, std::uint64_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  Tensor host = Tensor::empty(shape, dt, MemCategory::Workspace);
  for (std::int64_t i = 0; i < host.numel(); ++i) {
    const float v = offset + nd(rng);
    if (dt == DType::F32) host.data<float>()[i] = v;
    else host.data<std::uint16_t>()[i] = f32_to_bf16(v);
  }
  return cuda::to_device(host, MemCategory::Workspace);
}

Tensor positions_device(std::int64_t n, std::int64_t seq) {
  Tensor host = Tensor::empty({n}, DType::I32, MemCategory::Workspace);
  for (std::int64_t i = 0; i < n; ++i) host.data<std::int32_t>()[i] = static_cast<std::int32_t>(i % seq);
  return cuda::to_device(host, MemCategory::Workspace);
}

std::string attention_shape(std::int64_t batch, std::int64_t hq, std::int64_t hkv, std::int64_t seq, std::int64_t d) {
  std::string s = "B";  // appended, not prepended: GCC 12 warns (-Wrestrict) on "B" + string
  s += std::to_string(batch) + " Hq" + std::to_string(hq) + " Hkv" + std::to_string(hkv) + " T" + std::to_string(seq) +
       " D" + std::to_string(d) + " causal";
  return s;
}

struct Row {
  std::string name, shape, unit;
  double ms, rate, share;  // rate: GB/s or TFLOP/s; share of the ceiling
};

// A BF16 or F32 device tensor as host floats.
std::vector<float> host_floats(const Tensor& t) {
  const Tensor h = cuda::to_host(t, MemCategory::Workspace);
  std::vector<float> v(static_cast<std::size_t>(h.numel()));
  convert_to_f32(h.raw(), h.dtype(), v.data(), v.size());
  return v;
}

// max |a - ref| / max |ref| (infinite when a has a NaN).
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& ref) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - ref[i]);
    err = std::isnan(diff) ? INFINITY : std::max(err, diff);
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  }
  return scale > 0 ? err / scale : err;
}

}  // namespace
#endif

int main(int argc, char** argv) {
  bool json = false, quick = false, smoke = false;
  std::string partial_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") json = true;
    else if (a == "--quick") quick = true;
    else if (a == "--smoke") smoke = true;
    else if (a == "--partial" && i + 1 < argc) partial_path = argv[++i];
    else {
      std::fprintf(stderr, "error: bench_kernels: unknown argument '%s' (expected --json, --quick, --smoke or --partial FILE)\n",
                   argv[i]);
      return 2;
    }
  }
#ifndef SPPFT_HAVE_CUDA
  (void)quick, (void)smoke, (void)partial_path;
  std::printf(json ? "{\"skipped\": \"built without CUDA\"}\n" : "skipped: no CUDA device (built without CUDA)\n");
  return 0;
#else
  if (cuda_device_count() == 0) {
    std::printf(json ? "{\"skipped\": \"no CUDA device\"}\n" : "skipped: no CUDA device\n");
    return 0;
  }
  try {
    const std::int64_t h = smoke ? 64 : 4096, f = smoke ? 128 : 14336, hq = smoke ? 4 : 32, hkv = smoke ? 2 : 8,
                       d = smoke ? 32 : 128;
    const std::int64_t seq = smoke ? 64 : quick ? 1024 : 4096, batch = smoke ? 2 : 4, n = batch * seq;
    const std::string attn_shape = attention_shape(batch, hq, hkv, seq, d);
    g_smoke = smoke;
    const auto bf = DType::BF16;
    std::vector<Row> rows;
    double copy_gbs = 0, gemm_tf = 0;
    Json agreement, agreement_d256, agreement_d96;  // each tensor-core path against the CUDA-core one
    auto to_json = [&](bool partial) {
      Json j = {{"gpu", cuda_device_description(0)}, {"copy_gbs", copy_gbs}, {"gemm_bf16_tflops", gemm_tf},
                {"attention_agreement", agreement}, {"attention_agreement_d256", agreement_d256},
                {"attention_agreement_d96", agreement_d96}, {"rows", Json::array()}};
      if (partial) j["partial"] = true;
      for (const auto& r : rows)
        j["rows"].push_back({{"op", r.name}, {"shape", r.shape}, {"ms", r.ms}, {"rate", r.rate}, {"unit", r.unit}, {"share_of_ceiling", r.share}});
      return j;
    };
    auto add_row = [&](Row r) {
      rows.push_back(std::move(r));
      if (!partial_path.empty()) atomic_write_text(partial_path, to_json(true).dump(2) + "\n");
    };
    auto add_bw = [&](const std::string& name, const std::string& shape, double bytes, double ms, double ceiling) {
      const double gbs = bytes / (ms * 1e-3) / 1e9;
      add_row({name, shape, "GB/s", ms, gbs, ceiling > 0 ? gbs / ceiling : 0});
    };
    auto add_flops = [&](const std::string& name, const std::string& shape, double flops, double ms, double ceiling) {
      const double tf = flops / (ms * 1e-3) / 1e12;
      add_row({name, shape, "TFLOP/s", ms, tf, ceiling > 0 ? tf / ceiling : 0});
    };

    // Ceiling 1: device-to-device copy (bytes read + bytes written).
    const std::size_t copy_bytes = smoke ? std::size_t{1} << 20 : std::size_t{1} << 30;
    void *src = nullptr, *dst = nullptr;
    SPPFT_CUDA_CHECK(cudaMalloc(&src, copy_bytes));
    SPPFT_CUDA_CHECK(cudaMalloc(&dst, copy_bytes));
    const double copy_ms = time_ms([&] { cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, 0); }, 10);
    cudaFree(src);
    cudaFree(dst);
    add_bw("copy (ceiling)", std::to_string(copy_bytes >> 20) + " MiB D2D", 2.0 * copy_bytes, copy_ms, 0);
    copy_gbs = rows.back().rate;

    // Ceiling 2: cuBLASLt BF16 GEMM, the MLP up projection's shape.
    Tensor x = random_device({n, h}, bf, 1), w_up = random_device({f, h}, bf, 2, 0.02f), y_up = random_device({n, f}, bf, 3);
    const double gemm_ms = time_ms([&] { ops::linear_forward(x, w_up, nullptr, y_up); }, 5);
    add_flops("linear bf16 (ceiling)", std::to_string(n) + "x" + std::to_string(h) + " . " + std::to_string(f) + "x" + std::to_string(h),
              2.0 * n * h * f, gemm_ms, 0);
    gemm_tf = rows.back().rate;

    // Memory-bound ops, bf16 activations.
    Tensor norm_w = random_device({h}, bf, 4, 0.1f, 1.0f), y = random_device({n, h}, bf, 5);
    add_bw("rmsnorm_forward", std::to_string(n) + "x" + std::to_string(h), 2.0 * n * h * 2,
           time_ms([&] { ops::rmsnorm_forward(x, norm_w, 1e-5f, false, y); }, 20), copy_gbs);
    Tensor resid = random_device({n, h}, bf, 20), delta = random_device({n, h}, bf, 21);
    add_bw("add_rmsnorm_forward (fused)", std::to_string(n) + "x" + std::to_string(h), 4.0 * n * h * 2,
           time_ms([&] { ops::add_rmsnorm_forward(resid, delta, norm_w, 1e-5f, false, y); }, 20), copy_gbs);
    Tensor inv_freq = Tensor::empty({d / 2}, DType::F32, MemCategory::Workspace);
    for (std::int64_t i = 0; i < d / 2; ++i) inv_freq.data<float>()[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / d));
    Tensor inv_freq_dev = cuda::to_device(inv_freq, MemCategory::Workspace), pos = positions_device(n, seq);
    Tensor q = random_device({n, hq * d}, bf, 6);
    add_bw("rope_forward", std::to_string(n) + "x" + std::to_string(hq * d), 2.0 * n * hq * d * 2,
           time_ms([&] { ops::rope_forward(q, pos, inv_freq_dev, d); }, 20), copy_gbs);
    Tensor gate = random_device({n, f}, bf, 7), up = random_device({n, f}, bf, 8), act = random_device({n, f}, bf, 9);
    add_bw("glu_forward (SwiGLU)", std::to_string(n) + "x" + std::to_string(f), 3.0 * n * f * 2,
           time_ms([&] { ops::glu_forward(gate, up, ops::GluActivation::SiLU, act); }, 20), copy_gbs);
    add_bw("add_inplace", std::to_string(n) + "x" + std::to_string(h), 3.0 * n * h * 2,
           time_ms([&] { ops::add_inplace(y, x); }, 20), copy_gbs);
    Tensor x_f32 = Tensor::empty({n, h}, DType::F32, MemCategory::Workspace, Device::CUDA);
    add_bw("convert bf16 -> f32", std::to_string(n) + "x" + std::to_string(h), 6.0 * n * h,
           time_ms([&] { ops::convert(x, x_f32); }, 20), copy_gbs);

    // Backward of the memory-bound ops and the linear backward GEMMs.
    Tensor dy = random_device({n, h}, bf, 17), dx = random_device({n, h}, bf, 18);
    Tensor dnorm_w = random_device({h}, DType::F32, 19);
    add_bw("rmsnorm_backward (+dw)", std::to_string(n) + "x" + std::to_string(h), 3.0 * n * h * 2,
           time_ms([&] { ops::rmsnorm_backward(x, norm_w, dy, 1e-5f, false, dx, &dnorm_w); }, 20), copy_gbs);
    add_bw("rmsnorm_backward (+dw, dx accumulated)", std::to_string(n) + "x" + std::to_string(h), 4.0 * n * h * 2,
           time_ms([&] { ops::rmsnorm_backward(x, norm_w, dy, 1e-5f, false, dx, &dnorm_w, true); }, 20), copy_gbs);
    add_bw("rope_backward", std::to_string(n) + "x" + std::to_string(hq * d), 2.0 * n * hq * d * 2,
           time_ms([&] { ops::rope_backward(q, pos, inv_freq_dev, d); }, 20), copy_gbs);
    Tensor dgate = random_device({n, f}, bf, 20), dup = random_device({n, f}, bf, 21);
    add_bw("glu_backward (SwiGLU)", std::to_string(n) + "x" + std::to_string(f), 5.0 * n * f * 2,
           time_ms([&] { ops::glu_backward(gate, up, act, ops::GluActivation::SiLU, dgate, dup); }, 20), copy_gbs);
    add_flops("linear_backward_input bf16", std::to_string(n) + "x" + std::to_string(f) + " . " + std::to_string(f) + "x" + std::to_string(h),
              2.0 * n * h * f, time_ms([&] { ops::linear_backward_input(y_up, w_up, x, false); }, 5), gemm_tf);
    Tensor dw_up = random_device({f, h}, DType::F32, 22, 0.0f);
    add_flops("linear_backward_weight f32 acc", std::to_string(f) + "x" + std::to_string(h) + " += dy^T x",
              2.0 * n * h * f, time_ms([&] { ops::linear_backward_weight(y_up, x, dw_up, nullptr); }, 5), gemm_tf);

    // AdamW over one block's worth of tensors (Llama-3-8B: 218M parameters), bf16 weights,
    // bf16 grads, fp32 master and moments: reads grad 2 + master 4 + m 4 + v 4, writes
    // param 2 + master 4 + m 4 + v 4 bytes per parameter.
    std::vector<Tensor> params, grads_, masters, ms, vs;
    const std::vector<Shape> block_shapes = {{hq * d, h}, {hkv * d, h}, {hkv * d, h}, {h, hq * d}, {f, h}, {f, h}, {h, f}, {h}, {h}};
    std::int64_t block_params = 0;
    for (std::size_t i = 0; i < block_shapes.size(); ++i) {
      params.push_back(random_device(block_shapes[i], bf, 100 + i, 0.02f));
      grads_.push_back(random_device(block_shapes[i], bf, 200 + i, 1e-3f));
      masters.push_back(random_device(block_shapes[i], DType::F32, 300 + i, 0.02f));
      ms.push_back(random_device(block_shapes[i], DType::F32, 400 + i, 1e-4f));
      vs.push_back(random_device(block_shapes[i], DType::F32, 500 + i, 0.0f, 1e-6f));
      block_params += shape_numel(block_shapes[i]);
    }
    std::vector<cuda::AdamWTensor> table;
    for (std::size_t i = 0; i < params.size(); ++i) table.push_back({&params[i], &grads_[i], &ms[i], &vs[i], &masters[i], 0.0f});
    std::int64_t step = 1;
    add_bw("adamw_multi_tensor (1 block)", std::to_string(block_params / 1000000) + "M params, bf16 + fp32 master",
           28.0 * block_params, time_ms([&] { cuda::adamw_multi_tensor(table, 1e-5, 0.9, 0.999, 1e-8, step++); }, 5), copy_gbs);
    Tensor big = random_device({block_params}, bf, 600);
    add_bw("sum_squares (1 block of grads)", std::to_string(block_params / 1000000) + "M bf16", 2.0 * block_params,
           time_ms([&] { (void)ops::sum_squares(big); }, 5), copy_gbs);

    // Attention last: its CUDA-core rows are the slowest, so a run stopped by gpu_check.sh's
    // limit loses them (--partial keeps the rest) rather than the optimizer's.
    // Inference kernel over a cache filled with the whole sequence (prefill).
    Tensor k = random_device({n, hkv * d}, bf, 10), v = random_device({n, hkv * d}, bf, 11), out = random_device({n, hq * d}, bf, 12);
    Tensor kc = Tensor::empty({batch, hkv, seq, d}, bf, MemCategory::Workspace, Device::CUDA);
    Tensor vc = Tensor::empty({batch, hkv, seq, d}, bf, MemCategory::Workspace, Device::CUDA);
    std::vector<ops::AttentionSeq> seqs;
    for (std::int64_t b = 0; b < batch; ++b) seqs.push_back({b * seq, seq, b, 0});  // {q_begin, q_len, slot, past_len}
    ops::kv_cache_write(k, v, seqs, kc, vc);
    const double attn_flops = batch * hq * 2.0 * 2.0 * (static_cast<double>(seq) * seq / 2) * d;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    add_flops("attention_forward (cache)", attn_shape, attn_flops,
              time_ms([&] { ops::attention_forward(q, kc, vc, seqs, scale, 0, out); }, 3), gemm_tf);

    // Training attention (flash-style forward with the log-sum-exp, and its backward).
    // WMMA tensor-core kernels (the default), the same on mma.sync with the fragments in
    // registers, then the CUDA-core kernels they replace. Each path's results (out, lse, dq,
    // dk, dv) are compared with the fp32 CUDA-core path's at the benchmark's shape.
    using AK = cuda::AttentionKernels;
    auto time_train_attention = [&](std::int64_t heads, std::int64_t kv_heads, std::int64_t dim, const std::string& tag,
                                    std::initializer_list<AK> paths, Json& agreement) {
      const std::string shape = attention_shape(batch, heads, kv_heads, seq, dim);
      const double flops = batch * heads * 2.0 * 2.0 * (static_cast<double>(seq) * seq / 2) * dim;
      const float sc = 1.0f / std::sqrt(static_cast<float>(dim));
      Tensor aq = random_device({n, heads * dim}, bf, 30), ak = random_device({n, kv_heads * dim}, bf, 31);
      Tensor av = random_device({n, kv_heads * dim}, bf, 32), ado = random_device({n, heads * dim}, bf, 33);
      Tensor aout = random_device({n, heads * dim}, bf, 34), alse = random_device({n, heads}, DType::F32, 35);
      Tensor adq = random_device({n, heads * dim}, bf, 36), adk = random_device({n, kv_heads * dim}, bf, 37);
      Tensor adv = random_device({n, kv_heads * dim}, bf, 38);
      std::map<AK, std::vector<std::vector<float>>> results;
      for (const AK kernels : paths) {
        cuda::set_attention_kernels(kernels);
        const std::string kind = tag + (kernels == AK::tensor_cores ? ""
                                        : kernels == AK::mma_sync   ? " [mma.sync]"
                                                                    : " [cuda cores]");
        const int reps = kernels == AK::cuda_cores ? 1 : 3;  // fp32 CUDA cores: ~10x the time a call
        const double fwd_ms = time_ms([&] { ops::attention_forward_train(aq, ak, av, seqs, sc, 0, aout, alse); }, reps);
        add_flops("attention_forward_train" + kind, shape, flops, fwd_ms, gemm_tf);
        const double bwd_ms =
            time_ms([&] { ops::attention_backward(aq, ak, av, aout, alse, ado, seqs, sc, 0, adq, adk, adv); }, reps);
        add_flops("attention_backward" + kind, shape, 2.5 * flops, bwd_ms, gemm_tf);
        add_flops("attention fwd+bwd" + kind, shape, 3.5 * flops, fwd_ms + bwd_ms, gemm_tf);
        for (const Tensor* t : {&aout, &alse, &adq, &adk, &adv}) results[kernels].push_back(host_floats(*t));
      }
      agreement = {{"shape", shape}, {"reference", "cuda_cores (fp32 math)"}};
      for (const AK kernels : paths) {
        if (kernels == AK::cuda_cores) continue;
        Json& a = agreement[kernels == AK::tensor_cores ? "tensor_cores" : "mma_sync"];
        const char* names[] = {"out", "lse", "dq", "dk", "dv"};
        for (int i = 0; i < 5; ++i) a[names[i]] = max_rel_diff(results[kernels][i], results[AK::cuda_cores][i]);
      }
      cuda::set_attention_kernels(AK::tensor_cores);
    };
    time_train_attention(hq, hkv, d, "", {AK::tensor_cores, AK::mma_sync, AK::cuda_cores}, agreement);
    // gemma-2b's heads (8 query heads, 1 KV head of 256): WMMA with 128-column output blocks
    // in the backward (sm_90's shared memory; mma.sync stops at 128) against CUDA cores.
    time_train_attention(8, 1, 256, " (d256)", {AK::tensor_cores, AK::cuda_cores}, agreement_d256);
    // Phi-3-mini's heads (32 query and 32 KV heads of 96, tiles padded to 96).
    time_train_attention(32, 32, 96, " (d96)", {AK::tensor_cores, AK::mma_sync, AK::cuda_cores}, agreement_d96);

    if (json) {
      std::printf("%s\n", to_json(false).dump(2).c_str());
      return 0;
    }
    std::printf("machine: %s\n", cuda_device_description(0).c_str());
    std::printf("%-28s %-40s %10s %12s %9s\n", "op", "shape", "ms", "rate", "ceiling");
    for (const auto& r : rows)
      std::printf("%-28s %-40s %10.3f %8.1f %-7s %8.0f%%\n", r.name.c_str(), r.shape.c_str(), r.ms, r.rate, r.unit.c_str(), 100 * r.share);
    std::printf("attention paths against the fp32 CUDA-core kernels (max |diff| / max |ref|): %s\n", agreement.dump().c_str());
    std::printf("the same at head_dim 256: %s\n", agreement_d256.dump().c_str());
    std::printf("the same at head_dim 96: %s\n", agreement_d96.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: bench_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
#endif
}
