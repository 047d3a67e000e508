// Device dispatch for kernels/ops.h: tensors on the CPU go to kernels/cpu,
// tensors on a GPU to kernels/cuda.
#include "kernels/ops.h"

#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_ops.h"
#ifdef SPPFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace sppft::ops {

namespace {
thread_local OpObserver* t_observer = nullptr;
thread_local bool t_in_op = false;  // inside an observed op: nested ops are part of it
}  // namespace

void set_op_observer(OpObserver* observer) { t_observer = observer; }

OpScope::OpScope(const char* op) : op_(op), observer_(t_observer && !t_in_op ? t_observer : nullptr) {
  if (!observer_) return;
  t_in_op = true;
  observer_->begin(op_);
}
OpScope::~OpScope() {
  if (!observer_) return;
  observer_->end(op_);
  t_in_op = false;
}

namespace {
void expect(bool cond, const char* op, const std::string& what) {
  if (!cond) throw InputError(std::string(op) + ": " + what);
}
bool on_cpu(const Tensor& t, const char* op) {
  if (t.device() == Device::CPU) return true;
  throw RuntimeFailure(std::string(op) + ": no CUDA kernel in this build yet (tensors on cuda)");
}
// rope_forward / rope_backward: x [N, heads * D], positions [N], inv_freq [R/2], 1 <= R/2 <= D/2.
void expect_rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, const char* op,
                 const char* name) {
  expect(x.rank() == 2 && head_dim > 0 && head_dim % 2 == 0 && x.dim(1) % head_dim == 0, op,
         std::string(name) + " must be [N, heads * head_dim] with an even head_dim");
  expect(positions.dtype() == DType::I32 && positions.rank() == 1 && positions.dim(0) == x.dim(0), op,
         "positions must be a 1-d I32 tensor with one entry per row");
  expect(inv_freq.dtype() == DType::F32 && inv_freq.rank() == 1 && inv_freq.dim(0) >= 1 && inv_freq.dim(0) <= head_dim / 2,
         op, "inv_freq has shape " + shape_str(inv_freq.shape()) + ", expected F32 [R/2] with 1 <= R/2 <= head_dim / 2 = " +
                 std::to_string(head_dim / 2));
}
}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const OpScope scope("linear_forward");
#ifdef SPPFT_HAVE_CUDA
  if (x.device() == Device::CUDA) return cuda::linear_forward(x, w, bias, y);
#endif
  if (on_cpu(x, "linear_forward")) cpu::linear_forward(x, w, bias, y);
}
void embedding_forward(const Tensor& ids, const Tensor& table, float scale, Tensor& out) {
  const OpScope scope("embedding_forward");
#ifdef SPPFT_HAVE_CUDA
  if (table.device() == Device::CUDA) return cuda::embedding_forward(ids, table, scale, out);
#endif
  if (on_cpu(table, "embedding_forward")) cpu::embedding_forward(ids, table, scale, out);
}
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y) {
  const OpScope scope("rmsnorm_forward");
#ifdef SPPFT_HAVE_CUDA
  if (x.device() == Device::CUDA) return cuda::rmsnorm_forward(x, w, eps, unit_offset, y);
#endif
  if (on_cpu(x, "rmsnorm_forward")) cpu::rmsnorm_forward(x, w, eps, unit_offset, y);
}
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale) {
  const OpScope scope("rope_forward");
  expect_rope(x, positions, inv_freq, head_dim, "rope_forward", "x");
#ifdef SPPFT_HAVE_CUDA
  if (x.device() == Device::CUDA) return cuda::rope_forward(x, positions, inv_freq, head_dim, scale);
#endif
  if (on_cpu(x, "rope_forward")) cpu::rope_forward(x, positions, inv_freq, head_dim, scale);
}
void glu_forward(const Tensor& gate, const Tensor& up, GluActivation act, Tensor& out) {
  const OpScope scope("glu_forward");
#ifdef SPPFT_HAVE_CUDA
  if (gate.device() == Device::CUDA) return cuda::glu_forward(gate, up, act, out);
#endif
  if (on_cpu(gate, "glu_forward")) cpu::glu_forward(gate, up, act, out);
}
void add_inplace(Tensor& x, const Tensor& y) {
  const OpScope scope("add_inplace");
#ifdef SPPFT_HAVE_CUDA
  if (x.device() == Device::CUDA) return cuda::add_inplace(x, y);
#endif
  if (on_cpu(x, "add_inplace")) cpu::add_inplace(x, y);
}
void copy(const Tensor& src, Tensor& dst) {
  const OpScope scope("copy");
  if (src.dtype() != dst.dtype() || src.numel() != dst.numel())
    throw InputError("copy: " + std::string(dtype_name(src.dtype())) + " " + shape_str(src.shape()) + " into " +
                     std::string(dtype_name(dst.dtype())) + " " + shape_str(dst.shape()) + " (same dtype and size expected)");
#ifdef SPPFT_HAVE_CUDA
  if (src.device() == Device::CUDA && dst.device() == Device::CUDA) return cuda::copy_on_device(src, dst);
  if (src.device() == Device::CPU && dst.device() == Device::CUDA) return cuda::copy_to_device(src, dst);
  if (src.device() == Device::CUDA && dst.device() == Device::CPU) return cuda::copy_to_host(src, dst);
#endif
  if (on_cpu(src, "copy") && on_cpu(dst, "copy") && src.raw() != dst.raw()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
}
void convert(const Tensor& src, Tensor& dst) {
  const OpScope scope("convert");
  const auto is_float = [](DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; };
  if (!is_float(src.dtype()) || !is_float(dst.dtype()) || src.numel() != dst.numel() || src.device() != dst.device())
    throw InputError("convert: " + std::string(dtype_name(src.dtype())) + " " + shape_str(src.shape()) + " into " +
                     std::string(dtype_name(dst.dtype())) + " " + shape_str(dst.shape()) +
                     " (float dtypes, the same element count and device expected)");
  if (src.dtype() == dst.dtype()) return copy(src, dst);
#ifdef SPPFT_HAVE_CUDA
  if (src.device() == Device::CUDA) return cuda::convert(src, dst);
#endif
  if (on_cpu(src, "convert")) {
    if (src.dtype() == DType::F32) return convert_from_f32(src.data<float>(), dst.dtype(), dst.raw(), src.numel());
    std::vector<float> f32(static_cast<std::size_t>(src.numel()));
    convert_to_f32(src.raw(), src.dtype(), f32.data(), f32.size());
    convert_from_f32(f32.data(), dst.dtype(), dst.raw(), f32.size());
  }
}
void fill_zero(Tensor& t) {
  const OpScope scope("fill_zero");
#ifdef SPPFT_HAVE_CUDA
  if (t.device() == Device::CUDA) return cuda::fill_zero(t);
#endif
  if (on_cpu(t, "fill_zero")) std::memset(t.raw(), 0, t.nbytes());
}
void reserve_scratch(Device device, std::size_t bytes) {
#ifdef SPPFT_HAVE_CUDA
  if (device == Device::CUDA) cuda::reserve_scratch(bytes);
#endif
  (void)device, (void)bytes;
}
void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache) {
  const OpScope scope("kv_cache_write");
#ifdef SPPFT_HAVE_CUDA
  if (k.device() == Device::CUDA) return cuda::kv_cache_write(k, v, seqs, k_cache, v_cache);
#endif
  if (on_cpu(k, "kv_cache_write")) cpu::kv_cache_write(k, v, seqs, k_cache, v_cache);
}
void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out,
                       float softcap) {
  const OpScope scope("attention_forward");
  expect(softcap >= 0, "attention_forward", "softcap must be >= 0");
#ifdef SPPFT_HAVE_CUDA
  if (q.device() == Device::CUDA) return cuda::attention_forward(q, k_cache, v_cache, seqs, scale, window, out, softcap);
#endif
  if (on_cpu(q, "attention_forward")) cpu::attention_forward(q, k_cache, v_cache, seqs, scale, window, out, softcap);
}

}  // namespace sppft::ops

// ---- Backward and training --------------------------------------------------
// Shape checks here (cheap, device-independent) so that every backend gets them;
// a mismatch is a bug of the caller and throws InputError naming the op.
namespace sppft::ops {

namespace {
void expect_shape(const Tensor& t, const Shape& s, const char* op, const char* name) {
  expect(t.shape() == s, op, std::string(name) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(s));
}
void expect_f32(const Tensor& t, const char* op, const char* name) {
  expect(t.dtype() == DType::F32, op, std::string(name) + " must be F32");
}
void expect_i32(const Tensor& t, const char* op, const char* name) {
  expect(t.dtype() == DType::I32 && t.rank() == 1, op, std::string(name) + " must be a 1-d I32 tensor");
}
void expect_seqs(std::span<const AttentionSeq> seqs, std::int64_t n, const char* op) {
  for (const auto& s : seqs) {
    expect(s.past_len == 0, op, "training attention needs past_len == 0");
    expect(s.q_begin >= 0 && s.q_len >= 0 && s.q_begin + s.q_len <= n, op,
           "sequence rows [" + std::to_string(s.q_begin) + ", " + std::to_string(s.q_begin + s.q_len) +
               ") outside the " + std::to_string(n) + " rows");
  }
}
}  // namespace

void linear_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  const OpScope scope("linear_backward_input");
  const char* op = "linear_backward_input";
  expect(dy.rank() == 2 && w.rank() == 2, op, "dy and w must be 2-d");
  expect_shape(dx, {dy.dim(0), w.dim(1)}, op, "dx");
  expect(dy.dim(1) == w.dim(0), op, "dy columns must equal w rows");
#ifdef SPPFT_HAVE_CUDA
  if (dy.device() == Device::CUDA) return cuda::linear_backward_input(dy, w, dx, accumulate);
#endif
  if (on_cpu(dy, op)) cpu::linear_backward_input(dy, w, dx, accumulate);
}
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor* dbias) {
  const OpScope scope("linear_backward_weight");
  const char* op = "linear_backward_weight";
  expect(dy.rank() == 2 && x.rank() == 2 && dy.dim(0) == x.dim(0), op, "dy and x must be 2-d with equal rows");
  expect_shape(dw, {dy.dim(1), x.dim(1)}, op, "dw");
  if (dbias) expect_shape(*dbias, {dy.dim(1)}, op, "dbias");
#ifdef SPPFT_HAVE_CUDA
  if (dy.device() == Device::CUDA) return cuda::linear_backward_weight(dy, x, dw, dbias);
#endif
  if (on_cpu(dy, op)) cpu::linear_backward_weight(dy, x, dw, dbias);
}
void embedding_backward(const Tensor& ids, const Tensor& dout, float scale, Tensor& dtable) {
  const OpScope scope("embedding_backward");
  const char* op = "embedding_backward";
  expect_i32(ids, op, "ids");
  expect(dtable.rank() == 2, op, "dtable must be 2-d");
  expect_shape(dout, {ids.dim(0), dtable.dim(1)}, op, "dout");
#ifdef SPPFT_HAVE_CUDA
  if (dtable.device() == Device::CUDA) return cuda::embedding_backward(ids, dout, scale, dtable);
#endif
  if (on_cpu(dtable, op)) cpu::embedding_backward(ids, dout, scale, dtable);
}
void add_rmsnorm_forward(Tensor& x, const Tensor& delta, const Tensor& w, float eps, bool unit_offset, Tensor& y) {
  const OpScope scope("add_rmsnorm_forward");
  const char* op = "add_rmsnorm_forward";
  expect(x.rank() == 2, op, "x must be 2-d");
  expect_shape(delta, x.shape(), op, "delta");
  expect(delta.dtype() == x.dtype(), op, "delta must have x's dtype");
  expect(y.raw() != x.raw() && y.raw() != delta.raw(), op, "y must not alias x or delta");
#ifdef SPPFT_HAVE_CUDA
  if (x.device() == Device::CUDA) return cuda::add_rmsnorm_forward(x, delta, w, eps, unit_offset, y);
#endif
  if (on_cpu(x, op)) {  // the reference: literally the two ops
    cpu::add_inplace(x, delta);
    cpu::rmsnorm_forward(x, w, eps, unit_offset, y);
  }
}
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, bool unit_offset, Tensor& dx,
                      Tensor* dw, bool accumulate_dx) {
  const OpScope scope("rmsnorm_backward");
  const char* op = "rmsnorm_backward";
  expect(x.rank() == 2, op, "x must be 2-d");
  expect_shape(w, {x.dim(1)}, op, "w");
  expect_shape(dy, x.shape(), op, "dy");
  expect_shape(dx, x.shape(), op, "dx");
  if (dw) expect_shape(*dw, w.shape(), op, "dw");
  expect(dx.raw() != x.raw() || x.numel() == 0, op, "dx must not alias x");
  expect(!accumulate_dx || dx.raw() != dy.raw() || x.numel() == 0, op, "an accumulated dx must not alias dy");
#ifdef SPPFT_HAVE_CUDA
  if (x.device() == Device::CUDA) return cuda::rmsnorm_backward(x, w, dy, eps, unit_offset, dx, dw, accumulate_dx);
#endif
  if (on_cpu(x, op)) cpu::rmsnorm_backward(x, w, dy, eps, unit_offset, dx, dw, accumulate_dx);
}
void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale) {
  const OpScope scope("rope_backward");
  const char* op = "rope_backward";
  expect_rope(dx, positions, inv_freq, head_dim, op, "dx");
#ifdef SPPFT_HAVE_CUDA
  if (dx.device() == Device::CUDA) return cuda::rope_backward(dx, positions, inv_freq, head_dim, scale);
#endif
  if (on_cpu(dx, op)) cpu::rope_backward(dx, positions, inv_freq, head_dim, scale);
}
void glu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, GluActivation act, Tensor& dgate,
                  Tensor& dup) {
  const OpScope scope("glu_backward");
  const char* op = "glu_backward";
  expect_shape(up, gate.shape(), op, "up");
  expect_shape(dout, gate.shape(), op, "dout");
  expect_shape(dgate, gate.shape(), op, "dgate");
  expect_shape(dup, gate.shape(), op, "dup");
  expect(dgate.raw() != dup.raw() || gate.numel() == 0, op, "dgate and dup must be distinct buffers");
#ifdef SPPFT_HAVE_CUDA
  if (gate.device() == Device::CUDA) return cuda::glu_backward(gate, up, dout, act, dgate, dup);
#endif
  if (on_cpu(gate, op)) cpu::glu_backward(gate, up, dout, act, dgate, dup);
}

namespace {
// Shapes shared by attention_forward_train and attention_backward.
void check_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                     std::span<const AttentionSeq> seqs, const char* op) {
  expect(q.rank() == 2 && k.rank() == 2 && lse.rank() == 2, op, "q, k and lse must be 2-d");
  const auto n = q.dim(0), hq = lse.dim(1);
  expect(lse.dim(0) == n && hq > 0 && q.dim(1) % hq == 0, op, "lse must be [N, Hq] with Hq dividing q's width");
  const auto d = q.dim(1) / hq;
  expect(k.dim(0) == n && d > 0 && k.dim(1) % d == 0, op, "k must be [N, Hkv * D]");
  const auto hkv = k.dim(1) / d;
  expect(hkv > 0 && hq % hkv == 0, op, "Hq must be a multiple of Hkv");
  expect_shape(v, k.shape(), op, "v");
  expect_shape(out, q.shape(), op, "out");
  expect_seqs(seqs, n, op);
}
}  // namespace

void attention_forward_train(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const AttentionSeq> seqs,
                             float scale, std::int64_t window, Tensor& out, Tensor& lse, float softcap) {
  const OpScope scope("attention_forward_train");
  expect(softcap >= 0, "attention_forward_train", "softcap must be >= 0");
  check_attention(q, k, v, out, lse, seqs, "attention_forward_train");
#ifdef SPPFT_HAVE_CUDA
  if (q.device() == Device::CUDA) return cuda::attention_forward_train(q, k, v, seqs, scale, window, out, lse, softcap);
#endif
  if (on_cpu(q, "attention_forward_train")) cpu::attention_forward_train(q, k, v, seqs, scale, window, out, lse, softcap);
}
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, std::span<const AttentionSeq> seqs, float scale, std::int64_t window,
                        Tensor& dq, Tensor& dk, Tensor& dv, float softcap) {
  const OpScope scope("attention_backward");
  const char* op = "attention_backward";
  expect(softcap >= 0, op, "softcap must be >= 0");
  check_attention(q, k, v, out, lse, seqs, op);
  expect_shape(dout, q.shape(), op, "dout");
  expect_shape(dq, q.shape(), op, "dq");
  expect_shape(dk, k.shape(), op, "dk");
  expect_shape(dv, v.shape(), op, "dv");
#ifdef SPPFT_HAVE_CUDA
  if (q.device() == Device::CUDA) return cuda::attention_backward(q, k, v, out, lse, dout, seqs, scale, window, dq, dk, dv, softcap);
#endif
  if (on_cpu(q, op)) cpu::attention_backward(q, k, v, out, lse, dout, seqs, scale, window, dq, dk, dv, softcap);
}
double cross_entropy(const Tensor& logits, const Tensor& targets, float grad_scale, Tensor* dlogits, float softcap) {
  const OpScope scope("cross_entropy");
  const char* op = "cross_entropy";
  expect(softcap >= 0, op, "softcap must be >= 0");
  expect(logits.rank() == 2, op, "logits must be [N, V]");
  expect_i32(targets, op, "targets");
  expect(targets.dim(0) == logits.dim(0), op, "targets must have one entry per logits row");
  if (dlogits) expect_shape(*dlogits, logits.shape(), op, "dlogits");
#ifdef SPPFT_HAVE_CUDA
  if (logits.device() == Device::CUDA) return cuda::cross_entropy(logits, targets, grad_scale, dlogits, softcap);
#endif
  expect_f32(logits, op, "logits");  // the CPU reference is fp32 only
  if (on_cpu(logits, op)) return cpu::cross_entropy(logits, targets, grad_scale, dlogits, softcap);
  return 0;
}
double sum_squares(const Tensor& t) {
  const OpScope scope("sum_squares");
#ifdef SPPFT_HAVE_CUDA
  if (t.device() == Device::CUDA) return cuda::sum_squares(t);
#endif
  if (on_cpu(t, "sum_squares")) return cpu::sum_squares(t);
  return 0;
}
void scale_inplace(Tensor& t, float s) {
  const OpScope scope("scale_inplace");
#ifdef SPPFT_HAVE_CUDA
  if (t.device() == Device::CUDA) return cuda::scale_inplace(t, s);
#endif
  if (on_cpu(t, "scale_inplace")) cpu::scale_inplace(t, s);
}
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& hp, std::int64_t step) {
  const OpScope scope("adamw_step");
  const char* op = "adamw_step";
  expect_shape(grad, param.shape(), op, "grad");
  expect_shape(m, param.shape(), op, "m");
  expect_shape(v, param.shape(), op, "v");
  expect(step >= 1, op, "step counts from 1");
#ifdef SPPFT_HAVE_CUDA
  if (param.device() == Device::CUDA) return cuda::adamw_step(param, grad, m, v, hp, step);
#endif
  if (on_cpu(param, op)) cpu::adamw_step(param, grad, m, v, hp, step);
}

}  // namespace sppft::ops
