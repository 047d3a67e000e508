// The fp32 CPU reference of every op in kernels/ops.h (same names, same math).
#pragma once

#include "kernels/ops.h"

namespace sppft::cpu {
void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void embedding_forward(const Tensor& ids, const Tensor& table, float scale, Tensor& out);
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y);
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale);
void glu_forward(const Tensor& gate, const Tensor& up, ops::GluActivation act, Tensor& out);
void add_inplace(Tensor& x, const Tensor& y);
void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache);
void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out,
                       float softcap = 0.0f);
}  // namespace sppft::cpu

// Backward and training (kernels/cpu/*_backward.cpp, attention_train.cpp,
// cross_entropy.cpp, adamw.cpp).
namespace sppft::cpu {
void linear_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate);
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor* dbias);
void embedding_backward(const Tensor& ids, const Tensor& dout, float scale, Tensor& dtable);
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, bool unit_offset, Tensor& dx,
                      Tensor* dw, bool accumulate_dx = false);
void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale);
void glu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, ops::GluActivation act, Tensor& dgate,
                  Tensor& dup);
void attention_forward_train(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs,
                             float scale, std::int64_t window, Tensor& out, Tensor& lse, float softcap = 0.0f);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window,
                        Tensor& dq, Tensor& dk, Tensor& dv, float softcap = 0.0f);
double cross_entropy(const Tensor& logits, const Tensor& targets, float grad_scale, Tensor* dlogits,
                     float softcap = 0.0f);
double sum_squares(const Tensor& t);
void scale_inplace(Tensor& t, float s);
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWParams& hp,
                std::int64_t step);
}  // namespace sppft::cpu
