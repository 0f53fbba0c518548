// The pooled NA variants (na-official, na-paper) fused for the CPU; pipeline/fused.py builds this
// file and wraps the two ops in a PyLayer. Per sample, x is (C, N) (channels x positions):
//   score  na-paper (l1):  s_i = -sum_c |x_ci - centre_c|, centre_c = mean_i x_ci
//          na-official:    s_i = -|m_i - mean(m)|, m_i = mean_c x_ci
//   w = softmax(s); g_c = sum_i w_i x_ci; g_hat = (g - mean g) / (unbiased std g + eps)
//   gate_c = sigmoid(gamma * g_hat_c + beta); y_ci = x_ci * gate_c
// Composed of Paddle ops this takes about a dozen passes over x forward and backward, many through
// reduce and broadcast kernels several times slower than a copy, plus some 60 small-op dispatches
// per module; here the forward and the backward each read x three times (four for na-paper).
//
// Single-threaded: Paddle's OpenMP threads keep spinning on the other cores for a while after each
// convolution, and a second thread of ours measured slower beside them. `omp simd` only
// vectorises (-fopenmp-simd, no OpenMP runtime).
#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace {

constexpr float kEpsilon = 1e-5f;  // as in models.PooledNA

inline float Sign(float v) { return static_cast<float>(v > 0.f) - static_cast<float>(v < 0.f); }

// na-paper's scores spread widely, so most softmax weights, and the gradients through them, are
// denormal floats, on which x86 arithmetic is up to 100x slower. Flush them to zero while a kernel
// runs; values that small change no result beyond rounding.
class FlushDenormals {
#if defined(__SSE__)
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#endif
};

void CheckInput(const paddle::Tensor& x) {
  PD_CHECK(x.shape().size() == 3 && x.dtype() == paddle::DataType::FLOAT32 && x.is_cpu(),
           "the fused NA expects a float32 (B, C, N) CPU tensor");
}

}  // namespace

// Outputs: y (B, C, N) and what the backward needs: w (B, N), gate and g_hat (B, C), sd (B, 1),
// and aux: the centre (B, C) for l1, sign(m - mean m) (B, N) otherwise.
std::vector<paddle::Tensor> PooledForward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                          const paddle::Tensor& beta, bool l1) {
  CheckInput(x);
  const int64_t B = x.shape()[0], C = x.shape()[1], N = x.shape()[2];
  PD_CHECK(C > 1, "the fused NA normalises over channels and needs at least 2");
  auto y = paddle::empty({B, C, N}, x.dtype(), x.place());
  auto weights = paddle::empty({B, N}, x.dtype(), x.place());
  auto gate = paddle::empty({B, C}, x.dtype(), x.place());
  auto g_hat = paddle::empty({B, C}, x.dtype(), x.place());
  auto sd = paddle::empty({B, 1}, x.dtype(), x.place());
  auto aux = paddle::empty({B, l1 ? C : N}, x.dtype(), x.place());
  const float k_gamma = gamma.data<float>()[0], k_beta = beta.data<float>()[0];
  // data<T>() does checks on every call: fetch each pointer once
  const float* px = x.data<float>();
  float *py = y.data<float>(), *pw = weights.data<float>(), *pgate = gate.data<float>();
  float *pg_hat = g_hat.data<float>(), *psd = sd.data<float>(), *paux = aux.data<float>();
  FlushDenormals flush;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> g(C);
    const float* xb = px + b * C * N;
    float* w = pw + b * N;
    float* a = paux + b * (l1 ? C : N);
    std::fill(w, w + N, 0.f);  // w holds the scores first
    if (l1) {
      for (int64_t c = 0; c < C; ++c) {
        const float* row = xb + c * N;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < N; ++i) sum += row[i];
        const float centre = a[c] = static_cast<float>(sum / N);
#pragma omp simd
        for (int64_t i = 0; i < N; ++i) w[i] -= std::fabs(row[i] - centre);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const float* row = xb + c * N;
#pragma omp simd
        for (int64_t i = 0; i < N; ++i) w[i] += row[i];
      }
      double sum = 0.0;
      for (int64_t i = 0; i < N; ++i) sum += (w[i] /= C);
      const float mean = static_cast<float>(sum / N);
      for (int64_t i = 0; i < N; ++i) {
        a[i] = Sign(w[i] - mean);
        w[i] = -std::fabs(w[i] - mean);
      }
    }
    const float top = *std::max_element(w, w + N);  // softmax over positions
    double total = 0.0;
    for (int64_t i = 0; i < N; ++i) total += (w[i] = std::exp(w[i] - top));
    for (int64_t i = 0; i < N; ++i) w[i] = static_cast<float>(w[i] / total);
    double g_sum = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const float* row = xb + c * N;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < N; ++i) dot += w[i] * row[i];
      g_sum += (g[c] = dot);
    }
    const double g_mean = g_sum / C;
    double squares = 0.0;
    for (int64_t c = 0; c < C; ++c) squares += (g[c] - g_mean) * (g[c] - g_mean);
    const float std_dev = psd[b] = static_cast<float>(std::sqrt(squares / (C - 1)));
    float* yb = py + b * C * N;
    for (int64_t c = 0; c < C; ++c) {
      const float h = pg_hat[b * C + c] = static_cast<float>((g[c] - g_mean) / (std_dev + kEpsilon));
      const float k = pgate[b * C + c] = 1.f / (1.f + std::exp(-(k_gamma * h + k_beta)));
      const float* row = xb + c * N;
#pragma omp simd
      for (int64_t i = 0; i < N; ++i) yb[c * N + i] = row[i] * k;
    }
  }
  return {y, weights, gate, g_hat, sd, aux};
}

// Outputs: grad_x (B, C, N) and per-sample (d gamma, d beta) (B, 2), which the caller sums.
std::vector<paddle::Tensor> PooledBackward(const paddle::Tensor& x, const paddle::Tensor& grad_y,
                                           const paddle::Tensor& weights, const paddle::Tensor& gate,
                                           const paddle::Tensor& g_hat, const paddle::Tensor& sd,
                                           const paddle::Tensor& aux, const paddle::Tensor& gamma, bool l1) {
  CheckInput(x);
  CheckInput(grad_y);
  const int64_t B = x.shape()[0], C = x.shape()[1], N = x.shape()[2];
  auto grad_x = paddle::empty({B, C, N}, x.dtype(), x.place());
  auto grad_params = paddle::empty({B, 2}, x.dtype(), x.place());
  const float k_gamma = gamma.data<float>()[0];
  const float *px = x.data<float>(), *pgy = grad_y.data<float>(), *pw = weights.data<float>();
  const float *pgate = gate.data<float>(), *pg_hat = g_hat.data<float>(), *psd = sd.data<float>();
  const float* paux = aux.data<float>();
  float *pgx = grad_x.data<float>(), *pparams = grad_params.data<float>();
  FlushDenormals flush;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> dg(C), grad_w(N, 0.f), r(N);
    const float* xb = px + b * C * N;
    const float* gy = pgy + b * C * N;
    const float* w = pw + b * N;
    const float* k = pgate + b * C;
    const float* h = pg_hat + b * C;
    const float* a = paux + b * (l1 ? C : N);
    // through y = x * gate and the sigmoid: dz_c = sum_i grad_y x * gate (1 - gate)
    double d_gamma = 0.0, d_beta = 0.0, dh_sum = 0.0, dh_h = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < N; ++i) dot += gy[c * N + i] * xb[c * N + i];
      const float dz = dot * k[c] * (1.f - k[c]);
      d_gamma += dz * h[c];
      d_beta += dz;
      dg[c] = k_gamma * dz;  // d g_hat for now
      dh_sum += dg[c];
      dh_h += dg[c] * h[c];
    }
    pparams[2 * b] = static_cast<float>(d_gamma);
    pparams[2 * b + 1] = static_cast<float>(d_beta);
    // through g_hat = (g - mean) / s, s = sd + eps, sd the unbiased std: with u = g - mean = g_hat s,
    // d g_c = (dh_c - mean dh) / s - (sum_k dh_k u_k) u_c / (s^2 (C - 1) sd)
    // = (dh_c - mean dh) / s - (sum_k dh_k g_hat_k) g_hat_c / ((C - 1) sd)
    const float std_dev = psd[b], s = std_dev + kEpsilon;
    const double dh_mean = dh_sum / C, coupling = dh_h / ((C - 1) * std_dev);
    for (int64_t c = 0; c < C; ++c) dg[c] = static_cast<float>((dg[c] - dh_mean) / s - coupling * h[c]);
    // through g_c = sum_i w_i x_ci into w, then the softmax into the scores
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t i = 0; i < N; ++i) grad_w[i] += dg[c] * xb[c * N + i];
    }
    double w_dot = 0.0;
    for (int64_t i = 0; i < N; ++i) w_dot += w[i] * grad_w[i];
    for (int64_t i = 0; i < N; ++i) r[i] = w[i] * (grad_w[i] - static_cast<float>(w_dot));  // d score
    if (!l1) {  // score = -|m - mean m|, m the mean over channels: r becomes d m / C
      double t_sum = 0.0;
      for (int64_t i = 0; i < N; ++i) t_sum += (r[i] *= a[i]);
      const float t_mean = static_cast<float>(t_sum / N);
      for (int64_t i = 0; i < N; ++i) r[i] = (t_mean - r[i]) / C;
    }
    float* out = pgx + b * C * N;
    for (int64_t c = 0; c < C; ++c) {
      const float* row = xb + c * N;
      const float* gyc = gy + c * N;
      float* o = out + c * N;
      const float kc = k[c], q = dg[c];
      if (l1) {  // score term -s_i r_i + mean_j s_j r_j, s_i = sign(x_ci - centre_c)
        const float centre = a[c];
        float shift = 0.f;
#pragma omp simd reduction(+ : shift)
        for (int64_t i = 0; i < N; ++i) shift += Sign(row[i] - centre) * r[i];
        shift /= N;
#pragma omp simd
        for (int64_t i = 0; i < N; ++i) o[i] = gyc[i] * kc + q * w[i] + shift - Sign(row[i] - centre) * r[i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < N; ++i) o[i] = gyc[i] * kc + q * w[i] + r[i];
      }
    }
  }
  return {grad_x, grad_params};
}

PD_BUILD_OP(na_pooled_forward)
    .Inputs({"X", "Gamma", "Beta"})
    .Outputs({"Y", "Weights", "Gate", "GHat", "SD", "Aux"})
    .Attrs({"l1: bool"})
    .SetKernelFn(PD_KERNEL(PooledForward));

PD_BUILD_OP(na_pooled_backward)
    .Inputs({"X", "GradY", "Weights", "Gate", "GHat", "SD", "Aux", "Gamma"})
    .Outputs({"GradX", "GradParams"})
    .Attrs({"l1: bool"})
    .SetKernelFn(PD_KERNEL(PooledBackward));
