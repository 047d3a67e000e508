// Every op of the engine, declared once. Each has an fp32 CPU reference in
// kernels/cpu/<op>.cpp and (where written) a CUDA kernel in kernels/cuda/<op>.cu;
// these functions dispatch on where the tensors live. Shapes are row-major;
// N = number of token rows (all sequences of a batch packed together).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "engine/tensor.h"

namespace sppft::ops {

// Watching the ops (sppft profile --ops): with an observer set on a thread, every op called
// from that thread through this header is reported as begin(name) ... end(name). Only the
// outermost call counts (an op that calls another is one op), and other threads report
// nothing. Without an observer an op costs one thread-local null check.
class OpObserver {
 public:
  virtual ~OpObserver() = default;
  virtual void begin(const char* op) = 0;
  virtual void end(const char* op) = 0;
};
void set_op_observer(OpObserver* observer);  // this thread's; null = off
// Reports the enclosing scope as one op (the dispatch functions use it; so can code that
// calls a backend directly, such as the multi-tensor AdamW). `op` must outlive the scope.
class OpScope {
 public:
  explicit OpScope(const char* op);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* op_;
  OpObserver* observer_;  // null unless this is an outermost op with an observer
};

// y[n, m] = sum_k x[n, k] * w[m, k] + bias[m]
// x [N, K], w [M, K] (Hugging Face nn.Linear layout), bias [M] or null, y [N, M].
void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);

// out[n, :] = table[ids[n], :] * scale.  ids I32 [N], table [V, H], out [N, H].
// Ids outside [0, V) throw InputError.
void embedding_forward(const Tensor& ids, const Tensor& table, float scale, Tensor& out);

// y[n, :] = x[n, :] / sqrt(mean(x[n, :]^2) + eps) * (w + (unit_offset ? 1 : 0))
// x, y [N, H], w [H]. unit_offset is gemma's (1 + w).
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y);
// The residual add fused with the norm that follows it:  x += delta;  y = rmsnorm(x).
// delta has x's shape and dtype; the sum is rounded to x's dtype before the norm reads it,
// so the result is exactly add_inplace followed by rmsnorm_forward (one pass over x fewer
// on the GPU). y must not alias x or delta.
void add_rmsnorm_forward(Tensor& x, const Tensor& delta, const Tensor& w, float eps, bool unit_offset, Tensor& y);

// Rotary embedding, in place, Hugging Face half-split layout over the first R dimensions of
// each head (R = 2 * len(inv_freq): D, or fewer under a partial_rotary_factor, Phi-4-mini's
// 0.75); dimensions R..D-1 pass unchanged. For each head h of x and i < R/2, with
// a = positions[n] * inv_freq[i]:
//   x1' = x1 cos a - x2 sin a,  x2' = x2 cos a + x1 sin a   (x1 = x[h, i], x2 = x[h, i + R/2])
// x [N, heads * D], positions I32 [N], inv_freq F32 [R/2] with 1 <= R/2 <= D/2.
// `scale` multiplies cos a and sin a (transformers' attention_scaling: LongRoPE's attention
// factor, which sppft folds into the attention scale unless only part of each head rotates).
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale = 1.0f);

enum class GluActivation { SiLU, GeluTanh, GeluErf };
// out = act(gate) * up. gate, up, out [N, F].
// silu(g) = g / (1 + e^-g); gelu_tanh(g) = g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)));
// gelu_erf(g) = g/2 (1 + erf(g / sqrt 2)).
void glu_forward(const Tensor& gate, const Tensor& up, GluActivation act, Tensor& out);

// x += y, same shapes.
void add_inplace(Tensor& x, const Tensor& y);

// dst = src element for element: same dtype and element count (shapes may differ), any
// pair of devices. Host <-> device copies wait for completion; others are queued.
void copy(const Tensor& src, Tensor& dst);
// dst = src element for element, converting the dtype (F32 <-> BF16 rounds to nearest even,
// NaN stays NaN; same dtypes copy): same element count, same device, float dtypes.
void convert(const Tensor& src, Tensor& dst);
// t = 0.
void fill_zero(Tensor& t);
// Backend scratch (kernels/device_scratch.h) of at least `bytes` on `device`, allocated
// now, so the ops after it that need at most that much never reallocate. No-op on the CPU.
void reserve_scratch(Device device, std::size_t bytes);

// One sequence of a packed batch: its query rows [q_begin, q_begin + q_len) sit
// at positions past_len .. past_len + q_len - 1 of cache slot `slot`.
struct AttentionSeq {
  std::int64_t q_begin;
  std::int64_t q_len;
  std::int64_t slot;
  std::int64_t past_len;
};

// Writes the new keys/values of each sequence into its cache slot at positions
// past_len .. past_len + q_len - 1.
// k, v [N, Hkv * D]; k_cache, v_cache [S, Hkv, Tmax, D].
void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache);

// Causal attention with grouped-query heads (query head h reads KV head
// h / (Hq / Hkv)) over the cache: for a query at position p, keys j with
// j <= p and (window == 0 or p - j < window):
//   out[n, h] = sum_j softmax_j(cap(scale * q[n, h] . k[j, h'])) v[j, h']
// q, out [N, Hq * D]; caches [S, Hkv, Tmax, D]. cap is Gemma-2's logit soft-capping,
// cap(s) = softcap * tanh(s / softcap), or the identity when softcap == 0.
void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out,
                       float softcap = 0.0f);

// Gemma-2's soft-capping of attention scores and final logits: softcap * tanh(x / softcap),
// the identity for softcap == 0. Its derivative is 1 - (capped / softcap)^2.
inline float soft_cap(float x, float softcap) { return softcap > 0 ? softcap * std::tanh(x / softcap) : x; }
// d soft_cap / dx at the capped value c = soft_cap(x, softcap): 1 - (c / softcap)^2 (1 uncapped).
inline float soft_cap_slope(float c, float softcap) { return softcap > 0 ? 1.0f - (c / softcap) * (c / softcap) : 1.0f; }

}  // namespace sppft::ops

// ---------------------------------------------------------------------------
// Backward and training.
// Gradients are fp32 tensors shaped like what they are the gradient of. "Overwritten"
// outputs need no initialisation; "accumulated" ones add into what is there (the
// trainer zeroes parameter gradients before each step). Unless a comment says an
// aliasing is allowed, outputs must not share storage with inputs. Shape or dtype
// mismatches throw InputError naming the op and tensor (checked in kernels/ops.cpp).
// ---------------------------------------------------------------------------
namespace sppft::ops {

// Gradient of linear_forward with respect to its input:
//   dx[n, k] (+)= sum_m dy[n, m] * w[m, k]        (dx = dy . w)
// dy [N, M], w [M, K], dx [N, K]. accumulate = true adds into dx instead of
// overwriting it (for a tensor read by several linears, e.g. q/k/v projections).
void linear_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate);

// Gradient of linear_forward with respect to its weight and bias:
//   dw[m, k] += sum_n dy[n, m] * x[n, k]          (dw += dy^T . x)
//   dbias[m] += sum_n dy[n, m]
// dy [N, M], x [N, K], dw [M, K], dbias [M] or null. Always accumulates.
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor* dbias);

// Gradient of embedding_forward:  dtable[ids[n], :] += scale * dout[n, :]
// ids I32 [N], dout [N, H], dtable [V, H]. Repeated ids add up (deterministically:
// rows in order n = 0 .. N-1). Ids outside [0, V) throw InputError before any write.
void embedding_backward(const Tensor& ids, const Tensor& dout, float scale, Tensor& dtable);

// Gradient of rmsnorm_forward (same x, w, eps, unit_offset). With w' = w + offset,
// r = 1 / sqrt(mean(x[n, :]^2) + eps):
//   dx[n, j] = r w'_j dy[n, j] - x[n, j] r^3 / H * sum_k dy[n, k] w'_k x[n, k]   (overwritten)
//   dw[j]   += sum_n dy[n, j] x[n, j] r_n                   (accumulated; null = frozen weight)
// x, dy, dx [N, H], w, dw [H]. dx may alias dy (in place on the incoming gradient);
// it must not alias x. accumulate_dx: dx += the value instead (the residual stream's
// gradient gets the norm's share in the same pass; dx must then not alias dy either).
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, bool unit_offset, Tensor& dx,
                      Tensor* dw, bool accumulate_dx = false);

// Gradient of rope_forward, in place on the gradient: the inverse rotation
//   dx1' = dx1 cos a + dx2 sin a,  dx2' = dx2 cos a - dx1 sin a   (same a, halves, layout, R).
// dx [N, heads * D], positions I32 [N], inv_freq F32 [R/2]; cos a and sin a times `scale` as forward.
void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim,
                   float scale = 1.0f);

// Gradient of glu_forward (out = act(gate) * up):
//   dgate = dout * up * act'(gate),  dup = dout * act(gate)        (both overwritten)
// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g);
// gelu_tanh'(g) = (1 + t)/2 + g/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 g^2), t = tanh(...) as forward;
// gelu_erf'(g) = (1 + erf(g / sqrt 2))/2 + g exp(-g^2/2) / sqrt(2 pi).
// gate, up, dout, dgate, dup [N, F]. Elementwise, so dgate may alias gate or dout and
// dup may alias up or dout (exactly, same storage and offset); dgate and dup must be
// distinct buffers.
void glu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, GluActivation act, Tensor& dgate,
                  Tensor& dup);

// Attention for training, without a cache, over packed sequences: each seq gives
// its rows [q_begin, q_begin + q_len) of q, k and v (past_len must be 0; slot is
// ignored). Row t of a sequence attends to rows j of the same sequence with j <= t
// and (window == 0 or t - j < window), GQA as attention_forward (query head h reads
// kv head h / (Hq / Hkv)), scores soft-capped as there:
//   s_j = cap(scale * q[t, h] . k[j, h']),  out[t, h] = sum_j softmax_j(s) v[j, h'],
//   lse[t, h] = log sum_j exp(s_j)        (natural log of the scaled, capped scores)
// q, out [N, Hq * D]; k, v [N, Hkv * D]; lse [N, Hq]. Rows not covered by
// any sequence: out and lse left untouched. Equals attention_forward on a cache filled by
// kv_cache_write with past_len = 0.
void attention_forward_train(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const AttentionSeq> seqs,
                             float scale, std::int64_t window, Tensor& out, Tensor& lse, float softcap = 0.0f);

// Gradient of attention_forward_train (same q, k, v, seqs, scale, window, softcap and its
// out, lse). With P[t, j] = exp(s_j - lse[t]) recomputed from q, k and lse (no
// [T, T] matrix is kept), delta[t] = dout[t] . out[t], c_j = 1 - (s_j / softcap)^2
// (1 without soft-capping):
//   dv[j] = sum_t P[t, j] dout[t],  dS[t, j] = c_j P[t, j] (dout[t] . v[j] - delta[t]),
//   dq[t] = scale sum_j dS[t, j] k[j],  dk[j] = scale sum_t dS[t, j] q[t]
// (dk, dv summed over the query heads of each kv group). dq, dk, dv overwritten
// (rows covered by seqs), shapes as q, k, v. Outputs must not alias inputs.
// Deterministic: no atomics, each output row is summed by one thread in a fixed order.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, std::span<const AttentionSeq> seqs, float scale, std::int64_t window,
                        Tensor& dq, Tensor& dk, Tensor& dv, float softcap = 0.0f);

// Cross-entropy over the vocabulary. logits [N, V], targets I32 [N]; a target of
// -100 (kIgnoreIndex, as torch) marks an ignored row. Returns
//   sum over non-ignored n of  -log softmax(logits[n, :])[targets[n]]   (double)
// If dlogits [N, V] is non-null it is overwritten with
//   grad_scale * (softmax(logits[n, :]) - onehot(targets[n]))  for non-ignored rows, 0 for ignored ones
// (grad_scale is typically 1 / number of non-ignored targets, for a mean loss).
// dlogits may alias logits (in place, to save the [N, V] buffer). Targets outside
// [0, V) other than -100 throw InputError before anything is written.
// With softcap > 0 (Gemma-2's final_logit_softcapping) the loss is that of the capped
// logits z' = soft_cap(z, softcap), and dlogits its gradient with respect to the raw ones:
//   grad_scale * (softmax(z')[n, :] - onehot) * (1 - (z' / softcap)^2).
inline constexpr std::int32_t kIgnoreIndex = -100;
double cross_entropy(const Tensor& logits, const Tensor& targets, float grad_scale, Tensor* dlogits,
                     float softcap = 0.0f);

// sum_i t[i]^2 in double (for the global gradient norm). Deterministic: fixed-size
// chunks summed in a fixed order, whatever the thread count.
double sum_squares(const Tensor& t);

// t[i] *= s.
void scale_inplace(Tensor& t, float s);

// AdamW hyperparameters (torch.optim.AdamW's defaults).
struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// One AdamW step on one tensor (decoupled weight decay, bias correction); step
// counts from 1. torch.optim.AdamW's single-tensor update (torch 2.x, amsgrad =
// maximize = False) operation by operation, scalars in double, tensor math in fp32
// (agrees with torch to within ~2 ulps, not bit for bit: torch's vectorized sqrt):
//   p  = p * (1 - lr * weight_decay)
//   m  = lerp(m, g, 1 - beta1)              (= beta1 m + (1 - beta1) g, as one fma like torch's)
//   v  = v * beta2 + (1 - beta2) g^2
//   p -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// which is  p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p_old)  with
// mhat = m / (1 - beta1^step), vhat = v / (1 - beta2^step).
// param, grad, m, v: same shape; m and v start at zero.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& hp, std::int64_t step);

}  // namespace sppft::ops
