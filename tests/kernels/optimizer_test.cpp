// adamw_step against a hand-computed sequence and against torch.optim.AdamW;
// sum_squares and scale_inplace (the gradient-clipping helpers).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/ops.h"

using namespace sppft;

namespace {

Tensor from(const std::vector<float>& v) {
  Tensor t = Tensor::empty({static_cast<std::int64_t>(v.size())}, DType::F32, MemCategory::Workspace);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

// |got - want| <= tol * max(|want|, floor), element by element.
void check_values(const Tensor& got, const std::vector<float>& want, double tol, double floor, const char* what) {
  INFO(std::string(what));
  REQUIRE(got.numel() == static_cast<std::int64_t>(want.size()));
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(double(got.data<float>()[i]) - want[i]) <= tol * std::max(std::abs(double(want[i])), floor));
  }
}

}  // namespace

TEST_CASE("adamw_step: three steps computed by hand") {
  // p0 = 1, grads 0.5, -0.25, 1.0; lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.1.
  // Step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025, mhat = 0.05 / 0.1 = 0.5,
  //         vhat = 0.00025 / 0.001 = 0.25, p = 1 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.1 * 1) = 0.890000002.
  // Step 2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225,
  //         mhat = 0.02 / 0.19, vhat = 0.00031225 / 0.001999, p = 0.854466299.
  // Step 3: m = 0.018 + 0.1 = 0.118, v = 0.000311938 + 0.001 = 0.001311938, p = 0.780110477.
  // (The p values to 9 digits were evaluated in double from these formulas.)
  ops::AdamWParams hp{0.1, 0.9, 0.999, 1e-8, 0.1};
  Tensor p = from({1.0f}), m = from({0.0f}), v = from({0.0f});
  const float grads[3] = {0.5f, -0.25f, 1.0f};
  const double want_p[3] = {0.890000002, 0.8544662986878464, 0.7801104766702114};
  const double want_m[3] = {0.05, 0.02, 0.118};
  const double want_v[3] = {0.00025, 0.00031225, 0.00131193775};
  for (int step = 1; step <= 3; ++step) {
    CAPTURE(step);
    Tensor g = from({grads[step - 1]});
    ops::adamw_step(p, g, m, v, hp, step);
    CHECK(p.data<float>()[0] == doctest::Approx(want_p[step - 1]).epsilon(1e-6));
    CHECK(m.data<float>()[0] == doctest::Approx(want_m[step - 1]).epsilon(1e-6));
    CHECK(v.data<float>()[0] == doctest::Approx(want_v[step - 1]).epsilon(1e-6));
  }
}

TEST_CASE("adamw_step matches torch.optim.AdamW") {
  // Reference values produced once with torch 2.15 (CPU, fp32, default single-tensor
  // path) by:
  //   p = torch.nn.Parameter(torch.tensor(p0)); opt = torch.optim.AdamW([p], **hp)
  //   for g in grads: p.grad = torch.tensor(g); opt.step()
  // printing p, state['exp_avg'], state['exp_avg_sq'] after each step with 10
  // significant digits. The kernel follows torch's operation order (including the
  // fused multiply-add of torch's vectorized lerp, which matters when g ~ -m), but
  // torch's own vectorized sqrt (AVX-512 on the machine used) is not always correctly
  // rounded, so the values agree to within 2 ulps rather than bit for bit.
  // Tolerance: 3 float epsilons relative (3.6e-7).
  const std::vector<float> p0 = {0.5f, -1.25f, 2.0f, 0.0f, -0.003f, 7.5f, 1e-4f};
  const std::vector<std::vector<float>> grads = {{0.1f, -0.2f, 0.0f, 1.5f, -3.0f, 0.25f, 1e-3f},
                                                 {-0.4f, 0.05f, 0.7f, -1.5f, 2.0f, 0.25f, 0.0f},
                                                 {0.3f, 0.3f, -0.9f, 0.01f, -0.5f, -2.0f, 5e-3f}};
  struct Step {
    std::vector<float> p, m, v;
  };
  struct Case {
    const char* name;
    ops::AdamWParams hp;
    std::vector<Step> steps;
  };
  const std::vector<Case> cases = {
      {"lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1",
       {1e-2, 0.9, 0.999, 1e-8, 0.1},
       {{{4.895000160e-01f, -1.238749981e+00f, 1.998000026e+00f, -9.999999776e-03f, 7.003000006e-03f, 7.482500076e+00f, -9.899999015e-03f},
         {1.000000071e-02f, -2.000000142e-02f, 0.000000000e+00f, 1.500000060e-01f, -3.000000119e-01f, 2.500000037e-02f, 1.000000047e-04f},
         {1.000000066e-05f, 4.000000263e-05f, 0.000000000e+00f, 2.249999903e-03f, 8.999999613e-03f, 6.250000297e-05f, 1.000000194e-09f}},
        {{4.946055412e-01f, -1.232816577e+00f, 1.988560677e+00f, -9.463684633e-03f, 8.441202343e-03f, 7.465017319e+00f, -1.659058593e-02f},
         {-3.099999949e-02f, -1.300000120e-02f, 7.000000030e-02f, -1.499999408e-02f, -7.000001520e-02f, 4.749999940e-02f, 9.000000136e-05f},
         {1.699900167e-04f, 4.246000390e-05f, 4.900000058e-04f, 4.497749731e-03f, 1.299099997e-02f, 1.249375055e-04f, 9.990002159e-10f}},
        {{4.938477576e-01f, -1.234796405e+00f, 1.988085151e+00f, -9.077519178e-03f, 1.041750889e-02f, 7.462498665e+00f, -2.385311387e-02f},
         {2.100001089e-03f, 1.830000244e-02f, -2.699999884e-02f, -1.249999460e-02f, -1.130000129e-01f, -1.572499871e-01f, 5.810000002e-04f},
         {2.598200517e-04f, 1.324175537e-04f, 1.299510011e-03f, 4.493352026e-03f, 1.322800852e-02f, 4.124812782e-03f, 2.599800197e-08f}}}},
      // beta1 < 0.5 takes the other branch of torch's lerp.
      {"lr 3e-2, betas (0.3, 0.95), eps 1e-6, weight_decay 0.5",
       {3e-2, 0.3, 0.95, 1e-6, 0.5},
       {{{4.625003040e-01f, -1.201250196e+00f, 1.970000029e+00f, -2.999997698e-02f, 2.704498544e-02f, 7.357500553e+00f, -2.987153083e-02f},
         {7.000000030e-02f, -1.400000006e-01f, 0.000000000e+00f, 1.049999952e+00f, -2.099999905e+00f, 1.749999970e-01f, 7.000000332e-04f},
         {5.000000237e-04f, 2.000000095e-03f, 0.000000000e+00f, 1.125000045e-01f, 4.500000179e-01f, 3.125000047e-03f, 5.000000414e-08f}},
        {{4.845235944e-01f, -1.181630254e+00f, 1.908224940e+00f, -1.339614391e-02f, 1.663318649e-02f, 7.217138290e+00f, -3.932796791e-02f},
         {-2.590000033e-01f, -7.000000682e-03f, 4.899999797e-01f, -7.349999547e-01f, 7.699999809e-01f, 2.274999917e-01f, 2.100000129e-04f},
         {8.475000970e-03f, 2.025000053e-03f, 2.449999936e-02f, 2.193750143e-01f, 6.274999976e-01f, 6.093749776e-03f, 4.750000215e-08f}},
        {{4.635051787e-01f, -1.194109797e+00f, 1.901871920e+00f, -7.749633398e-03f, 1.815983281e-02f, 7.143064976e+00f, -7.518172264e-02f},
         {1.323000044e-01f, 2.079000026e-01f, -4.829999506e-01f, -2.134999931e-01f, -1.189999878e-01f, -1.331750035e+00f, 3.562999889e-03f},
         {1.255125180e-02f, 6.423750427e-03f, 6.377499551e-02f, 2.084112614e-01f, 6.086249948e-01f, 2.057890594e-01f, 1.295125003e-06f}}}},
  };
  const double kTol = 3 * 1.1920929e-7;
  for (const auto& c : cases) {
    INFO(std::string(c.name));
    Tensor p = from(p0), m = from(std::vector<float>(p0.size(), 0.0f)), v = from(std::vector<float>(p0.size(), 0.0f));
    for (int step = 1; step <= 3; ++step) {
      CAPTURE(step);
      Tensor g = from(grads[step - 1]);
      ops::adamw_step(p, g, m, v, c.hp, step);
      check_values(p, c.steps[step - 1].p, kTol, 1e-3, "param");
      check_values(m, c.steps[step - 1].m, kTol, 1e-12, "exp_avg");
      check_values(v, c.steps[step - 1].v, kTol, 1e-20, "exp_avg_sq");
    }
  }
}

TEST_CASE("adamw_step on a large tensor (parallel path) equals the element-wise formula; refuses step 0") {
  const std::int64_t n = 100003;
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  std::vector<float> p0(n), g(n);
  for (std::int64_t i = 0; i < n; ++i) p0[i] = d(rng), g[i] = d(rng);
  ops::AdamWParams hp{1e-3, 0.9, 0.95, 1e-8, 0.01};
  Tensor p = from(p0), gt = from(g), m = from(std::vector<float>(n, 0.0f)), v = from(std::vector<float>(n, 0.0f));
  ops::adamw_step(p, gt, m, v, hp, 1);
  for (std::int64_t i = 0; i < n; i += 997) {
    // Step 1: mhat = g, vhat = g^2, so p = p0 - lr (g / (|g| + eps) + wd p0).
    const double want = p0[i] - 1e-3 * (g[i] / (std::abs(double(g[i])) + 1e-8) + 0.01 * p0[i]);
    CHECK(p.data<float>()[i] == doctest::Approx(want).epsilon(1e-6));
  }
  CHECK_THROWS_AS(ops::adamw_step(p, gt, m, v, hp, 0), InputError);
  Tensor short_grad = from({1.0f});
  CHECK_THROWS_AS(ops::adamw_step(p, short_grad, m, v, hp, 2), InputError);
}

TEST_CASE("sum_squares and scale_inplace") {
  for (std::int64_t n : {0, 1, 7, 100003}) {
    CAPTURE(n);
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0.0f, 3.0f);
    std::vector<float> x(n);
    for (auto& e : x) e = d(rng);
    Tensor t = from(x);
    double want = 0;
    for (float e : x) want += double(e) * e;
    CHECK(ops::sum_squares(t) == doctest::Approx(want).epsilon(1e-12));
    ops::scale_inplace(t, 0.5f);
    for (std::int64_t i = 0; i < n; ++i) REQUIRE(t.data<float>()[i] == x[i] * 0.5f);
  }
  // A 2-d tensor is summed over all its elements.
  Tensor t = Tensor::empty({2, 3}, DType::F32, MemCategory::Workspace);
  for (int i = 0; i < 6; ++i) t.data<float>()[i] = static_cast<float>(i);
  CHECK(ops::sum_squares(t) == 55.0);
}
